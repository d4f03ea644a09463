"""Approximate search over the embedded index's vectors with a FAISS HNSW graph (inner product).

The graph is derived data: the flat index's ``vectors.npy`` stays the source of truth, the graph is saved
beside it (``hnsw.faiss``, FAISS's own binary format, no pickle) and rebuilt whenever rows are removed
(HNSW cannot delete).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_M = 32
DEFAULT_EF_CONSTRUCTION = 80
DEFAULT_EF_SEARCH = 64


@dataclass
class HNSWParams:
    m: int = DEFAULT_M
    ef_construction: int = DEFAULT_EF_CONSTRUCTION
    ef_search: int = DEFAULT_EF_SEARCH

    def __post_init__(self) -> None:
        from omniret.errors import OmniretError

        for name in ("m", "ef_construction", "ef_search"):
            if int(getattr(self, name)) < 1:
                raise OmniretError(f"HNSW parameter {name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict) -> HNSWParams:
        from omniret.errors import OmniretError

        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise OmniretError(f"unknown HNSW parameter(s) {unknown}; use m, ef_construction, ef_search")
        return cls(**{k: int(v) for k, v in d.items()})


class HNSWGraph:
    """A ``faiss.IndexHNSWFlat`` (inner product) over rows ``0..n-1`` of the flat index."""

    def __init__(self, dim: int, params: HNSWParams) -> None:
        import faiss

        self.params = params
        self.faiss = faiss.IndexHNSWFlat(dim, params.m, faiss.METRIC_INNER_PRODUCT)
        self.faiss.hnsw.efConstruction = params.ef_construction

    def __len__(self) -> int:
        return int(self.faiss.ntotal)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``(N, D)``; their graph ids continue from ``len(self)``."""
        if len(vectors):
            self.faiss.add(np.ascontiguousarray(vectors, dtype=np.float32))

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k``: ``(scores, rows)`` each ``(Q, k)``; missing results have row ``-1``.

        ``allowed`` ``(N,)`` bool restricts the traversal's results to those rows (FAISS ID selector), so a
        filtered-out row is never returned.
        """
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = max(self.params.ef_search, k)
        # locals keep the bitmap and selector alive for the duration of the C++ call (params.sel does not own)
        bits = sel = None
        if allowed is not None:
            bits = np.packbits(allowed.astype(bool), bitorder="little")
            sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
            params.sel = sel
        q = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = self.faiss.search(q, k, params=params)
        del bits, sel
        return scores, rows

    def serialize(self) -> bytes:
        import faiss

        return faiss.serialize_index(self.faiss).tobytes()

    @classmethod
    def deserialize(cls, data: bytes, params: HNSWParams) -> HNSWGraph:
        import faiss

        g = cls.__new__(cls)
        g.params = params
        g.faiss = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        return g

"""Approximate search structures of the local index (faiss): HNSW and IVF-PQ, with fp32/fp16/int8 storage.

The local index's float32 vectors stay the source of truth; the structure here is derived data over rows
``0..n-1``, saved beside them (faiss's own binary format, no pickle) and rebuilt when rows are removed.

* ``hnsw`` — a graph over the vectors stored as ``storage``: fp32 (``IndexHNSWFlat``), fp16 or int8
  (``IndexHNSWSQ``, per-dimension scalar quantisation: ½ / ¼ of the fp32 bytes). Malkov & Yashunin,
  arXiv:1603.09320.
* ``ivfpq`` — an inverted file of ``nlist`` k-means cells with product-quantised codes (``pq_m`` bytes per
  vector; Jégou et al., "Product quantization for nearest neighbor search", TPAMI 2011), ``nprobe`` cells
  visited per query.

Quantised structures return a shortlist of ``rerank * k`` rows that the index rescores exactly against its
float32 vectors (faiss's ``IndexRefine`` idea, using the vectors the index already keeps), so scores are
exact inner products and recall is the shortlist's recall at ``rerank * k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from omniret.errors import OmniretError

STORAGES = ("fp32", "fp16", "int8")


@dataclass
class ANNParams:
    """Build and search parameters of every ANN kind (each kind reads the ones it uses)."""

    m: int = 32  # HNSW: neighbours per node
    ef_construction: int = 80  # HNSW: candidate list while building
    ef_search: int = 64  # HNSW: candidate list while searching (raised to k when smaller)
    storage: str = "fp32"  # HNSW: how the graph stores vectors (fp32, fp16, int8)
    nlist: int = 0  # IVF: k-means cells (0: 4 * sqrt(n))
    pq_m: int = 0  # IVF-PQ: bytes per code (0: dim / 8)
    nprobe: int = 32  # IVF: cells visited per query
    rerank: int = 4  # quantised kinds: shortlist rerank * k rows, rescored exactly

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "storage" and int(getattr(self, f.name)) < (0 if f.name in ("nlist", "pq_m") else 1):
                raise OmniretError(f"ANN parameter {f.name} must be >= 1, got {getattr(self, f.name)}")
            if f.name != "storage":
                setattr(self, f.name, int(getattr(self, f.name)))
        if self.storage not in STORAGES:
            raise OmniretError(f"ANN storage must be one of {', '.join(STORAGES)}, got {self.storage!r}")

    @classmethod
    def from_dict(cls, d: dict) -> ANNParams:
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise OmniretError(f"unknown index parameter(s) {unknown}; use {', '.join(sorted(names))}")
        return cls(**d)


def _pq_shape(dim: int, n: int, pq_m: int) -> tuple[int, int]:
    """``(sub-quantisers, bits)``: ``pq_m`` must divide ``dim``; bits shrink for tiny collections (a
    2**bits-centroid codebook needs ~39 training points per centroid)."""
    m = pq_m or max(1, dim // 8)
    while dim % m:
        m -= 1
    bits = max(1, min(8, int(math.log2(max(2, n // 39)))))
    return m, bits


class ANNGraph:
    """A faiss ANN structure of one kind over rows ``0..n-1`` (inner product)."""

    def __init__(self, dim: int, kind: str, params: ANNParams, index=None) -> None:
        self.dim, self.kind, self.params = dim, kind, params
        self.faiss = index

    @property
    def quantised(self) -> bool:
        return self.kind == "ivfpq" or self.params.storage != "fp32"

    def __len__(self) -> int:
        return 0 if self.faiss is None else int(self.faiss.ntotal)

    def _build(self, sample: np.ndarray, n: int):
        import faiss

        p, ip = self.params, faiss.METRIC_INNER_PRODUCT
        if self.kind == "hnsw":
            if p.storage == "fp32":
                index = faiss.IndexHNSWFlat(self.dim, p.m, ip)
            else:
                qt = faiss.ScalarQuantizer.QT_fp16 if p.storage == "fp16" else faiss.ScalarQuantizer.QT_8bit
                index = faiss.IndexHNSWSQ(self.dim, qt, p.m, ip)
            index.hnsw.efConstruction = p.ef_construction
        elif self.kind == "ivfpq":
            nlist = p.nlist or max(1, int(4 * math.sqrt(n)))
            nlist = max(1, min(nlist, len(sample) // 39 or 1))
            m, bits = _pq_shape(self.dim, len(sample), p.pq_m)
            index = faiss.IndexIVFPQ(faiss.IndexFlatIP(self.dim), self.dim, nlist, m, bits, ip)
        else:
            raise OmniretError(f"no ANN structure for index kind {self.kind!r}")
        if not index.is_trained:
            index.train(sample)
        return index

    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``(N, D)``; their ids continue from ``len(self)``. The first call trains (IVF
        centroids, PQ codebooks, int8 ranges) on up to 100,000 evenly spaced rows."""
        if not len(vectors):
            return
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.faiss is None:
            step = max(1, len(v) // 100_000)
            self.faiss = self._build(v[::step], len(v))
        self.faiss.add(v)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-``k`` (or the ``rerank * k`` shortlist for quantised kinds): ``(scores, rows)``
        each ``(Q, k')``; missing results have row ``-1``. ``allowed`` ``(N,)`` bool restricts results."""
        import faiss

        p = self.params
        kk = k * p.rerank if self.quantised else k
        if self.kind == "hnsw":
            sp = faiss.SearchParametersHNSW()
            sp.efSearch = max(p.ef_search, kk)
        else:
            sp = faiss.SearchParametersIVF()
            sp.nprobe = p.nprobe
        # locals keep the bitmap and selector alive for the duration of the C++ call (sp.sel does not own)
        bits = sel = None
        if allowed is not None:
            bits = np.packbits(allowed.astype(bool), bitorder="little")
            sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
            sp.sel = sel
        scores, rows = self.faiss.search(np.ascontiguousarray(queries, dtype=np.float32), kk, params=sp)
        del bits, sel
        return scores, rows

    def nbytes(self) -> int:
        """Bytes of the structure (serialised size: codes + graph / lists + codebooks)."""
        return len(self.serialize())

    def serialize(self) -> bytes:
        import faiss

        return faiss.serialize_index(self.faiss).tobytes()

    @classmethod
    def deserialize(cls, data: bytes, dim: int, kind: str, params: ANNParams) -> ANNGraph:
        import faiss

        return cls(dim, kind, params, faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8)))


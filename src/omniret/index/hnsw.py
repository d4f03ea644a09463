"""HNSW graph parameters (Malkov & Yashunin, arXiv:1603.09320) shared by the pgvector backend; the local
index's faiss structures (HNSW and IVF-PQ) and their wider parameter set live in :mod:`omniret.index.ann`.
"""

from __future__ import annotations

from dataclasses import dataclass

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

"""Indexes: the protocol, the backend registry (local faiss flat/HNSW, pgvector, Qdrant), the manifest and
the shared exact top-k."""

from omniret.index.backends import (
    BACKENDS,
    create_index,
    find_backend,
    index_exists,
    location_for,
    open_index,
)
from omniret.index.base import PAGE_SIZE, Index, Record, parse_modalities
from omniret.index.exact import topk_inner_product
from omniret.index.flat import FlatIndex, exact_topk
from omniret.index.hnsw import HNSWParams
from omniret.index.manifest import KINDS, MANIFEST, Manifest


def is_index_dir(path) -> bool:
    """True when ``path`` holds a local omniret index manifest."""
    from pathlib import Path

    return (Path(path) / MANIFEST).is_file()


__all__ = [
    "BACKENDS",
    "Index",
    "Record",
    "FlatIndex",
    "HNSWParams",
    "Manifest",
    "KINDS",
    "MANIFEST",
    "PAGE_SIZE",
    "create_index",
    "exact_topk",
    "find_backend",
    "index_exists",
    "is_index_dir",
    "location_for",
    "open_index",
    "parse_modalities",
    "topk_inner_product",
]

"""Indexes: the embedded on-disk index (exact or HNSW), its manifest and the shared exact top-k."""

from omniret.index.base import Index, Record, parse_modalities
from omniret.index.exact import topk_inner_product
from omniret.index.flat import FlatIndex, exact_topk
from omniret.index.hnsw import HNSWParams
from omniret.index.manifest import KINDS, MANIFEST, Manifest


def is_index_dir(path) -> bool:
    """True when ``path`` holds an omniret index manifest."""
    from pathlib import Path

    return (Path(path) / MANIFEST).is_file()


__all__ = [
    "Index",
    "Record",
    "FlatIndex",
    "HNSWParams",
    "Manifest",
    "KINDS",
    "MANIFEST",
    "exact_topk",
    "is_index_dir",
    "parse_modalities",
    "topk_inner_product",
]

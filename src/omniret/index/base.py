"""The index protocol and the per-item record every index stores beside a vector.

Backends (the embedded flat/HNSW index here; vector databases later) implement :class:`Index`. Vectors are
``(N, D)`` float32 rows, L2-normalised by the encoder; scores are inner products.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from omniret.errors import DataError, OmniretError
from omniret.types import MODALITIES, Hit, Item


@dataclass
class Record:
    """What an index keeps about one document besides its vector (JSON-serialisable)."""

    id: str
    modality: str
    txt: str | None = None
    img_path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    #: content key used by incremental indexing to skip unchanged documents
    fingerprint: str | None = None

    @classmethod
    def from_item(cls, item: Item) -> Record:
        """Describe ``item`` for storage; the item must carry an ``id``."""
        if not item.id:
            raise DataError(f"cannot index an item without an id: {item!r}")
        paths = [p.path for p in item.images]
        return cls(
            id=str(item.id),
            modality=item.modality,
            txt=item.text,
            img_path=paths[0] if paths and paths[0] is not None else None,
            metadata=dict(item.metadata),
            fingerprint=item.fingerprint(),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(
            id=str(d["id"]),
            modality=str(d["modality"]),
            txt=d.get("txt"),
            img_path=d.get("img_path"),
            metadata=dict(d.get("metadata") or {}),
            fingerprint=d.get("fingerprint"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def hit(self, score: float) -> Hit:
        return Hit(
            id=self.id,
            score=float(score),
            modality=self.modality,
            txt=self.txt,
            img_path=self.img_path,
            metadata=dict(self.metadata),
        )


def scoped_id(source: str, id: str) -> str:
    """``id`` made unique to ``source``: ``<source name>~<8 hex of the source path>/<id>``.

    Incremental indexing (and a save that merges a concurrent writer's changes) gives a document this id
    when another source already holds its plain id, so two sources never overwrite each other.
    """
    tag = hashlib.sha1(source.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{Path(source).name}~{tag}/{id}"


def parse_modalities(modality: str | Sequence[str] | None) -> frozenset[str] | None:
    """Normalise a modality filter.

    A string is ONE M-BEIR label (``"image,text"`` means interleaved image+text documents, not "either");
    a list/tuple/set means any of its labels. ``None`` means no filter.
    """
    if modality is None:
        return None
    wanted = [modality] if isinstance(modality, str) else list(modality)
    bad = [m for m in wanted if m not in MODALITIES]
    if bad or not wanted:
        shown = ", ".join(repr(m) for m in bad) or "(empty)"
        raise OmniretError(f"unknown modality filter {shown}; use one of {', '.join(MODALITIES)} or a list of them")
    return frozenset(wanted)


class Index(ABC):
    """An embedded or remote vector index keyed by document id."""

    dim: int
    kind: str

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def add(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        """Add new documents: ``vectors`` ``(N, D)``; an id already present (or repeated) is an error."""

    @abstractmethod
    def upsert(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        """Add documents, replacing any with the same id."""

    @abstractmethod
    def remove(self, ids: Iterable[str]) -> int:
        """Remove documents by id (unknown ids are ignored); returns how many were removed."""

    @abstractmethod
    def search(
        self, queries: np.ndarray, k: int = 10, modality: str | Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """Top-``k`` hits per query row of ``queries`` ``(Q, D)``, best first, restricted to ``modality``."""

    @abstractmethod
    def get(self, id: str) -> Record | None:
        """The stored record of ``id``, or ``None``."""

    @abstractmethod
    def records(self) -> list[Record]:
        """All stored records, in storage order."""

    @abstractmethod
    def save(self) -> None:
        """Persist atomically (a crash never corrupts the previous saved state)."""

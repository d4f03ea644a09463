"""The index protocol, the per-document record every backend stores beside a vector, and location parsing.

Backends (:mod:`omniret.index.backends`: the local faiss flat/HNSW index, pgvector, Qdrant) implement
:class:`Index`; :class:`~omniret.retriever.Retriever`, the CLI and export/import use nothing outside it.
Vectors are ``(N, D)`` float32 rows, L2-normalised by the encoder; scores are inner products.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from omniret.errors import DataError, IndexMismatchError, OmniretError
from omniret.index.manifest import Manifest
from omniret.types import MODALITIES, Hit, ImagePart, Item

#: records per page when a backend is iterated (export, incremental planning)
PAGE_SIZE = 1000


@dataclass
class Record:
    """What an index keeps about one document besides its vector (JSON-serialisable).

    ``parts`` keeps the document's ordered parts (``{"text": ...}`` / ``{"image": path-or-None}``) so an
    interleaved document loses none of its images; ``txt`` (all text joined) and ``img_paths`` are the
    display view of the same parts.
    """

    id: str
    modality: str
    txt: str | None = None
    img_paths: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    #: content key used by incremental indexing to skip unchanged documents
    fingerprint: str | None = None
    parts: list[dict[str, str | None]] = field(default_factory=list)

    @property
    def img_path(self) -> str | None:
        """The first image path (``None`` for text-only documents or in-memory images)."""
        return self.img_paths[0] if self.img_paths else None

    @classmethod
    def from_item(cls, item: Item) -> Record:
        """Describe ``item`` for storage; the item must carry an ``id``."""
        if not item.id:
            raise DataError(f"cannot index an item without an id: {item!r}")
        parts = [{"image": p.path} if isinstance(p, ImagePart) else {"text": p} for p in item.parts]
        return cls(
            id=str(item.id),
            modality=item.modality,
            txt=item.text,
            img_paths=[p.path for p in item.images if p.path is not None],
            metadata=dict(item.metadata),
            fingerprint=item.fingerprint(),
            parts=parts,
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        """Inverse of :meth:`to_dict`; also reads format-1 records that had one ``img_path``."""
        paths = d.get("img_paths")
        if paths is None:
            paths = [d["img_path"]] if d.get("img_path") else []
        return cls(
            id=str(d["id"]),
            modality=str(d["modality"]),
            txt=d.get("txt"),
            img_paths=[str(p) for p in paths],
            metadata=dict(d.get("metadata") or {}),
            fingerprint=d.get("fingerprint"),
            parts=[dict(p) for p in d.get("parts") or []],
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
            img_paths=list(self.img_paths),
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


def check_batch(vectors: np.ndarray, records: Sequence[Record], dim: int) -> np.ndarray:
    """Validate one add/upsert batch: ``(N, dim)`` finite float32 vectors, one per record, unique ids and
    known modalities. Returns the vectors as float32."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[1] != dim:
        raise IndexMismatchError(f"vectors of shape {v.shape} do not fit index dim {dim}")
    if len(v) != len(records):
        raise DataError(f"{len(v)} vectors but {len(records)} records")
    if not np.isfinite(v).all():
        raise DataError("vectors contain NaN or infinite values")
    seen: set[str] = set()
    for r in records:
        if r.id in seen:
            raise DataError(f"duplicate id {r.id!r} in one add")
        if r.modality not in MODALITIES:
            raise DataError(f"record {r.id!r}: unknown modality {r.modality!r}")
        seen.add(r.id)
    return v


def check_queries(queries: np.ndarray, k: int, dim: int) -> np.ndarray:
    """Validate a search: ``(Q, dim)`` (or one ``(dim,)``) float32 queries and ``k >= 1``."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise IndexMismatchError(f"query vectors of shape {q.shape} do not fit index dim {dim}")
    if int(k) < 1:
        raise OmniretError(f"k must be >= 1, got {k}")
    return q


class Index(ABC):
    """A vector index keyed by document id: the embedded one or a database collection.

    Every backend keeps a :class:`~omniret.index.manifest.Manifest` (encoder, recipe hash, dim, kind) so a
    search with another encoder is refused, and makes its changes durable only in :meth:`save`, atomically
    where the store allows it (see each backend's docstring).
    """

    #: the name this backend is registered under (``local``, ``pgvector``, ``qdrant``)
    backend: ClassVar[str]
    #: the kind a new index of this backend gets when none is asked for
    default_kind: ClassVar[str] = "flat"
    manifest: Manifest
    #: True when there are changes that :meth:`save` has not yet made durable
    dirty: bool = False

    # ------------------------------------------------------------------ construction (per backend)
    @classmethod
    @abstractmethod
    def create(cls, location: str, manifest: Manifest, **options: Any) -> Index:
        """A new, empty index at ``location`` described by ``manifest`` (stored by the first :meth:`save`)."""

    @classmethod
    @abstractmethod
    def open(cls, location: str, encoder: Any = None) -> Index:
        """The index stored at ``location``; with ``encoder``, refuse one that did not build it."""

    @classmethod
    @abstractmethod
    def exists(cls, location: str) -> bool:
        """True when ``location`` holds an index of this backend."""

    # ------------------------------------------------------------------ facts
    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def kind(self) -> str:
        return self.manifest.kind

    @property
    @abstractmethod
    def location(self) -> str | None:
        """Where the index lives (directory, database URL with ``#name``); ``None`` for in-memory only."""

    @abstractmethod
    def __len__(self) -> int: ...

    def check_encoder(self, encoder: Any) -> None:
        """Refuse an encoder other than the one that built this index (name + recipe hash)."""
        self.manifest.check_encoder(encoder.name, encoder.recipe_hash, self.location or "index")

    def modality_counts(self) -> dict[str, int]:
        """Documents per modality label (labels with none left out); backends override with a count query."""
        counts: dict[str, int] = {}
        for r in self.records():
            counts[r.modality] = counts.get(r.modality, 0) + 1
        return counts

    def info(self) -> dict[str, Any]:
        """Manifest facts plus the backend, location and per-modality document counts."""
        m = self.manifest
        return {
            "backend": self.backend,
            "location": self.location,
            "encoder": m.encoder_name,
            "encoder_ref": m.encoder_ref,
            "recipe_hash": m.recipe_hash,
            "dim": m.dim,
            "metric": m.metric,
            "kind": m.kind,
            "params": dict(m.params) or None,
            "count": len(self),
            "modalities": self.modality_counts(),
            "created": m.created,
            "updated": m.updated,
        }

    def set_kind(self, kind: str) -> None:
        """Switch the search structure (e.g. ``flat`` <-> ``hnsw``); backends that cannot refuse."""
        if kind != self.kind:
            raise OmniretError(f"the {self.backend} backend cannot switch an index from {self.kind!r} to {kind!r}")

    @property
    def pending(self) -> bool:
        """True when :meth:`save` would change what is stored (unsaved changes, or never saved)."""
        return self.dirty

    # ------------------------------------------------------------------ records
    @abstractmethod
    def get(self, id: str) -> Record | None:
        """The stored record of ``id``, or ``None``."""

    @abstractmethod
    def iter_pages(self, page_size: int = PAGE_SIZE, vectors: bool = False) -> Iterator[tuple[list[Record], np.ndarray | None]]:
        """All documents in pages of at most ``page_size``: ``(records, vectors (n, D) or None)``.

        Only one page is held at a time, so a collection larger than memory can be walked (export,
        incremental planning). The order is the backend's storage order, stable between calls.
        """

    def records(self) -> Iterator[Record]:
        """Every stored record, page by page (see :meth:`iter_pages`)."""
        for recs, _ in self.iter_pages():
            yield from recs

    # ------------------------------------------------------------------ mutation and search
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
    def save(self) -> None:
        """Make every change so far durable, atomically where the store allows it."""

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op for the embedded index
        """Release connections or locks (the embedded index holds none)."""

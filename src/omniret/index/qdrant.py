"""The Qdrant backend: embedded local mode for a directory, or a Qdrant server / cluster for a URL.

``QdrantIndex.open("my-qdrant-dir")`` runs Qdrant in-process (qdrant-client's local mode, the same client
API as a cluster); ``"http://host:6333#name"`` talks to a server (``QDRANT_API_KEY`` from the environment).
Documents are points with id ``uuid5(record id)``, a dot-product vector and the :class:`Record` as payload;
``modality`` carries a keyword payload index so a modality filter is pushed down into the search. The
manifest is the payload of the one point of a side collection ``<name>__manifest``.

Qdrant has no multi-operation transactions: upserts and deletes apply immediately (batched, waited for);
:meth:`QdrantIndex.save` records the manifest (count, time) last, so an index whose first save never
happened is not found by :meth:`QdrantIndex.exists`.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omniret.errors import DataError, OmniretError
from omniret.index.backends import scheme_backend, split_url
from omniret.index.base import PAGE_SIZE, Index, Record, check_batch, check_queries, parse_modalities
from omniret.index.manifest import Manifest
from omniret.types import Hit

#: written (atomically) into an embedded index's directory so the location says which backend it is
MARKER = "omniret-qdrant.json"
UPSERT_BATCH = 256
_NAMESPACE = uuid.UUID("6f1b8a52-4b43-4c1e-9a54-8d2f1c0e7a11")


def point_id(doc_id: str) -> str:
    """The Qdrant point id of a document id (Qdrant ids must be UUIDs or integers)."""
    return str(uuid.uuid5(_NAMESPACE, doc_id))


def _connect(location: str) -> tuple[Any, str, Path | None]:
    """``(client, collection name, directory or None)`` for a location."""
    from qdrant_client import QdrantClient

    if scheme_backend(location) == "qdrant":
        url, name = split_url(location)
        return QdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY")), name, None
    path = Path(location)
    path.mkdir(parents=True, exist_ok=True)
    try:
        client = QdrantClient(path=str(path))
    except RuntimeError as e:  # local mode allows one client per directory
        raise OmniretError(f"{location}: the embedded Qdrant index is open in another client ({e})") from e
    return client, "omniret", path


class QdrantIndex(Index):
    """An :class:`Index` stored in a Qdrant collection."""

    backend = "qdrant"
    default_kind = "hnsw"

    def __init__(self, client: Any, name: str, manifest: Manifest, location: str, path: Path | None) -> None:
        self._client, self._name, self.manifest = client, name, manifest
        self._location, self._path = location, path
        self._saved = False
        self.dirty = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, location: str, manifest: Manifest, **options: Any) -> QdrantIndex:
        from qdrant_client import models

        if options:
            raise OmniretError(f"the qdrant backend takes no options, got {sorted(options)}")
        if manifest.kind != "hnsw":  # Qdrant's own HNSW (its local mode and small segments scan exactly)
            raise OmniretError(f"the qdrant backend has one kind, hnsw; got {manifest.kind!r}")
        client, name, path = _connect(location)
        for coll, dim in ((name, manifest.dim), (f"{name}__manifest", 1)):
            if client.collection_exists(coll):  # left by a create that was never saved
                client.delete_collection(coll)
            client.create_collection(coll, vectors_config=models.VectorParams(size=dim, distance=models.Distance.DOT))
        if path is None:  # a server indexes payload; local mode scans, and warns that the index is ignored
            client.create_payload_index(name, "modality", field_schema=models.PayloadSchemaType.KEYWORD)
        return cls(client, name, manifest, location, path)

    @classmethod
    def open(cls, location: str, encoder: Any = None) -> QdrantIndex:
        client, name, path = _connect(location)
        raw = _read_manifest(client, name)
        if raw is None:
            client.close()
            raise OmniretError(f"{location}: no omniret index (no saved manifest in collection {name}__manifest)")
        m = Manifest(**{k: v for k, v in raw.items() if k in Manifest.__dataclass_fields__})
        if encoder is not None:
            m.check_encoder(encoder.name, encoder.recipe_hash, location)
        idx = cls(client, name, m, location, path)
        idx._saved = True
        return idx

    @classmethod
    def exists(cls, location: str) -> bool:
        if scheme_backend(location) != "qdrant":
            return (Path(location) / MARKER).is_file()
        client, name, _ = _connect(location)
        try:
            return _read_manifest(client, name) is not None
        finally:
            client.close()

    @property
    def location(self) -> str:
        return self._location

    @property
    def pending(self) -> bool:
        return self.dirty or not self._saved

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ records
    def __len__(self) -> int:
        return int(self._client.count(self._name, exact=True).count)

    def modality_counts(self) -> dict[str, int]:
        from qdrant_client import models

        out = {}
        for mod in ("text", "image", "image,text"):
            f = models.Filter(must=[models.FieldCondition(key="modality", match=models.MatchValue(value=mod))])
            n = int(self._client.count(self._name, count_filter=f, exact=True).count)
            if n:
                out[mod] = n
        return out

    def get(self, id: str) -> Record | None:
        pts = self._client.retrieve(self._name, [point_id(id)], with_payload=True)
        return Record.from_dict(pts[0].payload) if pts else None

    def iter_pages(self, page_size: int = PAGE_SIZE, vectors: bool = False) -> Iterator[tuple[list[Record], np.ndarray | None]]:
        offset = None
        while True:
            pts, offset = self._client.scroll(
                self._name, limit=page_size, offset=offset, with_payload=True, with_vectors=vectors
            )
            if pts:
                recs = [Record.from_dict(p.payload) for p in pts]
                vecs = np.asarray([p.vector for p in pts], np.float32) if vectors else None
                yield recs, vecs
            if offset is None:
                return

    # ------------------------------------------------------------------ mutation
    def _write(self, v: np.ndarray, records: Sequence[Record]) -> None:
        from qdrant_client import models

        for s in range(0, len(records), UPSERT_BATCH):
            points = [
                models.PointStruct(id=point_id(r.id), vector=row.tolist(), payload=r.to_dict())
                for r, row in zip(records[s : s + UPSERT_BATCH], v[s : s + UPSERT_BATCH], strict=True)
            ]
            self._client.upsert(self._name, points=points, wait=True)
        self.dirty = self.dirty or bool(len(records))

    def add(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        records = list(records)
        v = check_batch(vectors, records, self.dim)
        found = self._client.retrieve(self._name, [point_id(r.id) for r in records], with_payload=["id"])
        if found:
            raise DataError(f"ids already in the index: {[p.payload['id'] for p in found][:5]!r}; use upsert()")
        self._write(v, records)

    def upsert(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        records = list(records)
        self._write(check_batch(vectors, records, self.dim), records)

    def remove(self, ids: Iterable[str]) -> int:
        from qdrant_client import models

        pids = [point_id(i) for i in dict.fromkeys(ids)]
        present = [p.id for p in self._client.retrieve(self._name, pids, with_payload=False)] if pids else []
        if present:
            self._client.delete(self._name, points_selector=models.PointIdsList(points=present), wait=True)
            self.dirty = True
        return len(present)

    # ------------------------------------------------------------------ search and save
    def search(
        self, queries: np.ndarray, k: int = 10, modality: str | Sequence[str] | None = None
    ) -> list[list[Hit]]:
        from qdrant_client import models

        q = check_queries(queries, k, self.dim)
        mods = parse_modalities(modality)
        flt = None
        if mods is not None:  # pushed down: Qdrant filters during the graph walk, via the payload index
            flt = models.Filter(must=[models.FieldCondition(key="modality", match=models.MatchAny(any=sorted(mods)))])
        reqs = [models.QueryRequest(query=row.tolist(), filter=flt, limit=int(k), with_payload=True) for row in q]
        out = self._client.query_batch_points(self._name, requests=reqs)
        return [[Record.from_dict(p.payload).hit(p.score) for p in resp.points] for resp in out]

    def save(self) -> None:
        from qdrant_client import models

        m = self.manifest
        m.count, m.updated = len(self), time.time()
        payload = json.loads(m.to_json())
        self._client.upsert(f"{self._name}__manifest", points=[models.PointStruct(id=0, vector=[1.0], payload=payload)], wait=True)
        if self._path is not None and not (self._path / MARKER).is_file():
            publish_marker(self._path, self._name)
        self._saved, self.dirty = True, False


def _read_manifest(client: Any, name: str) -> dict[str, Any] | None:
    if not client.collection_exists(f"{name}__manifest"):
        return None
    pts = client.retrieve(f"{name}__manifest", [0], with_payload=True)
    return dict(pts[0].payload) if pts else None


def publish_marker(path: Path, name: str) -> None:
    """Atomically write the marker that tells :func:`~omniret.index.backends.find_backend` this is Qdrant."""
    from omniret.io import atomic_write_json

    atomic_write_json(path / MARKER, {"backend": "qdrant", "collection": name})

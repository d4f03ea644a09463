"""Encoder + index (+ an optional reranker): index a corpus, search it with any query.

>>> r = Retriever.create("my-index", "default")          # or Retriever.open("my-index")
>>> r = Retriever.create("postgresql://localhost/db#docs", backend="pgvector")   # any registered backend
>>> r.index_corpus("photos/")                            # incremental: only new/changed files are encoded
>>> r.search("a red apple", k=5, modality="image")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from omniret.data.corpus import load_corpus, plan_update
from omniret.encoders import Encoder, load_encoder
from omniret.errors import OmniretError
from omniret.index import Index, Manifest, Record, create_index, index_exists, open_index
from omniret.types import Hit, Item

Query = Item | str


class EncodeEngine(Protocol):
    """Where documents are encoded: ``None`` means in this process; :class:`omniret.integrations.ray.RayEngine`
    spreads the work over a Ray cluster. Yields ``(vectors (n, D), records)`` chunks to upsert."""

    def encode_documents(
        self, encoder: Encoder, items: Sequence[Item], batch_size: int
    ) -> Iterable[tuple[np.ndarray, list[Record]]]: ...

    def done(self) -> None:
        """Called once every chunk is stored durably (the engine may drop its intermediate files)."""


class Reranker(Protocol):
    """Hook for a second-stage scorer (MLLM reranking): reorders / rescores first-stage hits."""

    def rerank(self, query: Item, hits: list[Hit]) -> list[Hit]: ...


@dataclass
class IndexReport:
    """What :meth:`Retriever.index_corpus` did."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    total: int = 0

    def __str__(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, removed {self.removed}, "
            f"unchanged {self.unchanged}; {self.total} documents in the index"
        )


def _encoder_ref(encoder: Encoder | str | os.PathLike) -> str:
    """How the manifest will name the encoder for reloading: a registered name or an absolute directory."""
    if isinstance(encoder, Encoder):
        return str(getattr(encoder, "source", None) or encoder.name)
    p = Path(encoder).expanduser()
    return str(p.resolve()) if p.is_dir() else str(encoder)


class Retriever:
    """Searches ``index`` with queries embedded by ``encoder``; ``reranker`` (optional) reorders hits."""

    def __init__(self, encoder: Encoder, index: Index, reranker: Reranker | None = None) -> None:
        index.check_encoder(encoder)
        self.encoder = encoder
        self.index = index
        self.reranker = reranker

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        location: str | os.PathLike | None,
        encoder: Encoder | str = "default",
        kind: str | None = None,
        backend: str = "local",
        **options: Any,
    ) -> Retriever:
        """A new, empty index of ``backend`` at ``location`` (stored by :meth:`index_corpus`; ``None`` keeps a
        local index in memory). ``kind`` defaults to the backend's own (``flat`` locally, ``hnsw`` in the
        databases); ``options`` are the backend's index parameters (local: :class:`~omniret.index.ann.ANNParams`,
        e.g. ``m=16, storage="int8"``; pgvector: ``m``, ``ef_construction``, ``ef_search``)."""
        from omniret.index.backends import backend_class

        if location is not None and index_exists(location, backend):
            raise OmniretError(f"{location}: an index already exists there; use Retriever.open()")
        ref = _encoder_ref(encoder)
        enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder)
        manifest = Manifest(
            encoder_name=enc.name,
            recipe_hash=enc.recipe_hash,
            dim=enc.dim,
            kind=kind or backend_class(backend).default_kind,
            encoder_ref=ref,
        )
        return cls(enc, create_index(location, manifest, backend, **options))

    @classmethod
    def open(cls, location: str | os.PathLike, encoder: Encoder | str | None = None) -> Retriever:
        """Open the index at ``location`` (any backend; see :mod:`omniret.index.backends`); without
        ``encoder``, load the one its manifest names. A different encoder (name or recipe hash) is an
        :class:`~omniret.errors.IndexMismatchError`."""
        index = open_index(location)
        if encoder is None:
            encoder = index.manifest.encoder_ref or index.manifest.encoder_name
        enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder)
        return cls(enc, index)

    @classmethod
    def open_or_create(
        cls,
        location: str | os.PathLike,
        encoder: Encoder | str | None = None,
        kind: str | None = None,
        backend: str | None = None,
        **options: Any,
    ) -> Retriever:
        """Open ``location`` if it holds an index (switching its ``kind`` if given), else create one of
        ``backend`` (default ``local``) with index parameters ``options``."""
        if index_exists(location, backend):
            if options:
                raise OmniretError(f"{location}: index parameters {sorted(options)} apply to a new index only")
            r = cls.open(location, encoder)
            if backend is not None and r.index.backend != backend:
                raise OmniretError(f"{location}: holds a {r.index.backend} index, not {backend}")
            if kind is not None:
                r.index.set_kind(kind)
            return r
        return cls.create(location, encoder or "default", kind=kind, backend=backend or "local", **options)

    # ------------------------------------------------------------------ indexing
    def index_corpus(
        self,
        source: str | os.PathLike | Iterable[Item],
        batch_size: int = 32,
        progress: bool = False,
        save: bool = True,
        exclude: Sequence[str] = (),
        engine: EncodeEngine | None = None,
    ) -> IndexReport:
        """Index a folder, a candidate ``.jsonl`` or Items (each with an ``id``), incrementally.

        Only new or changed documents (by content fingerprint) are encoded; for a folder or JSONL, documents
        that disappeared from it (or are now ``exclude`` d) are removed. Saves the index atomically when it
        has a location. ``engine`` encodes elsewhere (e.g. on Ray); default: here, with ``batch_size``.
        """
        items, src = load_corpus(source, exclude)
        plan = plan_update(items, self.index.records(), src)
        if plan.to_encode and engine is not None:
            for vecs, records in engine.encode_documents(self.encoder, plan.to_encode, batch_size):
                self.index.upsert(vecs, records)
        elif plan.to_encode:
            vecs = self.encoder.encode_documents(plan.to_encode, batch_size=batch_size, progress=progress)
            self.index.upsert(vecs, [Record.from_item(it) for it in plan.to_encode])
        removed = self.index.remove(plan.removed)
        if save and self.index.location is not None and self.index.pending:
            self.index.save()
        if engine is not None:
            engine.done()
        return IndexReport(plan.added, plan.updated, removed, plan.unchanged, len(self.index))

    # ------------------------------------------------------------------ search
    def search(
        self,
        query: Query | Sequence[Query],
        k: int = 10,
        instruction: str | None = None,
        modality: str | Sequence[str] | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Top-``k`` hits for one query (``list[Hit]``) or for a list of queries (``list[list[Hit]]``).

        A ``str`` is a text query; an :class:`Item` may hold an image, text or both. ``instruction`` applies
        to queries that carry none. ``modality`` restricts results to ``"text"``, ``"image"``,
        ``"image,text"`` or a list of them.
        """
        single = isinstance(query, (Item, str))
        queries = [query] if single else list(query)
        if not queries:
            return []
        q = self.encoder.encode_queries(queries, instruction=instruction)
        results = self.search_vectors(q, k=k, modality=modality)
        if self.reranker is not None:
            items = [x if isinstance(x, Item) else Item(x) for x in queries]
            if instruction:
                items = [it if it.instruction else it.with_instruction(instruction) for it in items]
            results = [self.reranker.rerank(it, hits) for it, hits in zip(items, results, strict=True)]
        return results[0] if single else results

    def search_vectors(
        self, vectors: np.ndarray, k: int = 10, modality: str | Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """Search with precomputed query vectors ``(Q, dim)`` (no reranking)."""
        return self.index.search(vectors, k=k, modality=modality)

    def info(self) -> dict[str, Any]:
        """Manifest facts plus per-modality document counts (see :meth:`Index.info`)."""
        return self.index.info()

"""Encoder + index (+ an optional reranker): index a corpus, search it with any query.

>>> r = Retriever.create("my-index", "default")          # or Retriever.open("my-index")
>>> r = Retriever.create("postgresql://localhost/db#docs", backend="pgvector")   # any registered backend
>>> r.index_corpus("photos/")                            # incremental: only new/changed files are encoded
>>> r.search("a red apple", k=5, modality="image")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from omniret.data.corpus import load_corpus, plan_update
from omniret.data.scan import Skip, SkipReport
from omniret.encoders import Encoder, load_encoder, open_reference
from omniret.errors import OmniretError
from omniret.index import Index, Manifest, Record, create_index, index_exists, open_index
from omniret.index.backends import scheme_backend
from omniret.index.flat import check_k
from omniret.index.generations import foreign_entries
from omniret.rerank.base import Reranker
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


@dataclass
class IndexReport:
    """What :meth:`Retriever.index_corpus` did."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    total: int = 0
    #: every input left out of this run and why (bad files, unreadable images, unsafe paths)
    skipped: list[Skip] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"added {self.added}, updated {self.updated}, removed {self.removed}, "
            f"unchanged {self.unchanged}{f', skipped {len(self.skipped)}' if self.skipped else ''}; "
            f"{self.total} documents in the index"
        )


#: share of a source's documents one incremental run may remove without ``allow_mass_delete``
MASS_DELETE_SHARE = 0.5
#: documents encoded per chunk; a chunk with a bad input is retried without it (skip-and-report)
ENCODE_CHUNK = 512
#: errors that mean "this input is bad" (decoding, validation); an OSError (disk full, I/O) or a runtime
#: failure is about the machine, not the document, and stops the run
_INPUT_ERRORS = (OmniretError, ValueError)


def encode_skipping(
    encoder: Encoder, items: list[Item], report: SkipReport, batch_size: int = 32, progress: bool = False
) -> tuple[np.ndarray, list[Item]]:
    """Encode documents ``items``; with a non-strict ``report`` an item that cannot be prepared or encoded
    (a corrupt image, ...) is recorded there and left out. Returns ``(vectors (M, dim), kept items)``."""
    vecs, kept = [], []
    for s in range(0, len(items), ENCODE_CHUNK):
        chunk = items[s : s + ENCODE_CHUNK]
        try:
            vecs.append(encoder.encode_documents(chunk, batch_size=batch_size, progress=progress))
            kept.extend(chunk)
            continue
        except _INPUT_ERRORS:
            if report.strict:
                raise
        # find the bad items by preparing each alone (decoding, tokenising: no model call), then encode the
        # rest in batches; an item that only fails inside the model is caught by the one-by-one fallback
        good = []
        for it in chunk:
            try:
                encoder.prepare([it], is_query=False)
                good.append(it)
            except _INPUT_ERRORS as e:
                report.skip(_where(it), _reason(e, it))
        try:
            vecs.append(encoder.encode_documents(good, batch_size=batch_size))
            kept.extend(good)
            continue
        except _INPUT_ERRORS:
            pass
        for it in good:
            try:
                vecs.append(encoder.encode_documents([it], batch_size=1))
                kept.append(it)
            except _INPUT_ERRORS as e:
                report.skip(_where(it), _reason(e, it))
    dim = encoder.dim
    return (np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)), kept


def _where(item: Item) -> str:
    """How a skipped document is named: its image file, else its id."""
    return next((im.path for im in item.images if im.path), None) or str(item.id)


def _reason(e: Exception, item: Item) -> str:
    msg = str(e) or type(e).__name__
    for p in [im.path for im in item.images if im.path] + [str(item.id)]:
        msg = msg.removeprefix(f"{p}: ")
    return " ".join(msg.split())


def _encoder_ref(encoder: Encoder) -> str:
    """How the manifest names the encoder for reopening: the ``source`` ``load_encoder`` recorded (registered
    name, absolute directory or JSON reference); an encoder built directly falls back to its name."""
    return encoder.source or encoder.name


def _skipped_ids(skips: SkipReport, source: str | None) -> set[str]:
    """Ids (relative paths) of folder files skipped this run: their indexed documents are kept, not removed."""
    if source is None:
        return set()
    prefix = source.rstrip("/") + "/"
    return {s.where[len(prefix) :] for s in skips.skipped if s.where.startswith(prefix)}


class Retriever:
    """Searches ``index`` with queries embedded by ``encoder``; ``reranker`` (optional, see
    :mod:`omniret.rerank`) reorders the top ``rerank_k`` hits (all returned hits when ``None``)."""

    def __init__(self, encoder: Encoder, index: Index, reranker: Reranker | None = None,
                 rerank_k: int | None = None) -> None:
        index.check_encoder(encoder)
        self.encoder = encoder
        self.index = index
        self.reranker = reranker
        self.rerank_k = rerank_k

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
        is_dir = location is not None and scheme_backend(os.fspath(location)) is None
        foreign = foreign_entries(Path(location)) if is_dir and backend == "local" else []
        if foreign:
            raise OmniretError(
                f"{location}: folder is not empty and holds no omniret index ({', '.join(foreign[:3])}"
                f"{', ...' if len(foreign) > 3 else ''}); index into a new or empty folder"
            )
        enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder)
        ref = _encoder_ref(enc)
        manifest = Manifest(
            encoder_name=enc.name,
            recipe_hash=enc.recipe_hash,
            dim=enc.dim,
            kind=kind or backend_class(backend).default_kind,
            encoder_ref=ref,
        )
        return cls(enc, create_index(location, manifest, backend, **options))

    @classmethod
    def open(cls, location: str | os.PathLike, encoder: Encoder | str | None = None,
             reranker: Reranker | str | None = None, rerank_k: int | None = None,
             **encoder_options: Any) -> Retriever:
        """Open the index at ``location`` (any backend; see :mod:`omniret.index.backends`); without
        ``encoder``, load the one its manifest names (with ``encoder_options``, e.g. ``precision="int8"``). A different encoder (name or recipe hash) is an
        :class:`~omniret.errors.IndexMismatchError`. ``reranker`` may be a model directory for
        :func:`omniret.rerank.load_reranker`."""
        index = open_index(location)
        if encoder is None:
            encoder = index.manifest.encoder_ref or index.manifest.encoder_name
        enc = encoder if isinstance(encoder, Encoder) else open_reference(str(encoder), **encoder_options)
        if isinstance(reranker, (str, os.PathLike)):
            from omniret.rerank import load_reranker

            reranker = load_reranker(reranker)
        return cls(enc, index, reranker, rerank_k)

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
        *,
        strict: bool = False,
        follow_symlinks: bool = False,
        allow_mass_delete: bool = False,
        engine: EncodeEngine | None = None,
    ) -> IndexReport:
        """Index a folder, a candidate ``.jsonl`` or Items (each with an ``id``), incrementally.

        Only new or changed documents (by content fingerprint) are encoded; for a folder or JSONL, documents
        that disappeared from it (or are now ``exclude`` d) are removed — but a run that would remove more
        than :data:`MASS_DELETE_SHARE` of the source's documents (an empty or unmounted folder) is refused
        unless ``allow_mass_delete``. Bad inputs (unreadable or unsafe files, corrupt images, malformed JSONL
        lines) are skipped and listed in the report's ``skipped``; ``strict=True`` raises on the first one
        instead and changes nothing. Symlinks leaving the folder are followed only with
        ``follow_symlinks``. Saves the index when it has a location. ``engine`` encodes elsewhere (e.g. on
        Ray; its inputs must all be readable); default: here, in chunks of ``batch_size``.
        """
        skips = SkipReport(strict=strict)
        items, src = load_corpus(source, exclude, follow_symlinks=follow_symlinks, report=skips)
        keep = _skipped_ids(skips, src)
        plan = plan_update(items, self.index.records(), src, keep)
        share = len(plan.removed) / max(plan.source_total, 1)
        mass = not items or (share > MASS_DELETE_SHARE and len(plan.removed) > 1)
        if plan.removed and mass and not allow_mass_delete:
            raise OmniretError(
                f"{src}: this run would remove {len(plan.removed)} of the {plan.source_total} documents indexed "
                f"from it ({len(items)} found now; is the folder empty or unmounted?); nothing was changed — "
                f"pass --allow-mass-delete (allow_mass_delete=True) if that is intended"
            )
        added, updated = plan.added, plan.updated
        if plan.to_encode and engine is not None:
            for vecs, records in engine.encode_documents(self.encoder, plan.to_encode, batch_size):
                self.index.upsert(vecs, records)
        elif plan.to_encode:
            vecs, done = encode_skipping(self.encoder, plan.to_encode, skips, batch_size, progress)
            done_ids = {d.id for d in done}
            failed = [it.id for it in plan.to_encode if it.id not in done_ids]
            updated -= sum(1 for i in failed if self.index.get(i) is not None)
            added -= sum(1 for i in failed if self.index.get(i) is None)
            if done:
                self.index.upsert(vecs, [Record.from_item(it) for it in done])
        removed = self.index.remove(plan.removed)
        if save and self.index.location is not None and self.index.pending:
            self.index.save()
        if engine is not None:
            engine.done()
        return IndexReport(added, updated, removed, plan.unchanged, len(self.index), skips.skipped)

    # ------------------------------------------------------------------ search
    def search(
        self,
        query: Query | Sequence[Query],
        k: int = 10,
        instruction: str | None = None,
        modality: str | Sequence[str] | None = None,
        rerank_k: int | None = None,
        task: str | int | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Top-``k`` hits for one query (``list[Hit]``) or for a list of queries (``list[list[Hit]]``).

        A ``str`` is a text query; an :class:`Item` may hold an image, text or both. ``instruction`` applies
        to queries that carry none. ``modality`` restricts results to ``"text"``, ``"image"``,
        ``"image,text"`` or a list of them. With a reranker, the best ``rerank_k`` (default: the
        retriever's ``rerank_k``, else every returned hit) first-stage hits are reordered by it (``task``
        picks its prompt) and the first ``k`` returned; fewer than ``rerank_k`` hits is an error.
        """
        k = check_k(k)  # before any model work
        single = isinstance(query, (Item, str))
        if not single and not isinstance(query, Sequence):
            raise OmniretError(f"query must be a str, an Item or a list of them, got {type(query).__name__}")
        queries = [query] if single else list(query)
        if not queries:
            return []
        rk = rerank_k or self.rerank_k  # None: rerank every returned hit
        depth = max(k, rk or 0) if self.reranker is not None else k
        q = self.encoder.encode_queries(queries, instruction=instruction)
        results = self.search_vectors(q, k=depth, modality=modality)
        if self.reranker is not None:
            items = [x if isinstance(x, Item) else Item(x) for x in queries]
            if instruction:
                items = [it if it.instruction else it.with_instruction(instruction) for it in items]
            results = [self.reranker.rerank(it, hits, k=rk, task=task)[:k]
                       for it, hits in zip(items, results, strict=True)]
        return results[0] if single else results

    def search_vectors(
        self, vectors: np.ndarray, k: int = 10, modality: str | Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """Search with precomputed query vectors ``(Q, dim)`` (no reranking)."""
        return self.index.search(vectors, k=k, modality=modality)

    def info(self) -> dict[str, Any]:
        """Manifest facts plus per-modality document counts (see :meth:`Index.info`)."""
        return self.index.info()

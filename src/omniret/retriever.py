"""Encoder + index (+ an optional reranker): index a corpus, search it with any query.

>>> r = Retriever.create("my-index", "default")          # or Retriever.open("my-index")
>>> r.index_corpus("photos/")                            # incremental: only new/changed files are encoded
>>> r.search("a red apple", k=5, modality="image")
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omniret.data.corpus import load_corpus, plan_update
from omniret.encoders import Encoder, load_encoder
from omniret.errors import OmniretError
from omniret.index import FlatIndex, Record, is_index_dir
from omniret.rerank.base import Reranker
from omniret.types import Hit, Item

Query = Item | str


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
    """Searches ``index`` with queries embedded by ``encoder``; ``reranker`` (optional, see
    :mod:`omniret.rerank`) reorders the top ``rerank_k`` hits (all returned hits when ``None``)."""

    def __init__(self, encoder: Encoder, index: FlatIndex, reranker: Reranker | None = None,
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
        index_dir: str | os.PathLike | None,
        encoder: Encoder | str = "default",
        kind: str = "flat",
        **hnsw: int,
    ) -> Retriever:
        """A new, empty index (saved to ``index_dir`` by :meth:`index_corpus`; ``None`` keeps it in memory)."""
        if index_dir is not None and is_index_dir(index_dir):
            raise OmniretError(f"{index_dir}: an index already exists there; use Retriever.open()")
        ref = _encoder_ref(encoder)
        enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder)
        index = FlatIndex(
            enc.dim,
            encoder_name=enc.name,
            recipe_hash=enc.recipe_hash,
            encoder_ref=ref,
            kind=kind,
            hnsw=hnsw,
            path=index_dir,
        )
        return cls(enc, index)

    @classmethod
    def open(cls, index_dir: str | os.PathLike, encoder: Encoder | str | None = None,
             reranker: Reranker | str | None = None, rerank_k: int | None = None) -> Retriever:
        """Open an index; without ``encoder``, load the one its manifest names. A different encoder (name or
        recipe hash) is an :class:`~omniret.errors.IndexMismatchError`. ``reranker`` may be a model
        directory for :func:`omniret.rerank.load_reranker`."""
        index = FlatIndex.open(index_dir)
        if encoder is None:
            encoder = index.manifest.encoder_ref or index.manifest.encoder_name
        enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder)
        if isinstance(reranker, (str, os.PathLike)):
            from omniret.rerank import load_reranker

            reranker = load_reranker(reranker)
        return cls(enc, index, reranker, rerank_k)

    @classmethod
    def open_or_create(
        cls, index_dir: str | os.PathLike, encoder: Encoder | str | None = None, kind: str | None = None
    ) -> Retriever:
        """Open ``index_dir`` if it holds an index (switching its ``kind`` if given), else create one."""
        if is_index_dir(index_dir):
            r = cls.open(index_dir, encoder)
            if kind is not None:
                r.index.set_kind(kind)
            return r
        return cls.create(index_dir, encoder or "default", kind=kind or "flat")

    # ------------------------------------------------------------------ indexing
    def index_corpus(
        self,
        source: str | os.PathLike | Iterable[Item],
        batch_size: int = 32,
        progress: bool = False,
        save: bool = True,
        exclude: Sequence[str] = (),
    ) -> IndexReport:
        """Index a folder, a candidate ``.jsonl`` or Items (each with an ``id``), incrementally.

        Only new or changed documents (by content fingerprint) are encoded; for a folder or JSONL, documents
        that disappeared from it (or are now ``exclude`` d) are removed. Saves the index atomically when it
        has a directory.
        """
        items, src = load_corpus(source, exclude)
        plan = plan_update(items, self.index.records(), src)
        if plan.to_encode:
            vecs = self.encoder.encode_documents(plan.to_encode, batch_size=batch_size, progress=progress)
            self.index.upsert(vecs, [Record.from_item(it) for it in plan.to_encode])
        removed = self.index.remove(plan.removed)
        if save and self.index.path is not None and (self.index.dirty or not is_index_dir(self.index.path)):
            self.index.save()
        return IndexReport(plan.added, plan.updated, removed, plan.unchanged, len(self.index))

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
        retriever's ``rerank_k``, else ``k``) first-stage hits are reordered by it (``task`` picks its
        prompt) and the first ``k`` returned; fewer than ``rerank_k`` hits is an error.
        """
        single = isinstance(query, (Item, str))
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
        """Manifest facts plus per-modality document counts (see :meth:`FlatIndex.info`)."""
        return self.index.info()

"""The reranker protocol: a query and its first-stage hits in, the top ``k`` reordered by a second scorer out.

``Reranker.rerank(query, hits, k)`` is all the faces (``Retriever``, the CLI, the server) call. A concrete
reranker only scores (query, candidate items) pairs (:meth:`ScoringReranker.score`); turning hits into items,
checking ``k``, interpolating with the retrieval score and reordering live here once.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

import numpy as np

from omniret.errors import DataError, OmniretError
from omniret.types import Hit, ImagePart, Item


@runtime_checkable
class Reranker(Protocol):
    """Second stage: reorders the best ``k`` of ``hits`` (all when ``k`` is None) for ``query``.

    The returned list holds the same hits: the top ``k`` sorted by their new ``rerank_score`` (best first),
    then the rest in their original order with ``rerank_score=None``. ``task`` picks a per-task prompt
    (an M-BEIR task id or name) where the reranker has several.
    """

    def rerank(self, query: Item, hits: list[Hit], k: int | None = None, task: str | int | None = None) -> list[Hit]:
        ...


def hit_item(hit: Hit) -> Item:
    """The document of ``hit`` as an :class:`Item` (images first, then text, as indexed); a missing image file
    is a :class:`DataError` naming the hit. Every image counts: ``Hit.img_paths`` where the index keeps them
    all, else an ``img_paths`` metadata list, else ``img_path``."""
    paths = (getattr(hit, "img_paths", None) or hit.metadata.get("img_paths")
             or ([hit.img_path] if hit.img_path else []))
    for p in paths:
        if not os.path.isfile(p):
            raise DataError(f"hit {hit.id!r}: image not found: {p}")
    if not paths and not hit.txt:
        raise DataError(f"hit {hit.id!r}: the index stores neither text nor an image path for it")
    return Item(parts=[*[ImagePart(p) for p in paths], *([hit.txt] if hit.txt else [])], id=hit.id)


def item_hit(item: Item, id: str, score: float) -> Hit:
    """A hit describing ``item`` (the inverse of :func:`hit_item`): every image path, the joined text."""
    paths = [p.path for p in item.images]
    if any(p is None for p in paths):
        raise DataError(f"document {id!r}: reranking needs images stored as files, not in-memory images")
    meta = {"img_paths": paths} if len(paths) > 1 else {}
    return Hit(id, float(score), item.modality, txt=item.text, img_path=paths[0] if paths else None, metadata=meta)


def check_k(k: int | None, n_hits: int) -> int:
    """``k`` resolved against ``n_hits``: None means all; more than there are is an error, not a silent cut."""
    if k is None:
        return n_hits
    if k < 1:
        raise OmniretError(f"rerank k must be >= 1, got {k}")
    if k > n_hits:
        raise OmniretError(f"rerank k={k} but only {n_hits} hit(s) to rerank; lower the rerank k or retrieve more")
    return k


def reorder(hits: Sequence[Hit], scores: np.ndarray, weight: float = 0.0) -> list[Hit]:
    """The first ``len(scores)`` hits sorted by ``(1 - weight) * scores + weight * hit.score`` (stable: ties
    keep the retrieval order), followed by the remaining hits unchanged. Returns copies with ``rerank_score``."""
    k = len(scores)
    final = [(1.0 - weight) * float(s) + weight * float(h.score) for s, h in zip(scores, hits[:k], strict=True)]
    order = sorted(range(k), key=lambda i: -final[i])
    return [replace(hits[i], rerank_score=final[i]) for i in order] + list(hits[k:])


class ScoringReranker(ABC):
    """A :class:`Reranker` defined by a point-wise score; ``weight`` > 0 mixes in the retrieval score."""

    weight: float = 0.0

    @abstractmethod
    def score(self, query: Item, documents: Sequence[Item], task: str | int | None = None) -> np.ndarray:
        """``(len(documents),)`` float scores, higher = more relevant to ``query``."""

    def rerank(self, query: Item, hits: list[Hit], k: int | None = None, task: str | int | None = None) -> list[Hit]:
        k = check_k(k, len(hits))
        scores = self.score(query, [hit_item(h) for h in hits[:k]], task=task)
        return reorder(hits, np.asarray(scores, dtype=np.float64), self.weight)


__all__ = ["Reranker", "ScoringReranker", "hit_item", "item_hit", "check_k", "reorder"]

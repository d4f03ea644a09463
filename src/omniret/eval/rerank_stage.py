"""The reranked stage of an evaluation: first-stage rankings in, rankings reordered by a :class:`Reranker` out.

Runs through the same protocol the faces use (``reranker.rerank(query, hits, k, task)``), so any reranker
evaluates the same way. The stage's ranking is the top ``k`` in reranked order followed by the rest of the
first-stage ranking; in its TREC run the tail's scores are the retrieval scores minus :data:`TAIL_SHIFT`, so
score order equals rank order for tools that sort by score (retrieval scores are cosines in [-1, 1]).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from omniret.rerank.base import Reranker, check_k, item_hit
from omniret.types import Hit, Item

TAIL_SHIFT = 2.0


@dataclass
class RerankStage:
    """A reranker, how many top hits it reorders, and the seconds it spent (for the report)."""

    reranker: Reranker
    k: int = 10
    seconds: float = field(default=0.0, init=False)

    def describe(self) -> dict[str, Any]:
        r = self.reranker
        return {"model": str(getattr(r, "name", type(r).__name__)), "k": self.k,
                "weight": float(getattr(r, "weight", 0.0)), "timing_s": round(self.seconds, 2)}

    def rerank(self, query: Item, ranked: Sequence[tuple[str, float]], item_of: Callable[[str], Item],
               task: str | int | None = None) -> list[tuple[str, float]]:
        """``ranked`` = first-stage ``[(doc id, score)]`` best first -> the reranked stage's ``[(id, score)]``."""
        k = check_k(self.k, len(ranked))
        hits = [item_hit(item_of(d), d, s) if i < k else Hit(d, s, "") for i, (d, s) in enumerate(ranked)]
        t0 = time.perf_counter()
        out = self.reranker.rerank(query, hits, k=k, task=task)
        self.seconds += time.perf_counter() - t0
        return [(h.id, h.rerank_score if h.rerank_score is not None else h.score - TAIL_SHIFT) for h in out]


__all__ = ["RerankStage", "TAIL_SHIFT"]

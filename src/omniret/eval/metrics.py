"""Pure retrieval metrics over (ranked list, relevance judgements). No I/O, no models.

Conventions:

* ``ranked`` is a sequence of document ids, best first (the run for one query);
* ``qrel`` maps document id -> graded relevance; only ``rel > 0`` counts as relevant (trec_eval, UniIR);
* a query with no relevant document scores 0 on every metric (UniIR's ``compute_recall_at_k``).

``hit_at_k`` is what UniIR/M-BEIR call "Recall@k" (METHODS.md §1.1); ``recall_at_k`` is the classic
fraction-of-relevant-found that BEIR's Recall@100 means. They coincide when a query has one positive.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence

import numpy as np

Qrel = Mapping[str, int]


def _relevant(qrel: Qrel | Collection[str]) -> set[str]:
    if isinstance(qrel, Mapping):
        return {d for d, r in qrel.items() if r > 0}
    return set(qrel)


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")


def hit_at_k(relevant: Qrel | Collection[str], ranked: Sequence[str], k: int) -> float:
    """UniIR "Recall@k": 1.0 if any relevant id is in ``ranked[:k]``, else 0.0."""
    _check_k(k)
    rel = _relevant(relevant)
    return float(bool(rel) and not rel.isdisjoint(ranked[:k]))


def recall_at_k(relevant: Qrel | Collection[str], ranked: Sequence[str], k: int) -> float:
    """Classic recall: |relevant ∩ ranked[:k]| / |relevant| (BEIR / trec_eval ``recall_k``)."""
    _check_k(k)
    rel = _relevant(relevant)
    if not rel:
        return 0.0
    return len(rel.intersection(ranked[:k])) / len(rel)


def mrr_at_k(relevant: Qrel | Collection[str], ranked: Sequence[str], k: int) -> float:
    """Reciprocal rank of the first relevant id within ``ranked[:k]`` (0 if none)."""
    _check_k(k)
    rel = _relevant(relevant)
    for i, d in enumerate(ranked[:k]):
        if d in rel:
            return 1.0 / (i + 1)
    return 0.0


def ndcg_at_k(qrel: Qrel, ranked: Sequence[str], k: int) -> float:
    """nDCG@k with trec_eval's definition (linear gain ``rel``, discount ``log2(rank + 1)``).

    The ideal DCG sorts all judged relevant documents by grade, so unretrieved ones still count.
    """
    _check_k(k)
    gains = [r for r in qrel.values() if r > 0]
    if not gains:
        return 0.0
    dcg = sum(qrel.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]) if qrel.get(d, 0) > 0)
    ideal = sorted(gains, reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg


def average_precision_at_k(relevant: Qrel | Collection[str], ranked: Sequence[str], k: int) -> float:
    """CIRCO's AP@k (Baldrati et al., arXiv 2303.15247, §5): ``sum_{i<=k} P@i * rel(i) / min(k, |relevant|)``,
    for queries with several positives; with one positive it equals MRR@k."""
    _check_k(k)
    rel = _relevant(relevant)
    if not rel:
        return 0.0
    found, total = 0, 0.0
    for i, d in enumerate(ranked[:k]):
        if d in rel:
            found += 1
            total += found / (i + 1)
    return total / min(k, len(rel))


def modality_accuracy_at_k(modalities: Sequence[str], target: str, k: int) -> float:
    """Share of the top-``k`` results whose modality equals ``target`` (MM-Embed's modality bias probe).

    ``modalities`` are the result modalities, best first. Fewer than ``k`` results divide by what came back;
    no results score 0.
    """
    _check_k(k)
    top = modalities[:k]
    if not len(top):
        return 0.0
    return sum(m == target for m in top) / len(top)


def hit_at_1_first_is_target(scores: np.ndarray) -> float:
    """MMEB hit@1 for one query: ``scores`` is ``(C,)`` over the query's own candidates, the target first.

    Ties count against the target (it must score strictly higher than every other candidate), so a
    degenerate encoder that scores everything equally gets 0, not 100.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    return float(len(s) == 1 or s[0] > s[1:].max())


def mean_hit_at_k(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Qrel], k: int, qids: Iterable[str] | None = None
) -> float:
    """Mean UniIR hit@k over ``qids`` (default: every query in ``qrels``); a query missing from ``run``
    scores 0, exactly as a retriever that returned nothing."""
    ids = list(qrels if qids is None else qids)
    if not ids:
        return 0.0
    return sum(hit_at_k(qrels.get(q, {}), run.get(q, ()), k) for q in ids) / len(ids)


def mean_metric(
    metric: str, run: Mapping[str, Sequence[str]], qrels: Mapping[str, Qrel], k: int
) -> float:
    """Mean of ``metric`` (``"hit"``, ``"recall"``, ``"mrr"``, ``"ndcg"``) at ``k`` over the queries in
    ``qrels`` that have at least one relevant document (trec_eval/BEIR average only over judged queries)."""
    fns = {"hit": hit_at_k, "recall": recall_at_k, "mrr": mrr_at_k, "ndcg": ndcg_at_k}
    if metric not in fns:
        raise ValueError(f"unknown metric {metric!r}; known: {sorted(fns)}")
    fn = fns[metric]
    ids = [q for q, rel in qrels.items() if any(r > 0 for r in rel.values())]
    if not ids:
        return 0.0
    return sum(fn(qrels[q], run.get(q, ()), k) for q in ids) / len(ids)

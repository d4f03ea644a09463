"""Exact inner-product top-k, shared by the flat index, evaluation and hard-negative mining.

Blocked over documents so a 5.6M-row pool never materialises a full (Q, N) score matrix.
"""

from __future__ import annotations

import numpy as np


def topk_inner_product(
    queries: np.ndarray,
    docs: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
    block: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` documents by inner product for every query.

    Args:
        queries: ``(Q, D)`` float32.
        docs: ``(N, D)`` float32.
        k: number of results per query (clipped to the number of allowed documents).
        allowed: optional ``(N,)`` bool mask; documents where it is False never appear.
        block: documents scored per step.

    Returns:
        ``(scores, indices)``, each ``(Q, k')`` with ``k' = min(k, n_allowed)``, sorted by descending score;
        ties broken by lower document index (deterministic).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    d = np.ascontiguousarray(docs, dtype=np.float32)
    if q.ndim != 2 or d.ndim != 2 or (len(d) and q.shape[1] != d.shape[1]):
        raise ValueError(f"shape mismatch: queries {q.shape} vs docs {d.shape}")
    n_allowed = int(allowed.sum()) if allowed is not None else len(d)
    kk = max(0, min(k, n_allowed))
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    if kk == 0 or len(q) == 0:
        return best_s[:, :kk], best_i[:, :kk]
    for s in range(0, len(d), block):
        scores = q @ d[s : s + block].T
        if allowed is not None:
            scores[:, ~allowed[s : s + block]] = -np.inf
        take = min(kk, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, part, 1)], axis=1)
        cand_i = np.concatenate([best_i, part + s], axis=1)
        # sort by (-score, index) for deterministic tie-breaking
        order = np.lexsort((cand_i, -cand_s), axis=1)[:, :kk]
        best_s = np.take_along_axis(cand_s, order, 1)
        best_i = np.take_along_axis(cand_i, order, 1)
    keep = np.isfinite(best_s).all(axis=0)
    return best_s[:, keep], best_i[:, keep]

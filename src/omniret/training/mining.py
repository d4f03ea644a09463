"""Modality-aware hard-negative mining (MM-Embed, METHODS.md §2.5).

For every training query, retrieve the top-``N`` candidates of a heterogeneous pool with a given model, drop
the positives, and build two sets:

* **C1 — wrong modality**: retrieved candidates whose modality differs from the positive's (the task's
  desired modality). They teach the model to respect the instruction's modality.
* **C2 — right modality, ranked below M**: candidates of the desired modality at rank > ``M`` (1-based);
  skipping the top ``M`` avoids unlabelled positives (false negatives).

``count`` negatives are drawn per query (``mix``: ``union`` = uniformly from C1 ∪ C2, ``wrong_modality`` =
C1 first, ``right_modality`` = C2 first); a query with both sets empty gets random candidates of the desired
modality (never a positive). The result is written as M-BEIR query JSONL, each record unchanged except its
``neg_cand_list``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from omniret.data import mbeir
from omniret.data.jsonl import write_jsonl
from omniret.encoders.base import Encoder
from omniret.errors import DataError, OmniretError
from omniret.index.exact import topk_inner_product
from omniret.training.config import MineConfig, SourceConfig


@dataclass
class Mined:
    """Negatives of one query and where they came from."""

    c1: list[str]
    c2: list[str]
    negatives: list[str]
    fallback: bool = False


def modality_aware_sets(
    ranked: list[str], positives: set[str], want: str, modality: dict[str, str], top_n: int, min_rank: int
) -> tuple[list[str], list[str]]:
    """C1 and C2 for one query, in rank order. ``ranked`` = candidate ids by descending score."""
    c1, c2 = [], []
    for r, did in enumerate(ranked[:top_n], 1):
        if did in positives:
            continue
        if modality[did] != want:
            c1.append(did)
        elif r > min_rank:
            c2.append(did)
    return c1, c2


def choose(c1: list[str], c2: list[str], count: int, mix: str, rng: np.random.Generator) -> list[str]:
    """Pick up to ``count`` negatives from C1/C2 according to ``mix`` (see the module docstring)."""
    if mix == "union":
        pool = c1 + c2
        idx = rng.permutation(len(pool))[:count]
        return [pool[int(i)] for i in sorted(idx)]
    first, second = (c1, c2) if mix == "wrong_modality" else (c2, c1)
    return (first + second)[:count]


def mine(
    query_emb: np.ndarray,
    pool_emb: np.ndarray,
    pool_ids: list[str],
    pool_modality: list[str],
    positives: list[list[str]],
    cfg: MineConfig,
) -> list[Mined]:
    """Mine negatives for ``(Q, D)`` query embeddings against a ``(N, D)`` pool (rows aligned with the ids)."""
    modality = dict(zip(pool_ids, pool_modality, strict=True))
    index = {d: i for i, d in enumerate(pool_ids)}
    _, top = topk_inner_product(query_emb, pool_emb, cfg.top_n)
    rng = np.random.default_rng(cfg.seed)
    by_mod: dict[str, np.ndarray] = {m: np.flatnonzero(np.array(pool_modality) == m) for m in set(pool_modality)}
    out = []
    for qi, pos in enumerate(positives):
        missing = [d for d in pos if d not in index]
        if missing or not pos:
            raise DataError(f"query {qi}: positive {missing[0] if missing else '(none)'!r} is not in the pool")
        want = modality[pos[0]]
        ranked = [pool_ids[int(j)] for j in top[qi]]
        c1, c2 = modality_aware_sets(ranked, set(pos), want, modality, cfg.top_n, cfg.min_rank)
        negs = choose(c1, c2, cfg.count, cfg.mix, rng)
        fallback = False
        if not negs:
            cands = [pool_ids[int(j)] for j in by_mod[want] if pool_ids[int(j)] not in pos]
            negs = [cands[int(j)] for j in rng.permutation(len(cands))[: cfg.count]]
            fallback = True
        out.append(Mined(c1, c2, negs, fallback))
    return out


def _query_files(src: SourceConfig) -> list[Path]:
    if src.queries:
        q = Path(src.queries)
        return sorted(q.glob("*.jsonl")) if q.is_dir() else [q]
    return [t.query_file for t in mbeir.discover_tasks(src.path, src.split, src.tasks or None)]


def mine_source(encoder: Encoder, src: SourceConfig, out: str | os.PathLike, cfg: MineConfig,
                batch_size: int = 32, instruction_mode: str = "fixed", seed: int = 0) -> dict[str, Any]:
    """Mine every query file of an M-BEIR source into directory ``out`` (same file names).

    Queries are encoded with their task instruction (the instruction is what should steer the modality),
    looked up by :class:`~omniret.data.mbeir.QueryInstructions` exactly as training and evaluation do; the
    pool (``src.pool`` or the split's global pool) without one. Items come from
    :meth:`~omniret.data.mbeir.MBeirRecord.to_item`. Returns counts for the report.
    """
    root = Path(src.path)
    pool_file = Path(src.pool) if src.pool else mbeir.global_pool_file(root, src.split)
    pool = mbeir.read_pool(pool_file)
    if len(pool) <= cfg.min_rank:
        raise OmniretError(f"{pool_file}: {len(pool)} candidates, fewer than mine.min_rank={cfg.min_rank}")
    instructions = mbeir.QueryInstructions(root, instruction_mode, seed)
    pool_emb = encoder.encode_documents([r.to_item(root) for r in pool], batch_size=batch_size)
    modality = {r.id: r.modality for r in pool}
    out_dir = Path(out)
    stats = {"queries": 0, "with_c1": 0, "with_c2": 0, "fallback": 0, "negatives_wrong_modality": 0}
    for qfile in _query_files(src):
        read = list(mbeir.iter_queries(qfile))
        rows, recs = [obj for _, obj, _ in read], [rec for _, _, rec in read]
        for r in recs:
            if not r.pos or r.pos[0] not in modality:
                raise DataError(f"{qfile}: query {r.id!r} has no positive in the pool {pool_file}")
        items = [r.to_item(root, instructions(r, modality[r.pos[0]])) for r in recs]
        q_emb = encoder.encode_queries(items, batch_size=batch_size)
        mined = mine(q_emb, pool_emb, [r.id for r in pool], [r.modality for r in pool], [list(r.pos) for r in recs], cfg)
        for row, rec, m in zip(rows, recs, mined, strict=True):
            row["neg_cand_list"] = m.negatives
            want = modality[rec.pos[0]]
            stats["queries"] += 1
            stats["with_c1"] += bool(m.c1)
            stats["with_c2"] += bool(m.c2)
            stats["fallback"] += m.fallback
            stats["negatives_wrong_modality"] += sum(modality[d] != want for d in m.negatives)
        write_jsonl(out_dir / qfile.name, rows)
    return stats

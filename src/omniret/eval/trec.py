"""TREC run files: ``qid Q0 did rank score tag`` — the hand-over format anyone can re-score.

Ranks are 1-based and authoritative (ties in score were already broken by the search: lower pool index
first). Scores carry 6 decimals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from omniret.data.jsonl import iter_columns
from omniret.errors import DataError
from omniret.io import atomic_open

RUN_TAG = "omniret"


def write_trec(
    path: str | os.PathLike,
    run: Mapping[str, Sequence[tuple[str, float]]],
    tag: str = RUN_TAG,
    depth: int = 100,
) -> Path:
    """Write ``run`` (``qid -> [(did, score), ...]`` best first) keeping the top ``depth`` per query."""
    with atomic_open(path) as f:
        for qid, ranked in run.items():
            for rank, (did, score) in enumerate(ranked[:depth], 1):
                f.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")
    return Path(path)


def read_trec(path: str | os.PathLike) -> dict[str, list[tuple[str, float]]]:
    """Read a run back as ``qid -> [(did, score), ...]`` ordered by the rank column."""
    rows: dict[str, list[tuple[int, str, float]]] = {}
    for where, (qid, _, did, rank_s, score_s, _tag) in iter_columns(path, 6, "qid Q0 did rank score tag"):
        try:
            rank, score = int(rank_s), float(score_s)
        except ValueError:
            raise DataError(f"{where}: rank must be an integer and score a number") from None
        rows.setdefault(qid, []).append((rank, did, score))
    return {q: [(d, s) for _, d, s in sorted(r)] for q, r in rows.items()}

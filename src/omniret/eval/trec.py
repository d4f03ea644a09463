"""TREC run files: ``qid Q0 did rank score tag`` — the hand-over format anyone can re-score.

Ranks are 1-based and authoritative (ties in score were already broken by the search: lower pool index
first). Scores carry 6 decimals.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from omniret.errors import DataError

RUN_TAG = "omniret"


def write_trec(
    path: str | os.PathLike,
    run: Mapping[str, Sequence[tuple[str, float]]],
    tag: str = RUN_TAG,
    depth: int = 100,
) -> Path:
    """Write ``run`` (``qid -> [(did, score), ...]`` best first) keeping the top ``depth`` per query."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for qid, ranked in run.items():
            for rank, (did, score) in enumerate(ranked[:depth], 1):
                f.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")
    os.replace(tmp, p)
    return p


def read_trec(path: str | os.PathLike) -> dict[str, list[tuple[str, float]]]:
    """Read a run back as ``qid -> [(did, score), ...]`` ordered by the rank column."""
    p = Path(path)
    rows: dict[str, list[tuple[int, str, float]]] = {}
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise DataError(f"{p}:{n}: expected 'qid Q0 did rank score tag', got {line.strip()!r}")
            try:
                rank, score = int(parts[3]), float(parts[4])
            except ValueError:
                raise DataError(f"{p}:{n}: rank must be an integer and score a number") from None
            rows.setdefault(parts[0], []).append((rank, parts[2], score))
    return {q: [(d, s) for _, d, s in sorted(r)] for q, r in rows.items()}

"""The one relevance-judgement reader, for the three layouts retrieval data ships in.

* M-BEIR (UniIR ``load_qrel``): ``<qid> 0 <did> <rel> <task_id>`` space separated;
* TREC: ``<qid> 0 <did> <rel>``;
* BEIR: ``query-id<TAB>corpus-id<TAB>score`` with an optional header row.

The layout is recognised by the field count of the first judgement line, and every later line must have
the same count (tab-separated lines split on tabs only, so BEIR ids may hold spaces). Grades are integers (BEIR's ``1.0`` is accepted); only grades > 0 are relevant, and lines with
grade <= 0 are dropped unless ``keep_nonrelevant`` (training uses judged non-relevant documents as hard
negatives).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from omniret.errors import DataError

LAYOUTS = "'<qid> 0 <did> <rel> <task_id>', '<qid> 0 <did> <rel>' or '<qid><TAB><did><TAB><score>'"


@dataclass
class Qrels:
    """``rel[qid][did] = grade`` and, for M-BEIR lines, the task id of every judged qid."""

    rel: dict[str, dict[str, int]] = field(default_factory=dict)
    task_of: dict[str, int] = field(default_factory=dict)


def _number(s: str) -> int | None:
    try:
        return int(s)
    except ValueError:
        try:
            v = float(s)
        except ValueError:
            return None
        return int(v) if v.is_integer() else None


def _fields(line: str) -> list[str]:
    return [p.strip() for p in line.rstrip("\r\n").split("\t")] if "\t" in line else line.split()


def _columns(parts: list[str], where: str, line: str) -> tuple[str, str, str, str | None]:
    """``(qid, did, grade, task_id or None)`` of one line in any of the three layouts."""
    if len(parts) == 3:
        return parts[0], parts[1], parts[2], None
    if len(parts) in (4, 5):
        return parts[0], parts[2], parts[3], parts[4] if len(parts) == 5 else None
    raise DataError(f"{where}: expected {LAYOUTS}, got {line.strip()!r}")


def read_qrels(path: str | os.PathLike, *, keep_nonrelevant: bool = False, into: Qrels | None = None) -> Qrels:
    """Judgements of ``path`` (added to ``into`` when given). A malformed line raises :class:`DataError`
    naming ``file:line``; a header is recognised only as the first line with a non-numeric grade."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such qrels file")
    q = into if into is not None else Qrels()
    first, width = True, 0
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = _fields(line)
            if not parts or not any(parts):
                continue
            where = f"{p}:{n}"
            if width and len(parts) != width:
                raise DataError(f"{where}: expected {width} fields like the lines before, got {line.strip()!r}")
            qid, did, grade_s, task_s = _columns(parts, where, line)
            grade = _number(grade_s)
            if grade is None and first and len(parts) == 3:
                first = False
                continue  # BEIR header row
            first, width = False, len(parts)
            task = _number(task_s) if task_s is not None else None
            if grade is None or (task_s is not None and task is None):
                raise DataError(f"{where}: relevance and task_id must be integers, got {line.strip()!r}")
            if grade > 0 or keep_nonrelevant:
                q.rel.setdefault(qid, {})[did] = grade
                if task is not None and grade > 0:
                    q.task_of[qid] = task
    return q

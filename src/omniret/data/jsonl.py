"""Line-numbered JSONL / TSV reading: every malformed row is a :class:`DataError` naming file and line."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from omniret.errors import DataError
from omniret.io import atomic_open


def _open(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    return p


def iter_jsonl(
    path: str | os.PathLike, on_error: Callable[[str, str], None] | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for every non-blank line; a line that is not UTF-8 or not a JSON
    object raises :class:`DataError` with ``file:line`` — or, given ``on_error(where, reason)``, is reported
    to it and skipped."""
    p = _open(path)

    def bad(where: str, reason: str) -> None:
        if on_error is None:
            raise DataError(f"{where}: {reason}")
        on_error(where, reason)

    with p.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                bad(f"{p}:{n}", f"not UTF-8 ({e.reason} at byte {e.start})")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                bad(f"{p}:{n}", f"invalid JSON ({e.msg})")
                continue
            if not isinstance(obj, dict):
                bad(f"{p}:{n}", f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield n, obj


def iter_columns(path: str | os.PathLike, width: int, layout: str) -> Iterator[tuple[str, list[str]]]:
    """Yield ``("file:line", fields)`` for every non-blank row of a whitespace-separated table (qrels, TREC
    runs); a row without exactly ``width`` fields raises :class:`DataError` quoting the expected ``layout``."""
    p = Path(path)
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != width:
                raise DataError(f"{p}:{n}: expected {layout!r}, got {line.strip()!r}")
            yield f"{p}:{n}", parts


def field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str, *, optional: bool = False) -> Any:
    """``obj[key]`` checked against ``kind``; ``where`` is ``"file:line"`` for the error message.

    With ``optional=True`` a missing key or ``null`` returns ``None``.
    """
    val = obj.get(key)
    if val is None:
        if optional:
            return None
        raise DataError(f"{where}: missing required field {key!r}")
    if not isinstance(val, kind) or isinstance(val, bool) and kind is not bool:
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise DataError(f"{where}: field {key!r} must be {name}, got {type(val).__name__}")
    return val


def write_jsonl(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as UTF-8 JSONL (one object a line) atomically, creating parent directories."""
    with atomic_open(path) as f:  # a crash mid-write leaves the previous file intact
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")

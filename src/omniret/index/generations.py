"""Generation directories of an index, and which of them a save may delete.

A generation is ``gen-NNNNNN-XXXXXXXX`` (6 digits, 8 hex). Its first file is an owner marker
(``.omniret-generation``) holding the index's random ``index_id``. A save deletes only

* the generation the previous manifest named (the index recorded it), and
* directories with the exact generation name pattern whose marker holds this index's id (leftovers of
  crashed saves), or that are empty (a crash between ``mkdir`` and writing the marker).

A user's ``gen-2023-photos/`` (wrong pattern) or a look-alike without our marker is never touched.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from omniret.errors import DataError
from omniret.io import fsync_path, write_durable

GEN_PREFIX = "gen-"
GEN_PATTERN = re.compile(r"gen-(\d{6})-[0-9a-f]{8}")
OWNER_MARKER = ".omniret-generation"
#: files an index directory may hold besides generations; anything else makes it "not an index folder"
LOCK_AND_TEMPS = re.compile(r"\.omniret\.lock|\.manifest\.json\..*\.tmp|manifest\.json")


def check_generation_name(name: object, where: str | os.PathLike) -> str:
    """``name`` if it is a generation directory name (so a manifest can never point outside its index)."""
    if not isinstance(name, str) or not GEN_PATTERN.fullmatch(name):
        raise DataError(f"{where}: generation {name!r} is not a generation name of this index (gen-NNNNNN-xxxxxxxx)")
    return name


def new_index_id() -> str:
    return secrets.token_hex(8)


def new_generation_dir(index_dir: Path, previous: str | None, index_id: str) -> Path:
    """Create a fresh generation directory numbered after ``previous`` and mark it as ``index_id``'s."""
    m = GEN_PATTERN.fullmatch(previous or "")
    n = int(m.group(1)) + 1 if m else 0
    # the random suffix keeps a stray partial directory from an earlier crash from ever being reused
    gen = index_dir / f"{GEN_PREFIX}{n % 1_000_000:06d}-{secrets.token_hex(4)}"
    gen.mkdir()
    write_durable(gen / OWNER_MARKER, index_id.encode())
    fsync_path(index_dir)  # the new directory entry is durable before any manifest can name it
    return gen


def owner_of(gen: Path) -> str | None:
    """The index id in ``gen``'s owner marker, or ``None`` without a readable marker."""
    try:
        return (gen / OWNER_MARKER).read_text(encoding="ascii").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def owned_stale(index_dir: Path, live: str, previous: str | None, index_id: str) -> list[Path]:
    """Generation directories of ``index_dir`` that a save of ``index_id`` may delete (never ``live``)."""
    out = []
    for p in index_dir.iterdir():
        if p.name == live or not GEN_PATTERN.fullmatch(p.name) or p.is_symlink() or not p.is_dir():
            continue
        if p.name == previous or owner_of(p) == index_id or not any(p.iterdir()):
            out.append(p)
    return out


def remove_stale(index_dir: Path, live: str, previous: str | None, index_id: str) -> None:
    """Delete the generations this index owns other than ``live``, and stray temporary manifests."""
    for p in owned_stale(index_dir, live, previous, index_id):
        remove_generation(p)
    for p in index_dir.glob(".manifest.json.*.tmp"):
        p.unlink(missing_ok=True)


def remove_generation(gen: Path) -> None:
    """Delete generation ``gen`` with its owner marker LAST, so a crash half-way leaves a directory that is
    still recognisably ours (marker present) or empty — either way the next save finishes the job."""
    for p in gen.iterdir():
        if p.name == OWNER_MARKER:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    (gen / OWNER_MARKER).unlink(missing_ok=True)
    try:
        gen.rmdir()
    except OSError:
        pass  # something appeared inside meanwhile: leave it


def foreign_entries(index_dir: Path) -> list[str]:
    """Names in ``index_dir`` that no omniret index would have put there (empty for an index folder)."""
    if not index_dir.is_dir():
        return []
    out = []
    for p in index_dir.iterdir():
        if LOCK_AND_TEMPS.fullmatch(p.name):
            continue
        if GEN_PATTERN.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
            if owner_of(p) is not None or not any(p.iterdir()):
                continue
        out.append(p.name)
    return sorted(out)

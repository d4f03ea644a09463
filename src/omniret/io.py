"""Crash-safe file writes (the one helper every index, manifest, checkpoint, cache, report and config uses)
and safe reads of user files (regular files only, size-capped, never blocking on a FIFO).

A write goes to a uniquely named temporary file in the target's directory, is flushed and fsynced, then
``os.replace``-d over the target and the directory entry is fsynced. A crash (even ``kill -9``) at any
moment leaves either the complete old file or the complete new one, never a mix; a failed write removes
its temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from omniret.errors import DataError

TMP_SUFFIX = ".tmp"
MAX_TEXT_BYTES = 8 * 1024 * 1024
MAX_IMAGE_BYTES = 256 * 1024 * 1024


def fsync_path(path: str | os.PathLike) -> None:
    """Persist a file's data or a directory's entries; a no-op where the platform cannot open it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic there
    finally:
        os.close(fd)


def temp_sibling(path: Path) -> Path:
    """A fresh hidden temporary name beside ``path`` (unique per process and call)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")


def write_durable(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to a NEW file ``path`` and fsync it (no rename: for files inside a fresh directory
    that is itself published atomically)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s new content to (for writers that take a path, such as
    ``safetensors.save_file``); on success it is fsynced and renamed over ``path``, on error deleted."""
    target = Path(path)
    if mkdir:
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(target)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    fsync_path(target.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, encoding: str = "utf-8") -> Iterator[IO[Any]]:
    """Open a temporary file for streaming writes (``"w"`` text or ``"wb"`` binary); it replaces ``path``
    only when the ``with`` block ends without an exception."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path) as tmp:
        kw: dict[str, Any] = {} if "b" in mode else {"encoding": encoding, "newline": "\n"}
        with open(tmp, mode, **kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomically replace ``path`` with ``data``; returns ``path``."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomically replace ``path`` with UTF-8 ``text``; returns ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2, **dumps: Any) -> Path:
    """Atomically replace ``path`` with ``obj`` as JSON (plus a final newline); returns ``path``."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **dumps) + "\n")


def atomic_write_with(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Atomically replace ``path`` with whatever ``write(tmp_path)`` writes to the temporary path."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


# ----------------------------------------------------------------------------- safe reads
def display(path: object) -> str:
    """``path`` as printable text: undecodable bytes of a non-UTF-8 name become ``\\xNN`` escapes."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_regular(path: Path, cap: int) -> str | None:
    """Why ``path`` must not be read (not a regular file, too large, unreadable), or ``None`` when it is fine."""
    try:
        st = os.stat(path)
    except OSError as e:
        return f"cannot read ({e.strerror or e})"
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file ({_kind(st.st_mode)})"
    if st.st_size > cap:
        return f"{st.st_size} bytes exceeds the size cap of {cap} bytes"
    return None


def read_capped(path: Path, cap: int) -> bytes:
    """The bytes of regular file ``path`` (at most ``cap``); a :class:`DataError` otherwise — never blocks."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as e:
        if e.errno == errno.ENXIO:  # a FIFO or socket with no writer
            raise DataError(f"{display(path)}: not a regular file") from None
        raise DataError(f"{display(path)}: cannot read ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DataError(f"{display(path)}: not a regular file ({_kind(st.st_mode)})")
        if st.st_size > cap:
            raise DataError(f"{display(path)}: {st.st_size} bytes exceeds the size cap of {cap} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(cap + 1)
    except OSError as e:
        raise DataError(f"{display(path)}: cannot read ({e.strerror or e})") from None
    finally:
        os.close(fd)
    if len(data) > cap:  # grew after the fstat
        raise DataError(f"{display(path)}: exceeds the size cap of {cap} bytes")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a plain file"

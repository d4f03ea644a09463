"""The writer lock of an index directory: one ``fcntl.flock`` on ``.omniret.lock``.

Only saves take it (a save applies its changes to the latest committed state, see
:meth:`omniret.index.FlatIndex.save`), so it is held for seconds. The kernel drops it when the holder dies,
even by ``kill -9``, so a crash never leaves a stale lock. The holder writes its pid/host/time into the file
so a writer that gives up can name who holds it.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from omniret.errors import OmniretError

LOCK_FILE = ".omniret.lock"
DEFAULT_TIMEOUT_S = float(os.environ.get("OMNIRET_LOCK_TIMEOUT", "120"))


class IndexLockedError(OmniretError):
    """Another process held the index's writer lock for longer than the timeout."""


class IndexLock:
    """``with IndexLock(index_dir):`` — exclusive writer lock, waiting up to ``timeout`` seconds."""

    def __init__(self, index_dir: str | os.PathLike, timeout: float | None = None) -> None:
        self.path = Path(index_dir) / LOCK_FILE
        self.timeout = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
        self._fd: int | None = None

    def __enter__(self) -> IndexLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = _read_holder(fd)
                    os.close(fd)
                    raise IndexLockedError(
                        f"{self.path.parent}: another writer holds the index lock ({holder}); "
                        f"gave up after {self.timeout:g}s"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
        holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"

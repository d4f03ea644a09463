"""Safe walking and reading of a corpus folder, with skip-and-report of every bad input.

Rules (each refusal is a :class:`Skip` naming the file and why; with ``strict`` it is a
:class:`~omniret.errors.DataError` instead):

* only regular files are read — a FIFO, socket or device is refused without ever being opened for a blocking
  read (opened with ``O_NONBLOCK``, checked with ``fstat`` on the open descriptor, so a swap between the check
  and the read cannot slip a FIFO in);
* a symlink (file or folder) whose target leaves the corpus root is refused unless ``follow_symlinks``;
  followed folders are visited once (no symlink loops);
* a file or folder name that is not valid UTF-8 is refused up front (it could not be stored in the index);
* text files above :data:`MAX_TEXT_BYTES` and images above :data:`MAX_IMAGE_BYTES` are refused.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from omniret.errors import DataError
from omniret.io import MAX_IMAGE_BYTES, MAX_TEXT_BYTES, check_regular, display, read_capped  # noqa: F401


@dataclass(frozen=True)
class Skip:
    """One input left out of a run: ``where`` (a path or ``file:line``) and ``reason``."""

    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass
class SkipReport:
    """Collects skipped inputs; with ``strict=True`` the first one raises :class:`DataError` instead."""

    strict: bool = False
    skipped: list[Skip] = field(default_factory=list)

    def skip(self, where: object, reason: str) -> None:
        s = Skip(display(where), reason)
        if self.strict:
            raise DataError(str(s))
        self.skipped.append(s)


def utf8_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _admit(dirpath: str, name: str, what: str, base: str, follow: bool, report: SkipReport) -> bool:
    """Whether the walk keeps ``name`` (a ``"file"`` or ``"folder"`` in ``dirpath``); hidden names are left out
    silently, unsafe ones are recorded in ``report``."""
    if name.startswith("."):
        return False
    full = os.path.join(dirpath, name)
    if not utf8_name(name):
        fix = "index its files" if what == "folder" else "index it"
        report.skip(full, f"{what} name is not valid UTF-8; rename it to {fix}")
        return False
    if os.path.islink(full) and not follow and not _inside(os.path.realpath(full), base):
        lead = "symlinked folder" if what == "folder" else "symlink"
        hint = "pass --follow-symlinks" if what == "folder" else "pass --follow-symlinks to follow it"
        report.skip(full, f"{lead} leads outside the corpus folder ({hint})")
        return False
    return True


def walk(root: Path, report: SkipReport, follow_symlinks: bool = False) -> list[Path]:
    """Every non-hidden candidate file under the resolved ``root``, sorted by relative path.

    Hidden (dot) files and folders are left out silently (they are not documents); everything refused
    for safety is recorded in ``report``.
    """
    base = str(root)
    out: list[Path] = []
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_symlinks):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a followed symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames[:] = [d for d in sorted(dirnames) if _admit(dirpath, d, "folder", base, follow_symlinks, report)]
        out += [Path(dirpath, f) for f in filenames if _admit(dirpath, f, "file", base, follow_symlinks, report)]
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())

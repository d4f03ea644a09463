"""Fetch a Debian package's files without root: ``apt-get download`` + ``dpkg -x`` into a cache directory.

Real offline data sets (emoji font, clip art, WordNet) ship as Debian packages. Unpacking them into a cache
lets builders read the files without installing anything system-wide.

Cache layout (``cache_dir`` is usually ``~/.cache/omniret/debian``)::

    cache_dir/
      NAME_VERSION_ARCH.deb      the downloaded archive
      NAME/                      its extracted tree (``usr/share/...``)
      NAME/.omniret-extracted    marker written last; names the .deb it came from
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from omniret.errors import OmniretError

_MARKER = ".omniret-extracted"
# Debian package names: lower-case alphanumerics and + - . (policy 5.6.1); also keeps the shell call safe
_VALID_NAME = re.compile(r"^[a-z0-9][a-z0-9+.\-]+$")


class DebianFetchError(OmniretError):
    """apt-get or dpkg is missing, or downloading / unpacking a package failed."""


def default_cache_dir() -> Path:
    """``~/.cache/omniret/debian``: where builders keep downloaded packages."""
    return Path.home() / ".cache" / "omniret" / "debian"


def _run(cmd: list[str], cwd: Path, package: str) -> None:
    tool = cmd[0]
    if shutil.which(tool) is None:
        raise DebianFetchError(
            f"{package}: `{tool}` is not available; fetching Debian packages needs a Debian/Ubuntu system "
            f"with apt-get and dpkg"
        )
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as e:
        raise DebianFetchError(f"{package}: `{' '.join(cmd)}` timed out") from e
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {proc.returncode}"
        raise DebianFetchError(f"{package}: `{' '.join(cmd)}` failed: {last}")


def _find_deb(cache_dir: Path, package: str) -> Path | None:
    debs = sorted(cache_dir.glob(f"{package}_*.deb"))
    return debs[-1] if debs else None


def fetch_deb(package: str, cache_dir: Path | None = None) -> Path:
    """Download and unpack Debian ``package``; return the directory holding its extracted file tree.

    Idempotent: an existing complete extraction is reused without touching apt. A half-finished one
    (no marker) is removed and redone.

    Raises:
        DebianFetchError: the name is invalid, apt-get/dpkg is missing, or a command fails.
    """
    if not _VALID_NAME.match(package):
        raise DebianFetchError(f"{package!r}: not a valid Debian package name")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / package
    if (target / _MARKER).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    deb = _find_deb(cache, package)
    if deb is None:
        _run(["apt-get", "download", package], cache, package)
        deb = _find_deb(cache, package)
        if deb is None:
            raise DebianFetchError(f"{package}: apt-get reported success but no {package}_*.deb is in {cache}")
    if target.exists():
        shutil.rmtree(target)
    # extract into a temporary sibling, then rename: a crash never leaves a half tree that looks complete
    tmp = cache / f".{package}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    _run(["dpkg", "-x", str(deb), str(tmp)], cache, package)
    (tmp / _MARKER).write_text(deb.name + "\n")
    tmp.rename(target)
    return target

"""Fetch an npm package's files without installing it: ``npm pack`` + ``tar`` into a cache directory.

Emoji in other designs and icon sets ship as npm packages (images plus JSON metadata). Like
:mod:`omniret.data.builders.debian`, the unpacked tree is renamed into place only when complete, with a
marker file written last, so an interrupted fetch is redone rather than half used.

Cache layout (``cache_dir`` is usually ``~/.cache/omniret/npm``)::

    cache_dir/NAME@VERSION.tgz       the packed archive (scoped names: '/' becomes '__')
    cache_dir/NAME@VERSION/package/  its extracted tree, with .omniret-extracted
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
from pathlib import Path

from omniret.data.builders.debian import DebianFetchError

_MARKER = ".omniret-extracted"
# npm package names: optional @scope/, then lower-case URL-safe characters; also keeps the subprocess call safe
_VALID = re.compile(r"^(@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*$")
_VERSION = re.compile(r"^[0-9][0-9A-Za-z.+-]*$")


class NpmFetchError(DebianFetchError):
    """npm is missing, or packing / unpacking a package failed."""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "omniret" / "npm"


def fetch_npm(package: str, version: str, cache_dir: Path | None = None) -> Path:
    """Download and unpack ``package@version``; return its ``package/`` directory (idempotent)."""
    if not _VALID.match(package) or not _VERSION.match(version):
        raise NpmFetchError(f"{package!r}@{version!r}: not a valid npm package name and version")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    slug = f"{package.replace('/', '__')}@{version}"
    target = cache / slug
    if (target / _MARKER).is_file():
        return target / "package"
    if shutil.which("npm") is None:
        raise NpmFetchError(f"{package}: `npm` is not available to fetch it (install Node.js and npm)")
    cache.mkdir(parents=True, exist_ok=True)
    work = cache / f".{slug}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        proc = subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=work,
                              capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired as e:
        raise NpmFetchError(f"{package}@{version}: `npm pack` timed out") from e
    tgz = sorted(work.glob("*.tgz"))
    if proc.returncode != 0 or not tgz:
        last = (proc.stderr or proc.stdout or f"exit status {proc.returncode}").strip().splitlines()[-1:]
        raise NpmFetchError(f"{package}@{version}: `npm pack` failed: {' '.join(last)}")
    with tarfile.open(tgz[0]) as tar:
        tar.extractall(work, filter="data")  # the "data" filter refuses absolute paths and links outside
    tgz[0].unlink()
    (work / _MARKER).write_text(f"{package}@{version}\n")
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    return target / "package"

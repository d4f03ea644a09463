"""The index manifest (``manifest.json``) and the crash-safe file writes every save goes through.

An index directory looks like::

    my-index/
      manifest.json          <- names the live generation; replaced atomically (os.replace)
      gen-000003-1a2b3c4d/   <- the live generation: vectors.npy, records.jsonl[, hnsw.faiss]

A save writes a complete new generation directory, fsyncs it, then swaps the manifest. A crash at any point
leaves the old manifest pointing at the old, complete generation; stray partial generations are ignored on
open and deleted by the next successful save.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omniret.errors import DataError, IndexMismatchError, OmniretError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
GEN_PREFIX = "gen-"
KINDS = ("flat", "hnsw", "ivfpq")
METRIC = "ip"  # inner product on L2-normalised vectors (= cosine)


@dataclass
class Manifest:
    """What an index directory holds and which encoder built it."""

    encoder_name: str
    recipe_hash: str
    dim: int
    kind: str = "flat"
    metric: str = METRIC
    count: int = 0
    #: how to reload the encoder with :func:`omniret.load_encoder` (registered name or model directory)
    encoder_ref: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    generation: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, index_dir: str | os.PathLike) -> Manifest:
        """Read ``index_dir/manifest.json``; a missing or malformed manifest is an :class:`OmniretError`."""
        path = Path(index_dir) / MANIFEST
        if not path.is_file():
            raise OmniretError(f"{index_dir}: not an omniret index (no {MANIFEST})")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}: unreadable manifest ({e})") from e
        if not isinstance(raw, dict):
            raise DataError(f"{path}: manifest must be a JSON object")
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(f"{path}: index format version {version!r}; this omniret reads {FORMAT_VERSION}")
        known = set(cls.__dataclass_fields__)
        try:
            return cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as e:
            raise DataError(f"{path}: manifest is missing fields ({e})") from e

    def check_encoder(self, name: str, recipe_hash: str, where: str | os.PathLike = "index") -> None:
        """Raise :class:`IndexMismatchError` unless ``name`` and ``recipe_hash`` are the ones that built it."""
        if name != self.encoder_name or recipe_hash != self.recipe_hash:
            raise IndexMismatchError(
                f"{where}: built with encoder {self.encoder_name!r} (recipe {self.recipe_hash}), "
                f"but queried with {name!r} (recipe {recipe_hash}); re-index with this encoder or open the "
                f"index with the encoder that built it"
            )


# ----------------------------------------------------------------------------- crash-safe writes
def fsync_dir(path: Path) -> None:
    """Persist a directory entry (new/renamed files); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it before returning."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def new_generation_dir(index_dir: Path, previous: str | None) -> Path:
    """Create a fresh, uniquely named generation directory (numbered after ``previous``)."""
    n = 0
    if previous and previous.startswith(GEN_PREFIX):
        try:
            n = int(previous[len(GEN_PREFIX) :].split("-")[0]) + 1
        except ValueError:
            n = 0
    # the random suffix keeps a stray partial directory from an earlier crash from ever being reused
    gen = index_dir / f"{GEN_PREFIX}{n:06d}-{secrets.token_hex(4)}"
    gen.mkdir(parents=True)
    return gen


def publish(index_dir: Path, manifest: Manifest) -> None:
    """Atomically make ``manifest`` (and the generation it names) the live state of ``index_dir``."""
    tmp = index_dir / f".{MANIFEST}.{secrets.token_hex(4)}.tmp"
    write_file(tmp, manifest.to_json().encode("utf-8"))
    os.replace(tmp, index_dir / MANIFEST)
    fsync_dir(index_dir)


def remove_stale(index_dir: Path, live: str) -> None:
    """Delete every generation directory and temp manifest except the live generation."""
    import shutil

    for p in index_dir.iterdir():
        if p.name.startswith(GEN_PREFIX) and p.name != live and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.name.startswith(f".{MANIFEST}.") and p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)

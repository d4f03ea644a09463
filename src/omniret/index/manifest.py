"""The index manifest (``manifest.json``) and the crash-safe file writes every save goes through.

An index directory looks like::

    my-index/
      manifest.json          <- names the live generation; replaced atomically (os.replace)
      gen-000003-1a2b3c4d/   <- the live generation: vectors.npy, records.jsonl[, hnsw.faiss]

A save writes a complete new generation directory, fsyncs it, then swaps the manifest. A crash at any point
leaves the old manifest pointing at the old, complete generation; stray partial generations are ignored on
open and deleted by the next successful save — only those this index provably wrote (see
:mod:`omniret.index.generations`). The manifest carries a SHA-256 of every generation file, checked at open.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omniret.errors import DataError, IndexMismatchError, OmniretError
from omniret.index.ann import ANNParams
from omniret.index.generations import check_generation_name
from omniret.io import atomic_write_text

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
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
    #: random id of this index; generation directories carry it in their owner marker
    index_id: str | None = None
    #: SHA-256 hex digest of each file of the live generation, by file name
    checksums: dict[str, str] = field(default_factory=dict)

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
            m = cls(**{k: v for k, v in raw.items() if k in known})
        except TypeError as e:
            raise DataError(f"{path}: manifest is missing fields ({e})") from e
        m._validate(path)
        return m

    def _validate(self, path: Path) -> None:
        """Refuse values that would make open read outside the index or misread its files."""
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            raise DataError(f"{path}: dim must be a positive integer, got {self.dim!r}")
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 0:
            raise DataError(f"{path}: count must be a non-negative integer, got {self.count!r}")
        if self.kind not in KINDS:
            raise DataError(f"{path}: unknown index kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if not isinstance(self.params, dict) or not isinstance(self.checksums, dict):
            raise DataError(f"{path}: params and checksums must be JSON objects")
        if self.generation is not None:
            check_generation_name(self.generation, path)
        try:
            ANNParams.from_dict(self.params)
        except (OmniretError, TypeError, ValueError) as e:
            raise DataError(f"{path}: bad index parameters ({e})") from None

    def check_encoder(self, name: str, recipe_hash: str, where: str | os.PathLike = "index") -> None:
        """Raise :class:`IndexMismatchError` unless ``name`` and ``recipe_hash`` are the ones that built it."""
        if name != self.encoder_name or recipe_hash != self.recipe_hash:
            raise IndexMismatchError(
                f"{where}: built with encoder {self.encoder_name!r} (recipe {self.recipe_hash}), "
                f"but queried with {name!r} (recipe {recipe_hash}); re-index with this encoder or open the "
                f"index with the encoder that built it"
            )


# ----------------------------------------------------------------------------- publishing
def publish(index_dir: Path, manifest: Manifest) -> None:
    """Atomically make ``manifest`` (and the generation it names) the live state of ``index_dir``."""
    atomic_write_text(index_dir / MANIFEST, manifest.to_json())

"""Vectors + records as numbered shards with a manifest: the hand-over format between pipeline stages.

``omniret export`` writes an index as shards, ``omniret import`` loads shards into any backend, and the Ray
encoding engine writes its output as shards (so a killed job resumes from the shards it finished)::

    out/
      shards.json                 <- index manifest, per-shard counts, "complete"; replaced atomically
      part-00000.npy              <- (n, D) float32 vectors (numpy format, no pickle)
      part-00000.jsonl            <- n Records, same order

A shard's files are written to temporary names, fsynced and renamed before ``shards.json`` lists the shard,
so a listed shard is always whole and an unlisted one is ignored (and overwritten on resume).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from omniret.errors import DataError, OmniretError
from omniret.index.base import PAGE_SIZE, Index, Record
from omniret.index.manifest import Manifest
from omniret.io import atomic_open, atomic_write_bytes

SHARDS = "shards.json"
FORMAT = "omniret-shards"
VERSION = 1


class ShardWriter:
    """Writes shards into ``root`` and keeps ``shards.json`` current after each one."""

    def __init__(
        self, root: str | os.PathLike, manifest: Manifest, resume: bool = False, key: str | None = None
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest, self.key = manifest, key
        self.shards: dict[int, int] = {}
        if resume and (self.root / SHARDS).is_file():
            state = read_state(self.root)
            old = Manifest(**state["manifest"])
            if (old.encoder_name, old.recipe_hash, old.dim) != (manifest.encoder_name, manifest.recipe_hash, manifest.dim):
                raise OmniretError(f"{self.root}: holds shards of encoder {old.encoder_name!r}; use another directory")
            if state.get("key") != key:
                raise OmniretError(f"{self.root}: holds shards of another job (different items); use another directory")
            self.shards = {int(s["index"]): int(s["count"]) for s in state["shards"]}
        elif (self.root / SHARDS).is_file():
            raise OmniretError(f"{self.root}: already holds shards; pass resume or use an empty directory")

    def done(self, i: int) -> bool:
        return i in self.shards

    def write(self, i: int, vectors: np.ndarray, records: list[Record]) -> None:
        """Store shard ``i``: ``vectors`` ``(n, D)`` float32 with one record each."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape != (len(records), self.manifest.dim):
            raise DataError(f"shard {i}: vectors {v.shape} for {len(records)} records of dim {self.manifest.dim}")
        with atomic_open(self.root / f"part-{i:05d}.npy", "wb") as f:
            np.save(f, v, allow_pickle=False)
        lines = "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records)
        atomic_write_bytes(self.root / f"part-{i:05d}.jsonl", lines.encode("utf-8"))
        self.shards[i] = len(records)
        self._publish(complete=False)

    def finish(self) -> None:
        """Mark the set complete (every shard written)."""
        self._publish(complete=True)

    def _publish(self, complete: bool) -> None:
        self.manifest.count = sum(self.shards.values())
        state = {
            "format": FORMAT,
            "version": VERSION,
            "manifest": asdict(self.manifest),
            "shards": [{"index": i, "count": n} for i, n in sorted(self.shards.items())],
            "complete": complete,
            "key": self.key,
        }
        atomic_write_bytes(self.root / SHARDS, json.dumps(state, indent=1).encode("utf-8"))


def read_state(root: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``shards.json`` of ``root`` (a clear error when missing or not ours)."""
    path = Path(root) / SHARDS
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise OmniretError(f"{root}: not a shard directory (no {SHARDS})") from None
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: unreadable ({e})") from e
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise DataError(f"{path}: not an omniret shard manifest of version {VERSION}")
    return state


def iter_shards(root: str | os.PathLike) -> Iterator[tuple[np.ndarray, list[Record]]]:
    """``(vectors (n, D), records)`` of each listed shard of a complete set, in shard order."""
    root = Path(root)
    state = read_state(root)
    if not state.get("complete"):
        raise OmniretError(f"{root}: the shard set is incomplete (an interrupted job); resume it first")
    for s in state["shards"]:
        name = f"part-{int(s['index']):05d}"
        try:
            v = np.load(root / f"{name}.npy", allow_pickle=False)
            lines = (root / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError) as e:
            raise DataError(f"{root / name}: cannot read the shard ({e})") from e
        recs = [Record.from_dict(json.loads(line)) for line in lines]
        if len(recs) != len(v) or len(v) != int(s["count"]):
            raise DataError(f"{root / name}: {len(v)} vectors, {len(recs)} records, manifest says {s['count']}")
        yield v, recs


def shard_manifest(root: str | os.PathLike) -> Manifest:
    """The index manifest a shard set carries (encoder, recipe hash, dim)."""
    raw = read_state(root)["manifest"]
    return Manifest(**{k: v for k, v in raw.items() if k in Manifest.__dataclass_fields__})


def export_index(index: Index, out: str | os.PathLike, page_size: int = PAGE_SIZE) -> int:
    """Write every document of ``index`` (any backend) to shard directory ``out``; returns the count.

    Pages are streamed, so the index never has to fit in memory at once."""
    m = Manifest(**asdict(index.manifest))
    m.generation = None
    writer = ShardWriter(out, m)
    n = 0
    for i, (recs, vecs) in enumerate(index.iter_pages(page_size, vectors=True)):
        writer.write(i, vecs, recs)
        n += len(recs)
    writer.finish()
    return n


def import_index(
    src: str | os.PathLike, location: str | os.PathLike, backend: str = "local", kind: str | None = None, **options: Any
) -> Index:
    """A new ``backend`` index at ``location`` holding the shards of ``src`` (no re-encoding), saved.

    ``kind`` defaults to the backend's own default (``flat`` locally, ``hnsw`` in the databases)."""
    from omniret.index.backends import backend_class, create_index

    m = shard_manifest(src)
    m.kind = kind or backend_class(backend).default_kind
    m.count, m.generation, m.params = 0, None, {}
    index = create_index(location, m, backend, **options)
    for v, recs in iter_shards(src):
        index.add(v, recs)
    index.save()
    return index

"""Open and save of the embedded index: verified loads, locked saves that never lose a concurrent update.

A save, under the index's writer lock (:mod:`omniret.index.lock`):

1. reads the live manifest; if another writer saved since this index was opened (a different generation),
   loads that latest committed state and re-applies this index's own pending changes to it (its puts by id
   from its own rows, its removals), so two writers' updates both survive;
2. writes a complete new generation (owner marker first, then files, each fsynced; SHA-256 of each file);
3. atomically replaces the manifest (the commit point);
4. deletes only generations this index owns (:mod:`omniret.index.generations`).

Readers take no lock: a reader that races a save's cleanup re-reads the manifest and retries.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from omniret.errors import DataError, IndexMismatchError, OmniretError
from omniret.index.ann import ANNGraph, ANNParams
from omniret.index.base import Record, scoped_id
from omniret.index.generations import foreign_entries, new_generation_dir, new_index_id, remove_stale
from omniret.index.lock import IndexLock
from omniret.index.manifest import MANIFEST, Manifest, publish
from omniret.index.storage import read_graph, read_records, read_vectors, write_generation

if TYPE_CHECKING:
    from omniret.index.flat import FlatIndex

_OPEN_RETRIES = 8


def load_state(root: Path) -> tuple[Manifest, np.ndarray, list[Record], ANNGraph | None]:
    """The verified live state of index ``root``: manifest, vectors ``(N, D)``, records, ANN structure or None."""
    for _ in range(_OPEN_RETRIES):
        m = Manifest.read(root)
        try:
            return (m, *_load_generation(root, m))
        except DataError:
            # a concurrent save may have published a new generation and deleted this one: retry on that
            if Manifest.read(root).generation == m.generation:
                raise
    raise OmniretError(f"{root}: the index kept changing while it was being read; try again")


def _load_generation(root: Path, m: Manifest) -> tuple[np.ndarray, list[Record], ANNGraph | None]:
    if m.generation is None:
        if m.count:
            raise DataError(f"{root / MANIFEST}: {m.count} documents but no generation")
        return np.zeros((0, m.dim), np.float32), [], None
    gen = root / m.generation
    if gen.is_symlink() or not gen.is_dir():
        raise DataError(f"{gen}: the index generation directory is missing")
    vectors = read_vectors(gen, m.count, m.dim, m.checksums)
    records = read_records(gen, m.count, m.checksums)
    graph = None
    if m.kind != "flat":
        graph = read_graph(gen, m.count, m.dim, m.kind, ANNParams.from_dict(m.params), m.checksums)
    return vectors, records, graph


def save_index(index: FlatIndex, root: Path) -> Path:
    """Persist ``index`` into ``root`` (see the module docstring); returns ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    with IndexLock(root, timeout=index.lock_timeout):
        current = Manifest.read(root) if (root / MANIFEST).is_file() else None
        if current is None:
            foreign = foreign_entries(root)
            if foreign:
                raise OmniretError(
                    f"{root}: folder is not empty and holds no omniret index ({', '.join(foreign[:3])}"
                    f"{', ...' if len(foreign) > 3 else ''}); index into a new or empty folder"
                )
        else:
            if index._base is None or index._base != (root.resolve(), current.generation):
                _rebase(index, root, current)
        _commit(index, root, current)
    return root


def _rebase(index: FlatIndex, root: Path, current: Manifest) -> None:
    """Make ``index`` the latest committed state of ``root`` plus ``index``'s own pending changes."""
    current.check_encoder(index.manifest.encoder_name, index.manifest.recipe_hash, root)
    if current.dim != index.dim:
        raise IndexMismatchError(f"{root}: index dim {current.dim}, this index has dim {index.dim}")
    if index._base is None or index._base[0] != root.resolve():
        pending = dict.fromkeys(index.ids(), True)  # a different (or new) directory: everything is new there
    else:
        pending = dict(index._pending)
    kind = index.kind if index._kind_changed or index._base is None else None
    puts = [i for i, put in pending.items() if put]
    rows = [index._rows[i] for i in puts]
    vectors, records = index._vectors[rows], [index._records[r] for r in rows]
    gone = [i for i, put in pending.items() if not put]
    _m, v, recs, graph = load_state(root)
    index._adopt(_m, v, recs, graph)
    records = [_keep_sources_apart(index, r) for r in records]
    if puts:
        index.upsert(vectors, records)
    index.remove(gone)
    if kind is not None:
        index.set_kind(kind)


def _keep_sources_apart(index: FlatIndex, rec: Record) -> Record:
    """``rec`` re-keyed with :func:`scoped_id` when the merged state holds its id for another source (two
    concurrent indexing runs of different folders with the same relative paths)."""
    src = rec.metadata.get("source")
    held = index.get(rec.id)
    if src is None or held is None or held.metadata.get("source") == src:
        return rec
    return dataclasses.replace(rec, id=scoped_id(str(src), rec.id))


def _commit(index: FlatIndex, root: Path, current: Manifest | None) -> None:
    index_id = index.manifest.index_id or (current.index_id if current else None) or new_index_id()
    previous = current.generation if current else None
    gen = new_generation_dir(root, previous, index_id)
    try:
        graph = index._ensure_graph().serialize() if index.kind != "flat" else None
        sums = write_generation(gen, index._vectors, index._records, graph)
        manifest = dataclasses.replace(
            index.manifest,
            generation=gen.name,
            count=len(index),
            updated=time.time(),
            params=vars(index.hnsw_params).copy(),
            index_id=index_id,
            checksums=sums,
        )
        publish(root, manifest)
    except BaseException:
        shutil.rmtree(gen, ignore_errors=True)  # best effort; a hard crash leaves it for the next save
        raise
    index.manifest = manifest
    index._base = (root.resolve(), gen.name)
    index._pending, index._kind_changed, index.dirty = {}, False, False
    remove_stale(root, gen.name, previous, index_id)

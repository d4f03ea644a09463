"""On-disk cache of candidate-pool embeddings, keyed by (encoder, pool file), so re-evaluating reuses them.

Key = encoder name + recipe hash (anything that changes embeddings changes it) + the pool file's absolute
path, size and mtime + the ids actually encoded (skipped candidates change the set). Each entry is an
``.npy`` matrix plus a ``.json`` sidecar naming what it holds; both are written atomically (temp + rename),
so an interrupted run never leaves a half file that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from omniret.io import atomic_write_with


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/omniret/emb`` (``~/.cache/omniret/emb``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "omniret" / "emb"


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", s).strip("_")[:60] or "x"


def precision_tag(encoder: object) -> str:
    """``""`` for fp32, else ``"-<precision>"``: precision is not part of a recipe (an fp32 index may be searched
    in int8), but cached evaluation embeddings must not mix precisions, or an int8 run would score fp32 ones."""
    precision = getattr(encoder, "precision", "fp32")
    return "" if precision == "fp32" else f"-{precision}"


def pool_key(model_key: str, pool_file: str | os.PathLike, ids: Sequence[str]) -> str:
    p = Path(pool_file).resolve()
    st = p.stat()
    h = hashlib.sha1()
    for part in (model_key, str(p), str(st.st_size), str(st.st_mtime_ns)):
        h.update(part.encode() + b"\x00")
    h.update("\n".join(ids).encode())
    return h.hexdigest()[:20]


def _atomic_save(path: Path, write: Callable[[Path], None]) -> None:
    atomic_write_with(path, write)


def cached_embeddings(
    cache_dir: str | os.PathLike | None,
    model_key: str,
    pool_file: str | os.PathLike,
    ids: Sequence[str],
    compute: Callable[[], np.ndarray],
) -> tuple[np.ndarray, bool]:
    """Embeddings ``(N, D)`` for the pool's ``ids``: loaded if cached, else ``compute()``-d and stored.

    ``cache_dir=None`` disables caching. Returns ``(embeddings, was_cached)``.
    """
    if cache_dir is None:
        return compute(), False
    key = pool_key(model_key, pool_file, ids)
    d = Path(cache_dir) / _slug(model_key)
    npy, meta = d / f"{_slug(Path(pool_file).stem)}-{key}.npy", d / f"{_slug(Path(pool_file).stem)}-{key}.json"
    if npy.is_file() and meta.is_file():
        emb = np.load(npy, mmap_mode="r", allow_pickle=False)  # large pools stay on disk until searched
        if emb.shape[0] == len(ids):
            return emb, True
    emb = np.ascontiguousarray(compute(), dtype=np.float32)
    d.mkdir(parents=True, exist_ok=True)

    def _write_npy(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, emb, allow_pickle=False)

    _atomic_save(npy, _write_npy)
    info = {"model": model_key, "pool_file": str(Path(pool_file).resolve()), "count": len(ids), "dim": emb.shape[1]}
    _atomic_save(meta, lambda tmp: tmp.write_text(json.dumps(info, indent=1)))
    return emb, False

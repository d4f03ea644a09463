"""Cost of the index's integrity checks: open with SHA-256 verification vs the same open without it.

A 100,000 x 384 flat index (random unit vectors) is saved once; it is then opened with its manifest's
checksums (the default: every file hashed, NaN/inf scan) and with the checksums removed from a copy of the
manifest (what an index written before checksums gets: shape and finite checks only). Also timed: a save
(lock, new generation, fsyncs, manifest swap, cleanup) and a save that must merge another writer's save.

    python benchmarks/bench_index_io.py [--n 100000] [--dim 384]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from omniret.index import FlatIndex, Record


def best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=384)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    v = rng.standard_normal((args.n, args.dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ix"
        ix = FlatIndex(args.dim, encoder_name="bench", recipe_hash="h", path=path)
        ix.add(v, [Record(id=f"d{i}", modality="text", txt=f"document {i}") for i in range(args.n)])
        t_save = best(lambda: (setattr(ix, "dirty", True), ix.save()), repeat=2)
        legacy = Path(tmp) / "legacy"
        shutil.copytree(path, legacy)
        m = json.loads((legacy / "manifest.json").read_text())
        m["checksums"] = {}
        (legacy / "manifest.json").write_text(json.dumps(m))
        t_verified = best(lambda: FlatIndex.open(path))
        t_plain = best(lambda: FlatIndex.open(legacy))
        a, b = FlatIndex.open(path), FlatIndex.open(path)
        a.add(v[:1] * 1, [Record(id="a-new", modality="text")])
        b.add(v[1:2] * 1, [Record(id="b-new", modality="text")])
        a.save()
        t0 = time.perf_counter()
        b.save()  # b's base is stale: it reloads a's save (verified) and re-applies its one add
        t_merge = time.perf_counter() - t0
        assert {"a-new", "b-new"} <= set(FlatIndex.open(path).ids())
    print(f"| {args.n:,} x {args.dim} | open, verified | open, unverified | ratio | save | save merging a concurrent save |")
    print("|---|---|---|---|---|---|")
    print(f"| seconds | {t_verified:.3f} | {t_plain:.3f} | {t_verified / t_plain:.2f} | {t_save:.3f} | {t_merge:.3f} |")


if __name__ == "__main__":
    main()

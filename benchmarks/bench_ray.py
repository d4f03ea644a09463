"""Ray Data encoding: 1 vs 2 encoder actors on a local Ray (``ray.init(num_cpus=N)``), with in-process
encoding of the same documents as the baseline, in one run.

    python benchmarks/bench_ray.py [--docs 600] [--images 60] [--cpus 2] [--batch 32] [--model default]

Documents: ``--docs`` text documents plus ``--images`` image documents (random 224x224 PNGs on disk, so the
CPU decode tasks have real work). Each actor gets ``--cpus / workers`` torch threads' worth of CPUs.
Reports documents/s per configuration and the 2-vs-1 speed-up; checks the vectors equal local encoding.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--images", type=int, default=60)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--model", default="default")
    args = ap.parse_args()

    import numpy as np
    import ray
    import torch
    from PIL import Image

    from omniret.encoders import load_encoder
    from omniret.index.shards import iter_shards
    from omniret.integrations.ray import encode_with_ray
    from omniret.types import Item

    work = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    rng = np.random.default_rng(0)
    items = [Item(f"document {i} is about topic {i % 17} and item {i * 7 % 101}", id=f"t{i}") for i in range(args.docs)]
    for i in range(args.images):
        p = work / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (224, 224, 3), dtype=np.uint8)).save(p)
        items.append(Item(image=str(p), id=f"i{i}"))
    enc = load_encoder(args.model)
    torch.set_num_threads(args.cpus)
    t = time.perf_counter()
    want = enc.encode_documents(items, batch_size=args.batch)
    rows = [{"engine": f"in-process ({args.cpus} torch threads)", "docs_per_s": len(items) / (time.perf_counter() - t)}]

    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    for workers in (1, 2):
        out = work / f"shards-{workers}"
        t = time.perf_counter()
        encode_with_ray(items, enc, out, workers=workers, cpus_per_worker=args.cpus // workers,
                        batch_size=args.batch, shard_size=128)
        dt = time.perf_counter() - t
        got = np.concatenate([v for v, _ in iter_shards(out)])
        err = float(np.abs(got - want).max())
        rows.append({"engine": f"ray, {workers} actor(s) x {args.cpus // workers} CPU", "docs_per_s": len(items) / dt,
                     "max_abs_diff_vs_local": err})
    ray.shutdown()
    for r in rows:
        r["docs_per_s"] = round(r["docs_per_s"], 1)
        print(json.dumps(r))
    print(f"2-vs-1 actor speed-up: {rows[2]['docs_per_s'] / rows[1]['docs_per_s']:.2f}x ({len(items)} documents)")


if __name__ == "__main__":
    main()

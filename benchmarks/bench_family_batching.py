"""Batched family encoding vs a naive per-item loop, on a small random Qwen2-VL (GME recipe).

The naive loop is what reference scripts do when called one item at a time: same model, same recipe, one
forward per item. The batched path is omniret's: length-sorted batches, background image decoding, one
forward per batch. Both must give the same embeddings (max |diff| is printed).

    .venv/bin/python benchmarks/bench_family_batching.py                 # CPU, 1 thread
    .venv/bin/python benchmarks/bench_family_batching.py --device cuda --precision bf16 --hidden 512 --n 256
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from omniret.encoders.tiny import build_scaled_qwen2vl, corpus_sentences, qwen_tokenizer  # noqa: E402
from tiny_models import random_image  # noqa: E402


def build_small_qwen2vl(out: Path, hidden: int, layers: int) -> Path:
    """A small random Qwen2-VL (still random weights; sizes chosen so compute, not Python, matters)."""
    return build_scaled_qwen2vl(out, qwen_tokenizer(), hidden, layers, vision_depth=2, vision_width=64,
                                max_pixels=112 * 112)


def make_items(n: int):
    from omniret import Item

    texts = corpus_sentences(n, seed=1)
    items = []
    for i, t in enumerate(texts):
        kind = i % 3
        if kind == 0:
            items.append(Item(t))
        elif kind == 1:
            items.append(Item(t, image=random_image(56 + 28 * (i % 3), 56, i)))
        else:
            items.append(Item(image=random_image(84, 56 + 28 * (i % 2), i)))
    return items


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--min-pixels", type=int, default=28 * 28)
    ap.add_argument("--max-pixels", type=int, default=112 * 112)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from omniret import load_encoder

    with tempfile.TemporaryDirectory() as tmp:
        path = build_small_qwen2vl(Path(tmp) / "m", args.hidden, args.layers)
        # small images (<= 16 visual tokens each): GME's own 256..1280-token range would make this a
        # vision-tower benchmark; here the sequence lengths resemble short captions + thumbnails
        enc = load_encoder(path, family="gme", device=args.device, precision=args.precision,
                           min_pixels=args.min_pixels, max_pixels=args.max_pixels)
        items = make_items(args.n)
        enc.encode_documents(items[:4], batch_size=4)  # warm-up (kernels, allocator)
        # wall time and process CPU time: on a shared machine CPU time is the steadier of the two
        t0, c0 = time.perf_counter(), time.process_time()
        naive = np.stack([enc.encode_documents([it], batch_size=1)[0] for it in items])
        t_naive, c_naive = time.perf_counter() - t0, time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        batched = enc.encode_documents(items, batch_size=args.batch_size)
        t_batched, c_batched = time.perf_counter() - t0, time.process_time() - c0
    res = {
        "device": args.device, "precision": args.precision, "hidden": args.hidden, "layers": args.layers,
        "items": args.n, "batch_size": args.batch_size, "threads": args.threads,
        "max_pixels": args.max_pixels,
        "naive_items_per_s": round(args.n / t_naive, 1), "batched_items_per_s": round(args.n / t_batched, 1),
        "speedup": round(t_naive / t_batched, 2), "cpu_time_speedup": round(c_naive / c_batched, 2),
        "max_abs_diff": float(np.abs(naive - batched).max()),
    }
    print(json.dumps(res))
    print(f"naive per-item loop: {res['naive_items_per_s']} items/s | batched: {res['batched_items_per_s']} "
          f"items/s | speedup {res['speedup']}x wall, {res['cpu_time_speedup']}x CPU time | "
          f"max |diff| {res['max_abs_diff']:.2e}")


if __name__ == "__main__":
    main()

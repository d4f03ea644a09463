"""Training throughput (pairs/s) and peak memory per family: plain backprop vs GradCache, through the Encoder
contract the trainer uses (``prepare`` + ``embed``, ``trainable_module``, the family's default policy).

Families run at tiny random sizes (``omniret.encoders.tiny``) on the smoke data's emoji pairs (half text ->
image, half image -> text), except ``omni-mini-real``: omniret-mini's real MiniLM language model with every
weight trainable, on the same pairs. Each configuration runs in a fresh process so its peak memory is its
own: on CPU the increase of the peak resident set size over the loaded model, on CUDA
``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_training.py --families gme mmembed clip omni-mini-real --batch 16 --chunk 4 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "smoke-data" / "mbeir"
FAMILIES = ["gme", "vlm2vec", "rematch", "mmembed", "clip", "siglip", "omni-mini", "omni-mini-real"]


def _pairs(n: int) -> tuple[list, list]:
    """``n`` (query, positive) emoji pairs, alternating name -> image and image -> name."""
    from omniret.data import mbeir
    from omniret.types import Item

    pool = {r.id: r for r in mbeir.read_pool(DATA / "cand_pool" / "global" / "mbeir_union_train_cand_pool.jsonl")}
    qs: list[Item] = []
    ds: list[Item] = []
    for task in (0, 3):
        for r in mbeir.read_queries(DATA / "query" / "train" / f"mbeir_emoji_task{task}_train.jsonl"):
            qs.append(r.to_item(DATA))
            ds.append(pool[r.pos[0]].to_item(DATA))
    order = [i for pair in zip(range(len(qs) // 2), range(len(qs) // 2, len(qs)), strict=True) for i in pair]
    reps = -(-n // len(order))
    idx = (order * reps)[:n]
    return [qs[i] for i in idx], [ds[i] for i in idx]


def _encoder(family: str, device: str):
    from omniret.encoders import load_encoder
    from omniret.encoders.tiny import make_tiny
    from omniret.training.config import LoraConfig, ModelConfig
    from omniret.training.lora import apply_policy

    if family == "omni-mini-real":
        from omniret.encoders.omni_mini import OmniMiniEncoder

        enc = OmniMiniEncoder(device=device)
        apply_policy(enc, ModelConfig())
        return enc
    enc = load_encoder(make_tiny(family, Path(tempfile.mkdtemp()) / family), device=device)
    full = family in ("clip", "siglip")
    apply_policy(enc, ModelConfig(freeze_vision=not full, lora=None if full else LoraConfig()))
    return enc


def run_one(family: str, batch: int, chunk: int, steps: int, device: str) -> dict:
    import torch

    from omniret.losses import InfoNCE
    from omniret.training.gradcache import chunked, grad_cache_step

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    enc = _encoder(family, device)
    enc.train()
    loss_fn = InfoNCE(0.05)
    params = [p for p in enc.trainable_module().parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    qs, ds = _pairs(batch * (steps + 1))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for s in range(steps + 1):  # step 0 warms up
        q, d = qs[s * batch : (s + 1) * batch], ds[s * batch : (s + 1) * batch]
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if chunk:
            groups = [[enc.prepare(list(c), is_query=iq) for c in chunked(x, chunk)] for x, iq in ((q, True), (d, False))]
            grad_cache_step(enc.embed, groups, loss_fn)
        else:
            loss_fn(enc.embed(enc.prepare(q, is_query=True)), enc.embed(enc.prepare(d, is_query=False))).backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if s:
            times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024  # ru_maxrss is KiB on Linux
    return {"family": family, "batch": batch, "mode": f"gradcache/{chunk}" if chunk else "plain", "device": device,
            "trainable": sum(p.numel() for p in params),
            "pairs_per_s": round(batch / (sum(times) / len(times)), 1), "peak_mem_mb": round(peak_mb, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)  # internal: family batch chunk
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], int(args.one[1]), int(args.one[2]), args.steps, args.device)))
        return
    rows = []
    for fam in args.families:
        for c in (0, args.chunk):
            cmd = [sys.executable, __file__, "--one", fam, str(args.batch), str(c), "--steps", str(args.steps),
                   "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| family | trainable params | batch | mode | pairs/s | peak memory (MB) |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['trainable']:,} | {r['batch']} | {r['mode']} | {r['pairs_per_s']} | "
              f"{r['peak_mem_mb']} |")


if __name__ == "__main__":
    main()

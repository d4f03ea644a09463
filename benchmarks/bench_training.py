"""Training throughput (pairs/s) and peak memory: plain backprop vs GradCache at several batch sizes.

Model: omniret-mini's language model (all-MiniLM-L6-v2, every weight trainable) on text pairs (WordNet
definition -> lemma when built under ``.cache/data/wordnet``, else synthetic sentences). Each configuration
runs in a fresh process so its peak memory is its own: on CPU the peak resident set size increase over the
loaded model, on CUDA ``torch.cuda.max_memory_allocated``.

    python benchmarks/bench_training.py --batch-sizes 16 64 256 --chunk 16 --steps 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pairs(n: int) -> tuple[list[str], list[str]]:
    wn = ROOT / ".cache" / "data" / "wordnet" / "train"
    if (wn / "queries.jsonl").is_file():
        from omniret.data import beir
        from omniret.data.qrels import read_qrels

        qs, docs = beir.read_queries(wn / "queries.jsonl"), beir.read_corpus(wn / "corpus.jsonl")
        qrels = read_qrels(wn / "qrels" / "train.tsv").rel
        pairs = [(qs[q], docs[next(iter(d))]) for q, d in qrels.items() if q in qs][:n]
        if len(pairs) == n:
            return [p[0] for p in pairs], [p[1] for p in pairs]
    return [f"a sentence about topic number {i} and its details" for i in range(n)], [f"topic {i}" for i in range(n)]


def run_one(batch: int, chunk: int, steps: int, device: str) -> dict:
    import torch

    from omniret.encoders.omni_mini import OmniMiniEncoder
    from omniret.losses import InfoNCE
    from omniret.training.gradcache import chunked, grad_cache_step
    from omniret.types import Item

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    enc = OmniMiniEncoder(device=device)
    model = enc.model.train()
    loss_fn = InfoNCE(0.05)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    qs, ds = _pairs(batch * (steps + 1))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for s in range(steps + 1):  # step 0 warms up
        q = [Item(t) for t in qs[s * batch : (s + 1) * batch]]
        d = [Item(t) for t in ds[s * batch : (s + 1) * batch]]
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if chunk:
            groups = [[enc.prepare(list(c), is_query=iq) for c in chunked(x, chunk)] for x, iq in ((q, True), (d, False))]
            grad_cache_step(model, groups, loss_fn)
        else:
            loss_fn(model(enc.prepare(q, is_query=True)), model(enc.prepare(d, is_query=False))).backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if s:
            times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024  # ru_maxrss is KiB on Linux
    return {"batch": batch, "mode": f"gradcache/{chunk}" if chunk else "plain", "device": device,
            "pairs_per_s": round(batch / (sum(times) / len(times)), 1), "peak_mem_mb": round(peak_mb, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)  # internal: batch chunk
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], args.steps, args.device)))
        return
    rows = []
    for b in args.batch_sizes:
        for c in (0, args.chunk):
            out = subprocess.run([sys.executable, __file__, "--one", str(b), str(c), "--steps", str(args.steps),
                                  "--device", args.device], capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| batch | mode | pairs/s | peak memory (MB) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['mode']} | {r['pairs_per_s']} | {r['peak_mem_mb']} |")


if __name__ == "__main__":
    main()

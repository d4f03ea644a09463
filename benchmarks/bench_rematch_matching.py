"""ReMatch generative matching: ONE packed forward pass vs 8 separate passes (one per query-view × document-view
combination, each a padded batch of the B standalone sequences ``prompt → query view → document view → answer``).

Both modes compute the same loss (printed: |diff|) and run forward + backward on a small random Qwen2.5-VL.
Each mode runs in its own subprocess so its peak memory (CPU: peak RSS growth over the loaded model; CUDA:
``max_memory_allocated``) is its own.

    .venv/bin/python benchmarks/bench_rematch_matching.py                     # CPU, 1 thread
    .venv/bin/python benchmarks/bench_rematch_matching.py --device cuda --hidden 512 --batch 16
"""

from __future__ import annotations

import argparse
import bisect
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from omniret.encoders.tiny import _qwen_scaled, _qwen_image_processor, _save, corpus_sentences, qwen_tokenizer  # noqa: E402,I001
from tiny_models import random_image  # noqa: E402


def build_small_qwen25vl(out: Path, hidden: int, layers: int) -> Path:
    """A small random Qwen2.5-VL (random weights; sizes chosen so compute, not Python, dominates)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    tok = qwen_tokenizer()
    common = _qwen_scaled(tok, hidden, layers, max_positions=8192)
    vision = dict(depth=2, hidden_size=64, intermediate_size=128, num_heads=4, out_hidden_size=hidden,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=56,
                  fullatt_block_indexes=[1])
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(vision_config=vision, **common)).eval()
    return _save(out, model, tok, _qwen_image_processor())


def triplets(b: int):
    from omniret import Item

    texts = corpus_sentences(3 * b, seed=2)
    img = [random_image(56 + 28 * (i % 3), 56 + 28 * (i % 2), i) for i in range(3 * b)]
    q = [Item(texts[3 * i], image=img[3 * i], instruction="Find the matching document.") for i in range(b)]
    p = [Item(texts[3 * i + 1] + " " + texts[3 * i]) for i in range(b)]
    n = [Item(texts[3 * i + 2], image=img[3 * i + 2]) for i in range(b)]
    return q, p, n


def split_by_pair(packer, packed):
    """The 8 separate batches: for combination k, row r holds sample r's standalone chain
    P → query view → document view → answer, with only the images that chain uses."""
    from omniret.training.matching import Segment

    grid = packed.image_grid_thw
    img_tok = (grid.prod(-1) // packer.enc.merge_size**2).tolist() if grid is not None else []
    img_pix = grid.prod(-1).tolist() if grid is not None else []
    tok_start = [sum(img_tok[:i]) for i in range(len(img_tok))]
    pix_start = [sum(img_pix[:i]) for i in range(len(img_pix))]

    def owner(row: int) -> int:
        return bisect.bisect_right(tok_start, row) - 1

    per_sample = {}
    for r, qv, dv in packed.pairs:
        per_sample.setdefault(r, []).append((qv, dv))
    batches = []
    for k in range(len(per_sample[0])):
        trees, used = [], []
        for r, pairs in sorted(per_sample.items()):
            qv, dv = sorted(pairs)[k]
            segs = {s.name: s for s in packed.segments[r]}
            chain = [segs["P"], segs[qv], segs[f"{dv}|{qv}"], segs[f"A|{qv}|{dv}"]]
            tree = [Segment(s.name, s.ids, None if i == 0 else i - 1, list(s.image_rows), s.soft_rows, s.grids)
                    for i, s in enumerate(chain)]
            for s in tree:  # note the images this chain uses (features are contiguous per image)
                for row in s.image_rows:
                    if row >= 0 and owner(row) not in used:
                        used.append(owner(row))
            label = packed.labels[packed.pairs.index((r, qv, dv))].item()
            trees.append((tree, [(3, qv, dv, label)]))
        # renumber feature rows into the table of the used images only
        new_start, at = {}, 0
        for i in used:
            new_start[i], at = at, at + img_tok[i]
        for tree, _ in trees:
            for s in tree:
                s.image_rows = [-1 if row < 0 else new_start[owner(row)] + row - tok_start[owner(row)]
                                for row in s.image_rows]
        pv = torch.cat([packed.pixel_values[pix_start[i] : pix_start[i] + img_pix[i]] for i in used]) if used else None
        g = grid[used] if used else None
        batches.append(packer._collate(trees, pv, g, packed.slots))
    return batches


def run_mode(args) -> dict:
    from omniret import load_encoder
    from omniret.losses.matching import matching_loss
    from omniret.training.matching import MatchingPacker, MatchingProjector, answer_logits

    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    enc = load_encoder(args.model, family="rematch", init_tokens=True, num_tokens=args.k, device=args.device)
    enc.model.train()
    torch.manual_seed(0)
    proj = MatchingProjector(enc.dim).to(dev)
    packer = MatchingPacker(enc)
    q, p, n = triplets(args.batch)
    packed = packer.pack(q, p, n, torch.Generator().manual_seed(0))
    work = [packed] if args.mode == "packed" else split_by_pair(packer, packed)
    emb = torch.randn(3 * args.batch, enc.dim, generator=torch.Generator().manual_seed(0)).to(dev)

    def step() -> float:
        total = 0.0
        for part in work:
            logits = answer_logits(enc, proj, part, emb)
            loss = matching_loss(logits, part.labels) * (len(part.labels) / len(packed.labels))
            loss.backward()
            total += float(loss.detach())
        return total

    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    # peak RSS only grows: measured from the loaded model, over the warm-up step and the timed ones
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()  # warm-up (allocator, kernels)
    enc.model.zero_grad(set_to_none=True)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        loss = step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        enc.model.zero_grad(set_to_none=True)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024)
    real = sum(sum(w.lengths) for w in work)
    padded = sum(w.input_ids.numel() for w in work)
    return {"mode": args.mode, "loss": loss, "seconds": round(sorted(times)[len(times) // 2], 4),
            "peak_mib": round(peak, 1), "passes": len(work), "tokens": real, "padded_tokens": padded}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mode", choices=["packed", "separate"], help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:
        print(json.dumps(run_mode(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = build_small_qwen25vl(Path(tmp) / "m", args.hidden, args.layers)
        rows = []
        for mode in ("packed", "separate"):
            cmd = [sys.executable, __file__, "--mode", mode, "--model", str(model)] + \
                  [f"--{k}={v}" for k, v in vars(args).items() if k not in ("mode", "model")]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    packed, sep = rows
    print(json.dumps({"config": {k: v for k, v in vars(args).items() if k not in ("mode", "model")},
                      "packed": packed, "separate": sep,
                      "loss_abs_diff": abs(packed["loss"] - sep["loss"]),
                      "speedup": round(sep["seconds"] / packed["seconds"], 2),
                      "memory_ratio": round(sep["peak_mib"] / max(packed["peak_mib"], 1e-9), 2)}, indent=1))


if __name__ == "__main__":
    main()

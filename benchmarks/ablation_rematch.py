"""ReMatch objective ablation on small real data: contrastive only / + orth / + orth + matching.

Each arm trains configs/rematch/smoke.yaml's tiny RANDOM Qwen2.5-VL (K=4 learnable tokens, full fine-tuning)
on the first ``--max-examples`` emoji of configs/rematch/data (name -> image and image -> name triplets with one
hard negative each), differing only in the loss terms, with the same seed, data order and steps. Evaluation:
hit@1 (MMEB's Precision@1) of name -> image and image -> name retrieval among the training emoji (how well the
objective fits them) and among the 72 held-out emoji (configs/rematch/data-heldout; a random-init model with a
300-token vocabulary is not expected to generalise to unseen names).

    .venv/bin/python benchmarks/ablation_rematch.py --steps 300 --max-examples 48 --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from omniret import Item, load_encoder
from omniret.data import mmeb
from omniret.training.config import load_config
from omniret.training.stages import run_training

ROOT = Path(__file__).resolve().parents[1]
EMOJI = ROOT / "examples" / "sample-corpus" / "emoji"
ARMS = {
    "contrastive": [{"name": "contrastive", "weight": 1.0, "temperature": 0.02}],
    "+orth": [{"name": "contrastive", "weight": 1.0, "temperature": 0.02}, {"name": "orth", "weight": 0.5}],
    "+orth+match": [{"name": "contrastive", "weight": 1.0, "temperature": 0.02}, {"name": "orth", "weight": 0.5},
                    {"name": "match", "weight": 0.1}],
}


def hit_at_1(enc, queries: list[Item], docs: list[Item]) -> float:
    """Query i's target is document i; scores are cosine similarities."""
    q = enc.encode_queries(queries, batch_size=32)
    d = enc.encode_documents(docs, batch_size=32)
    return float(np.mean((q @ d.T).argmax(1) == np.arange(len(queries))) * 100)


def evaluate(model: Path, n_train: int) -> dict[str, float]:
    enc = load_encoder(model)
    out = {}
    for split in ("data-heldout", "data"):
        n = None if split == "data-heldout" else n_train  # training used each file's first n rows
        t2i = mmeb.read_train([ROOT / "configs" / "rematch" / split / "EmojiT2I.jsonl"], EMOJI)[:n]
        i2t = mmeb.read_train([ROOT / "configs" / "rematch" / split / "EmojiI2T.jsonl"], EMOJI)[:n]
        tag = "heldout" if split == "data-heldout" else "train"
        out[f"{tag}_t2i"] = round(hit_at_1(enc, [r.query for r in t2i], [r.pos for r in t2i]), 1)
        out[f"{tag}_i2t"] = round(hit_at_1(enc, [r.query for r in i2t], [r.pos for r in i2t]), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--max-examples", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", default=str(ROOT / ".cache" / "runs" / "rematch-ablation"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        for arm, terms in ARMS.items():
            cfg = load_config(ROOT / "configs" / "rematch" / "smoke.yaml")
            cfg.output_dir = str(Path(args.out) / f"seed{seed}" / arm.replace("+", "plus-"))
            cfg.seed = seed
            cfg.data.sources[0].max_examples = args.max_examples
            cfg.loss.terms = terms
            cfg.optim.max_steps, cfg.optim.batch_size = args.steps, args.batch
            cfg.optim.checkpoint_every, cfg.optim.log_every = args.steps, 10
            t0 = time.perf_counter()
            final = run_training(cfg.validate(), log=lambda s: None)
            row = {"arm": arm, "seed": seed, "train_s": round(time.perf_counter() - t0, 1), **evaluate(final, args.max_examples)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    print("| arm | seeds | held-out name→image | held-out image→name | train name→image | train image→name |")
    print("|---|---|---|---|---|---|")
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        cell = {k: f"{np.mean([r[k] for r in mine]):.1f}" for k in ("heldout_t2i", "heldout_i2t", "train_t2i", "train_i2t")}
        print(f"| {arm} | {len(mine)} | {cell['heldout_t2i']} | {cell['heldout_i2t']} | {cell['train_t2i']} | "
              f"{cell['train_i2t']} |")


if __name__ == "__main__":
    main()

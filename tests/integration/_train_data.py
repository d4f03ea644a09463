"""Tiny training fixtures shared by the trainer tests: a random BERT with MiniLM's tokenizer, text pairs, a config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from transformers import BertConfig, BertModel

from omniret.encoders.minilm import default_minilm_path


def make_tiny_bert(dst: Path, dropout: float = 0.1) -> Path:
    """A randomly initialised 2-layer BERT with MiniLM's real tokenizer (fast to train on one thread)."""
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=128, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(cfg).save_pretrained(dst)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default_minilm_path() / f, dst / f)
    return dst


def make_pairs(dst: Path, n: int = 24) -> Path:
    """A BEIR-style text-pair source: query i ("what is word i") -> doc i ("definition of word i")."""
    words = ["apple", "river", "stone", "cloud", "tiger", "piano", "ocean", "forest", "candle", "mirror", "garden",
             "bridge", "castle", "desert", "engine", "feather", "glacier", "harbor", "island", "jungle", "kettle",
             "ladder", "meadow", "needle"][:n]
    (dst / "qrels").mkdir(parents=True)
    with open(dst / "corpus.jsonl", "w") as f:
        for i, w in enumerate(words):
            f.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"a {w} is a thing called {w}"}) + "\n")
    with open(dst / "queries.jsonl", "w") as f:
        for i, w in enumerate(words):
            f.write(json.dumps({"_id": f"q{i}", "text": f"what is a {w}"}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(len(words))]
    (dst / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return dst


def make_config(root: Path, out: str, bert: Path, pairs: Path, steps: int = 24, every: int = 4) -> dict:
    return {
        "name": "resume-test", "output_dir": out, "seed": 3,
        "model": {"family": "omni-mini", "options": {"text_model": str(bert), "max_length": 32},
                  "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]},
                  "trainable": ["projector.*", "text.pooler.*"]},
        "data": {"sources": [{"kind": "pairs", "path": str(pairs), "instruction": "Find the definition."}]},
        "loss": {"temperature": 0.1, "learnable_temperature": True, "hard_negatives": 1},
        "optim": {"lr": 1e-3, "max_steps": steps, "batch_size": 6, "warmup_steps": 5, "checkpoint_every": every,
                  "log_every": 20, "gradcache_chunk": 4},
    }


COLOURS = ["red", "green", "blue", "yellow", "purple", "orange", "black", "grey", "pink", "brown", "cyan", "olive"]


def _shapes(style: str):
    """A synthetic domain: the same 12 concepts ("a red square", ...) drawn as squares or as circles."""

    def source(cache, size):
        for c in COLOURS:
            img = Image.new("RGB", (size, size), "white")
            draw = ImageDraw.Draw(img)
            (draw.rectangle if style == "square" else draw.ellipse)((8, 8, size - 8, size - 8), fill=c)
            yield f"concept:{c}", f"a {c} {style}", img

    return source


def build_shape_domains(root: Path) -> dict[str, dict]:
    """Domains "squares" and "circles" (M-BEIR layout, concept-level split in halves) built under ``root``."""
    from omniret.data.builders import domains

    mp = pytest.MonkeyPatch()
    mp.setitem(domains.DOMAINS, "squares", (20, _shapes("square")))
    mp.setitem(domains.DOMAINS, "circles", (21, _shapes("circle")))
    try:
        return {n: domains.build_domain(n, root / n, size=32, test_fraction=0.5) for n in ("squares", "circles")}
    finally:
        mp.undo()

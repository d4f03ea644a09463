"""`omniret train`: kill -9 mid-run, rerun the same command, end with the weights of an uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from omniret.encoders import load_encoder
from omniret.encoders.minilm import default_minilm_path
from omniret.training.config import config_from_dict
from omniret.training.trainer import Trainer

STEPS, EVERY = 24, 4


def make_tiny_bert(dst: Path) -> Path:
    """A randomly initialised 2-layer BERT with MiniLM's real tokenizer (fast to train on one thread)."""
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     max_position_embeddings=128)
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


def make_config(root: Path, out: str, bert: Path, pairs: Path) -> dict:
    return {
        "name": "resume-test", "output_dir": out, "seed": 3,
        "model": {"family": "omni-mini", "options": {"text_model": str(bert), "max_length": 32},
                  "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]},
                  "trainable": ["projector.*", "text.pooler.*"]},
        "data": {"sources": [{"kind": "pairs", "path": str(pairs), "instruction": "Find the definition."}]},
        "loss": {"temperature": 0.1, "learnable_temperature": True, "hard_negatives": 1},
        "optim": {"lr": 1e-3, "max_steps": STEPS, "batch_size": 6, "warmup_steps": 5, "checkpoint_every": EVERY,
                  "log_every": 20, "gradcache_chunk": 4},
    }


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    bert, pairs = make_tiny_bert(root / "bert"), make_pairs(root / "pairs")
    return root, bert, pairs


def _final_tensors(run: Path) -> dict:
    return load_file(str(run / "final" / "model.safetensors"))


def test_kill9_and_resume_matches_uninterrupted(setup):
    root, bert, pairs = setup
    # reference: uninterrupted, in this process
    ref_cfg = config_from_dict(make_config(root, "ref", bert, pairs), root)
    Trainer(ref_cfg, log=lambda s: None).run()
    ref = _final_tensors(root / "ref")

    cfg_file = root / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(make_config(root, "run", bert, pairs)))
    cmd = [sys.executable, "-m", "omniret", "train", str(cfg_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    ckpts = root / "run" / "main" / "checkpoints"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.startswith("step-") for p in ckpts.glob("step-*")):
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    proc.wait()
    done = sorted(p.name for p in ckpts.glob("step-*"))
    assert done and not (root / "run" / "final").exists(), "the run finished before it could be killed"
    killed_at = int(done[-1].split("-")[1])
    assert killed_at < STEPS

    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"at step {killed_at}" in out.stdout
    got = _final_tensors(root / "run")
    assert got.keys() == ref.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    # only the newest checkpoints are kept; each one reloads as a model by path alone
    kept = sorted(p.name for p in ckpts.glob("step-*"))
    assert kept == [f"step-{STEPS - EVERY:08d}", f"step-{STEPS:08d}"]
    enc = load_encoder(ckpts / kept[-1])
    assert enc.family == "omni-mini" and enc.dim == 32
    e = enc.encode_queries(["what is a tiger"])
    assert e.shape == (1, 32)

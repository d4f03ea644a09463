"""`torchrun --nproc_per_node 2 -m omniret train`: two gloo processes, each holding half of every batch and
gathering the other half's candidates, train to the same weights as one process holding the whole batch —
for omni-mini and, through the same Encoder contract, for a tiny Qwen2-VL (GME recipe, LoRA, GradCache)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from _train_data import make_config, make_pairs, make_tiny_bert
from safetensors.torch import load_file

from omniret.training.config import config_from_dict
from omniret.training.stages import run_training

STEPS = 6


def _torchrun(cfg_file, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "omniret", "train", str(cfg_file)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


def test_two_process_training_equals_one_process(tmp_path):
    bert = make_tiny_bert(tmp_path / "bert", dropout=0.0)  # dropout would differ between the processes' RNGs
    pairs = make_pairs(tmp_path / "pairs")

    def config(out: str) -> dict:
        cfg = make_config(tmp_path, out, bert, pairs, steps=STEPS, every=3)
        cfg["model"]["trainable"] = ["projector.*", "text.encoder.layer.1.output.LayerNorm.*"]
        return cfg  # learnable temperature and one hard negative per query, as in make_config

    run_training(config_from_dict(config("one"), tmp_path), log=lambda s: None)
    cfg_file = tmp_path / "two.yaml"
    cfg_file.write_text(yaml.safe_dump(config("two")))
    _torchrun(cfg_file, tmp_path)

    one = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    assert one.keys() == two.keys()
    for k in one:
        torch.testing.assert_close(two[k], one[k], atol=2e-5, rtol=1e-4, msg=k)
    # the learnable temperature is one value for the whole job, equal to the single-process run's
    ck = [p / "loss.safetensors" for p in (tmp_path / r / "main" / "checkpoints" / f"step-{STEPS:08d}" for r in ("one", "two"))]
    t1, t2 = (load_file(str(c)) for c in ck)
    for k in t1:
        torch.testing.assert_close(t2[k], t1[k], atol=1e-6, rtol=1e-5)
    # one log line per logged step (rank 0 only writes)
    steps = [yaml.safe_load(line)["step"] for line in (tmp_path / "two" / "main" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [STEPS]


@pytest.mark.slow
def test_two_process_qwen2vl_equals_one_process(tmp_path):
    from tiny_models import make_tiny

    base = make_tiny("gme", tmp_path / "base")
    data = Path(__file__).resolve().parents[2] / "examples" / "smoke-data" / "mbeir"

    def config(out: str) -> dict:
        return {"name": "qwen-ddp", "output_dir": out, "seed": 1,
                "model": {"family": "gme", "init": str(base), "lora": {"r": 4, "alpha": 8}},
                "data": {"sources": [{"kind": "mbeir", "path": str(data), "max_examples": 16}]},
                "loss": {"terms": [{"name": "contrastive", "temperature": 0.1, "learnable_temperature": True}],
                         "hard_negatives": 1},
                "optim": {"lr": 1e-3, "max_steps": 3, "batch_size": 4, "gradcache_chunk": 2, "checkpoint_every": 3,
                          "log_every": 3}}

    run_training(config_from_dict(config("one"), tmp_path), log=lambda s: None)
    cfg_file = tmp_path / "two.yaml"
    cfg_file.write_text(yaml.safe_dump(config("two")))
    _torchrun(cfg_file, tmp_path)
    for f in ("model.safetensors", "lora_adapters.safetensors"):
        one, two = (load_file(str(tmp_path / r / "final" / f)) for r in ("one", "two"))
        assert one.keys() == two.keys()
        for k in one:
            torch.testing.assert_close(two[k], one[k], atol=2e-5, rtol=1e-4, msg=f"{f}: {k}")

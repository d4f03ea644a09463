"""`omniret train`: kill -9 mid-run, rerun the same command, end with the weights of an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from _train_data import make_config, make_pairs, make_tiny_bert
from safetensors.torch import load_file

from omniret.encoders import load_encoder
from omniret.training.config import config_from_dict
from omniret.training.stages import run_training

STEPS, EVERY = 24, 4


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
    ref_cfg = config_from_dict(make_config(root, "ref", bert, pairs, STEPS, EVERY), root)
    run_training(ref_cfg, log=lambda s: None)
    ref = _final_tensors(root / "ref")

    cfg_file = root / "run.yaml"
    cfg_file.write_text(yaml.safe_dump(make_config(root, "run", bert, pairs, STEPS, EVERY)))
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

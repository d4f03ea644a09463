"""Atomic, safe-format training checkpoints.

A checkpoint directory ``step-00000042/`` holds

* the model, saved as an omniret model (``omniret.json`` + ``model.safetensors``): ``load_encoder(dir)`` works;
* ``trainable.safetensors`` — the raw trainable tensors (LoRA adapters unmerged) to resume training exactly;
* ``loss.safetensors`` (learnable temperature), ``rng.safetensors`` (torch generator states, per process);
* ``optimizer.pt`` — ``torch.save`` of the optimizer state (tensors and numbers only; read back with
  ``weights_only=True``, so no arbitrary pickle is ever executed);
* ``trainer_state.json`` (step, sampler counters, scheduler state) and ``train_config.yaml``.

It is written under a temporary name and renamed into place, so a run killed at any instant leaves either
the previous complete checkpoint or the new one, never a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from omniret.io import (
    atomic_write_json,
    fsync_path,  # works for files and directories
)

STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:08d}"


def latest(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (temporary directories are ignored)."""
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if _STEP_DIR.match(p.name) and (p / STATE).is_file()]
    return max(done, key=lambda p: int(_STEP_DIR.match(p.name).group(1)), default=None)


def begin(root: Path, step: int) -> Path:
    """A fresh temporary directory for the checkpoint of ``step``."""
    tmp = root / f".tmp-step-{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write the state file last, fsync, rename into place and prune older checkpoints beyond ``keep``."""
    _write_json(tmp / STATE, state)
    for f in tmp.iterdir():
        fsync_path(f)
    final = step_dir(tmp.parent, step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(tmp.parent)
    ckpts = sorted(p for p in tmp.parent.iterdir() if _STEP_DIR.match(p.name))
    for old in ckpts[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_rng(path: Path) -> None:
    t = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            t[f"cuda{i}"] = s
    save_file(t, str(path))


def load_rng(path: Path) -> None:
    t = load_file(str(path))
    torch.set_rng_state(t["cpu"])
    cuda = [t[k] for k in sorted(k for k in t if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_tensors(module_state: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in module_state.items()}, str(path))


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def save_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    torch.save(opt.state_dict(), str(path))


def load_optimizer(opt: torch.optim.Optimizer, path: Path) -> None:
    opt.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))


def read_state(ckpt: Path) -> dict[str, Any]:
    return json.loads((ckpt / STATE).read_text())


def _write_json(path: Path, obj: Any) -> None:
    atomic_write_json(path, obj, sort_keys=True)



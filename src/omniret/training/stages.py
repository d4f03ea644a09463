"""Stage orchestration: the run directory, each stage's starting model and mined hard negatives, then a
:class:`~omniret.training.trainer.Trainer` per stage. ``omniret train CONFIG`` is :func:`run_training`.

A stage starts from the family's base model (``init: base`` = ``model.init``), the previous stage's output
(``previous``) or a saved model path; ``model.init: tiny:<family>`` builds a tiny random checkpoint into the
run directory first (smoke runs from a fresh clone). A stage with ``mine:`` first mines modality-aware hard
negatives (METHODS.md §2.5) with an earlier stage's model; an identical mining job of an earlier stage is
reused instead of run again. Completed stages are skipped on rerun.

Layout of ``output_dir``::

    train_config.yaml, config_digest   the config that produced this run
    <stage>/checkpoints, final, train_log.jsonl   see :mod:`omniret.training.trainer`
    <stage>/mined/source*/             hard negatives mined before the stage (if it has ``mine:``)
    final/                             the last stage's model
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from omniret.encoders import Encoder, load_builtins, load_encoder
from omniret.errors import ConfigError, OmniretError
from omniret.io import atomic_write_json, atomic_write_text
from omniret.training.config import DataConfig, ResolvedStage, TrainConfig, save_config
from omniret.training.data import instruction_mode
from omniret.training.distributed import barrier, init_from_env, is_main
from omniret.training.trainer import DONE, Trainer

TINY = "tiny:"


def run_training(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train every stage of ``cfg`` (resuming a stopped run); returns the final model directory."""
    cfg.check_inputs()  # before the fingerprint is written and before any model loads
    rank, world = init_from_env()
    out = Path(cfg.output_dir)
    check_run_dir(cfg, out)
    say = log if is_main() else (lambda s: None)
    prev: Path | None = None
    for st in cfg.resolved_stages():
        sdir = out / st.name
        final = sdir / "final"
        if (final / DONE).is_file():
            say(f"stage {st.name}: already complete ({final})")
            prev = final
            continue
        data = _mine(cfg, st, prev, sdir, say) if st.mine is not None else st.data
        torch.manual_seed(cfg.seed + st.index)
        encoder = build_encoder(cfg, st, prev)
        prev = Trainer(cfg, st, encoder, data, sdir, rank, world, say).fit()
    final = out / "final"
    if is_main():
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(prev, final)
    barrier()
    return final


def check_run_dir(cfg: TrainConfig, out: Path) -> None:
    """Stamp ``out`` with ``cfg``'s fingerprint, or refuse it when it holds output of a different config."""
    saved = out / "train_config.yaml"
    if saved.is_file():
        stamp = out / "config_digest"
        if stamp.is_file() and stamp.read_text().strip() != cfg.digest() and _started(out):
            raise OmniretError(f"{out}: holds a run with a different config; use another output_dir or delete it")
    if is_main() and (not saved.is_file() or not _started(out)):  # a start that trained nothing is not a run
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, saved)
        atomic_write_text(out / "config_digest", cfg.digest() + "\n")
    barrier()


def _started(out: Path) -> bool:
    """Whether run folder ``out`` holds any training output (a stage folder with something in it)."""
    return any(p.is_dir() and any(p.iterdir()) for p in out.iterdir()) if out.is_dir() else False


def base_model_path(cfg: TrainConfig) -> str | None:
    """``model.init``, with a ``tiny:<family>`` spec built (once, by rank 0) into ``<output_dir>/tiny-base``."""
    init = cfg.model.init
    if init is None or not init.startswith(TINY):
        return init
    from omniret.encoders.tiny import make_tiny

    dst = Path(cfg.output_dir) / "tiny-base"
    if is_main() and not (dst / "DONE").is_file():
        make_tiny(init[len(TINY):], dst, seed=cfg.seed)
        atomic_write_text(dst / "DONE", "ok\n")
    barrier()
    return str(dst)


def build_encoder(cfg: TrainConfig, st: ResolvedStage, prev: Path | None) -> Encoder:
    """The model stage ``st`` starts from (see the module docstring)."""
    load_builtins()
    m = cfg.model
    opts = {**m.options, "device": cfg.device}
    if st.init == "previous":
        if prev is None:
            raise OmniretError(f"stage {st.name!r}: init 'previous' but there is no previous stage")
        return load_encoder(prev, device=cfg.device)
    if st.init == "base":
        base = base_model_path(cfg)
        try:
            if base is None:
                from omniret.encoders import FAMILIES

                return FAMILIES.get(m.family)(None, **opts)
            return load_encoder(base, family=m.family, **opts)
        except TypeError as e:  # an option the family's constructor does not take
            raise ConfigError(f"model.options {sorted(m.options)} for family {m.family!r}: {e}") from None
    return load_encoder(st.init, device=cfg.device)


def _mine(cfg: TrainConfig, st: ResolvedStage, prev: Path | None, sdir: Path,
          log: Callable[[str], None]) -> DataConfig:
    """Mine hard negatives for every M-BEIR source of ``st``; returns the stage's data with mined queries."""
    from omniret.training.mining import mine_source

    m, out_root = st.mine, Path(cfg.output_dir)
    if m.model == "previous":
        model_path = prev
    elif m.model.startswith("stage:"):
        model_path = out_root / m.model[len("stage:"):] / "final"
        if not (model_path / DONE).is_file():
            raise OmniretError(f"stage {st.name!r}: mine.model {m.model!r} names no completed earlier stage")
    else:
        model_path = Path(m.model)
    if model_path is None:
        raise OmniretError(f"stage {st.name!r}: mine.model 'previous' but there is no previous stage")
    sources, encoder = [], None
    for i, s in enumerate(st.data.sources):
        if s.kind != "mbeir":
            sources.append(s)
            continue
        out = sdir / "mined" / f"source{i}"
        key = {"model": str(Path(model_path).resolve()), "mine": dataclasses.asdict(m), "source": dataclasses.asdict(s),
               "instructions": instruction_mode(st.data)}
        key["mine"].pop("model")
        if is_main() and (src := _same_mining(out_root, out, key)) is not None:
            log(f"stage {st.name}: reusing hard negatives mined in {src}")
        barrier()
        if not (out / DONE).is_file():
            if encoder is None:
                encoder = load_encoder(model_path, device=cfg.device)
            if is_main():
                # queries carry the instruction training gives them (same lookup, mode and seed)
                stats = mine_source(encoder, s, out, m, instruction_mode=instruction_mode(st.data), seed=cfg.seed)
                atomic_write_json(out / "key.json", key, indent=None)
                atomic_write_json(out / DONE, stats, indent=None)
                log(f"stage {st.name}: mined {out} {json.dumps(stats)}")
            barrier()
        sources.append(dataclasses.replace(s, queries=str(out)))
    return dataclasses.replace(st.data, sources=sources)


def _same_mining(root: Path, out: Path, key: dict[str, Any]) -> Path | None:
    """Copy into ``out`` the result of a finished mining job with the same ``key`` (model, settings, source),
    if any stage of this run has one and ``out`` is not finished yet; returns the directory copied."""
    if (out / DONE).is_file():
        return None
    for d in root.glob("*/mined/source*"):
        if d != out and (d / DONE).is_file() and (d / "key.json").is_file() \
                and json.loads((d / "key.json").read_text()) == key:
            tmp = out.with_name(out.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(d, tmp)
            tmp.rename(out)
            return d
    return None

"""The trainer: stages of contrastive training with AdamW, warmup + cosine/linear decay, GradCache or gradient
accumulation, data parallelism over ``torchrun`` processes (candidates gathered for the loss, gradients averaged
once per step), and atomic checkpoints that make ``omniret train CONFIG`` resumable by rerunning it.

Layout of ``output_dir``::

    train_config.yaml           the config that produced this run
    <stage>/checkpoints/step-*  see :mod:`omniret.training.checkpoint`
    <stage>/final/              the stage's model (omniret.json + model.safetensors + train_config.yaml)
    <stage>/mined/*.jsonl       hard negatives mined before the stage (if it has ``mine:``)
    final/                      the last stage's model
    log.jsonl                   one JSON line per logged step
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from omniret.encoders import FAMILIES, load_builtins, load_encoder
from omniret.errors import OmniretError
from omniret.io import atomic_write_json, atomic_write_text
from omniret.losses import InfoNCE
from omniret.training import checkpoint as ckpt
from omniret.training.config import ConfigError, ResolvedStage, TrainConfig, save_config
from omniret.training.data import Batch, MixtureSampler, instruction_mode, load_sources
from omniret.training.distributed import all_reduce_mean, average_gradients, barrier, init_from_env, is_main
from omniret.training.gradcache import chunked, grad_cache_step
from omniret.training.lora import apply_policy

DONE = "DONE"


def lr_lambda(schedule: str, warmup: int, total: int) -> Callable[[int], float]:
    """Multiplier of the base lr at step ``s``: linear warmup, then cosine / linear decay to 0 (or constant)."""

    def fn(s: int) -> float:
        if warmup and s < warmup:
            return (s + 1) / warmup
        if schedule == "constant":
            return 1.0
        frac = min(1.0, (s - warmup) / max(1, total - warmup))
        return 0.5 * (1 + math.cos(math.pi * frac)) if schedule == "cosine" else 1.0 - frac

    return fn


class Trainer:
    """Runs every stage of a :class:`TrainConfig`; completed stages are skipped on rerun."""

    def __init__(self, cfg: TrainConfig, log: Callable[[str], None] = print) -> None:
        self.cfg, self._log = cfg, log
        self.out = Path(cfg.output_dir)
        self.rank, self.world = init_from_env()

    def log(self, msg: str) -> None:
        if is_main():
            self._log(msg)

    def run(self) -> Path:
        """Train all stages; returns the final model directory."""
        self.cfg.check_inputs()  # before the fingerprint is written and before any model loads
        self._check_run_dir()
        prev: Path | None = None
        for st in self.cfg.resolved_stages():
            prev = self.run_stage(st, prev)
        final = self.out / "final"
        if is_main():
            if final.exists():
                shutil.rmtree(final)
            shutil.copytree(prev, final)
        barrier()
        return final

    def _check_run_dir(self) -> None:
        saved = self.out / "train_config.yaml"
        if saved.is_file():
            stamp = self.out / "config_digest"
            if stamp.is_file() and stamp.read_text().strip() != self.cfg.digest() and self._started():
                raise OmniretError(
                    f"{self.out}: holds a run with a different config; use another output_dir or delete it"
                )
        if is_main() and (not saved.is_file() or not self._started()):  # a start that trained nothing is not a run
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, saved)
            atomic_write_text(self.out / "config_digest", self.cfg.digest() + "\n")
        barrier()

    def _started(self) -> bool:
        """Whether this run folder holds any training output (a stage folder with something in it)."""
        return any(p.is_dir() and any(p.iterdir()) for p in self.out.iterdir()) if self.out.is_dir() else False

    # ------------------------------------------------------------------ one stage
    def run_stage(self, st: ResolvedStage, prev: Path | None) -> Path:
        sdir = self.out / st.name
        final = sdir / "final"
        if (final / DONE).is_file():
            self.log(f"stage {st.name}: already complete ({final})")
            return final
        data = st.data
        if st.mine is not None:
            data = self._mine(st, prev, sdir)
        torch.manual_seed(self.cfg.seed + st.index)
        encoder = self._build_encoder(st, prev)
        counts = apply_policy(encoder.model, self.cfg.model)
        self.log(f"stage {st.name}: {counts['trainable']:,} of {counts['total']:,} parameters trainable")
        encoder.model.to(encoder.device).train()
        loss_fn = InfoNCE(st.loss.temperature, st.loss.learnable_temperature, st.loss.symmetric).to(encoder.device)
        o = st.optim
        params = [p for p in encoder.model.parameters() if p.requires_grad] + list(loss_fn.parameters())
        opt = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(o.schedule, o.warmup_steps, o.max_steps))
        if o.batch_size % self.world:
            raise OmniretError(f"optim.batch_size {o.batch_size} is not divisible by {self.world} processes")
        sampler = MixtureSampler(load_sources(data, self.cfg.seed), o.batch_size, data.batching,
                                 st.loss.hard_negatives, self.cfg.seed + st.index)
        step = self._resume(sdir / "checkpoints", encoder, loss_fn, opt, sched, sampler)
        t0, pairs = time.perf_counter(), 0
        while step < o.max_steps:
            opt.zero_grad(set_to_none=True)
            loss = sum(self._step(encoder, loss_fn, sampler.next_batch(), st) for _ in range(o.accumulation_steps))
            average_gradients(params)
            if o.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, o.max_grad_norm)
            opt.step()
            sched.step()
            step += 1
            pairs += o.batch_size * o.accumulation_steps
            if step % o.log_every == 0 or step == o.max_steps:
                rec = {"stage": st.name, "step": step, "loss": round(float(all_reduce_mean(loss)), 5),
                       "lr": sched.get_last_lr()[0], "tau": round(float(loss_fn.temperature.detach()), 5),
                       "pairs_per_s": round(pairs / max(1e-9, time.perf_counter() - t0), 2)}
                self._write_log(rec)
            if step % o.checkpoint_every == 0 or step == o.max_steps:
                self._checkpoint(sdir / "checkpoints", step, encoder, loss_fn, opt, sched, sampler, o.keep_checkpoints)
        encoder.model.eval()
        if is_main():
            if final.exists():
                shutil.rmtree(final)
            encoder.save_pretrained(final)
            save_config(self.cfg, final / "train_config.yaml")
            atomic_write_json(final / "stage.json", dataclasses.asdict(st))
            atomic_write_text(final / DONE, "ok\n")
        barrier()
        return final

    def _step(self, encoder: Any, loss_fn: InfoNCE, batch: Batch, st: ResolvedStage) -> torch.Tensor:
        """Forward + backward of one batch (this process's shard); returns the detached loss."""
        b, h = len(batch.queries), st.loss.hard_negatives
        lo, hi = self.rank * b // self.world, (self.rank + 1) * b // self.world
        q, p = batch.queries[lo:hi], batch.positives[lo:hi]
        n = batch.negatives[lo * h : hi * h]
        scale = 1.0 / st.optim.accumulation_steps
        autocast = torch.autocast(encoder.device.type, dtype=torch.bfloat16, enabled=st.optim.precision == "bf16")

        def fn(qe: torch.Tensor, pe: torch.Tensor, ne: torch.Tensor | None = None) -> torch.Tensor:
            negs = ne.reshape(qe.shape[0], h, -1) if ne is not None else None
            return loss_fn(qe, pe, negs) * scale

        sides = [(q, True), (p, False)] + ([(n, False)] if h else [])
        if st.optim.gradcache_chunk:
            groups = [[encoder.prepare(list(c), is_query=isq) for c in chunked(items, st.optim.gradcache_chunk)]
                      for items, isq in sides]

            def enc(prepared: Any) -> torch.Tensor:
                with autocast:
                    return encoder.model(prepared).float()

            return grad_cache_step(enc, groups, fn)
        with autocast:
            embs = [encoder.model(encoder.prepare(list(items), is_query=isq)).float() for items, isq in sides]
        loss = fn(*embs)
        loss.backward()
        return loss.detach()

    # ------------------------------------------------------------------ model / mining
    def _build_encoder(self, st: ResolvedStage, prev: Path | None) -> Any:
        load_builtins()
        m = self.cfg.model
        opts = {**m.options, "device": self.cfg.device}
        if st.init == "previous":
            if prev is None:
                raise OmniretError(f"stage {st.name!r}: init 'previous' but there is no previous stage")
            enc = load_encoder(prev, **opts)
        elif st.init == "base":
            try:
                enc = load_encoder(m.init, family=m.family, **opts) if m.init else FAMILIES.get(m.family)(None, **opts)
            except TypeError as e:  # an option the family's constructor does not take
                raise ConfigError(f"model.options {sorted(m.options)} for family {m.family!r}: {e}") from None
        else:
            enc = load_encoder(st.init, **opts)
        if not isinstance(getattr(enc, "model", None), torch.nn.Module) or not hasattr(enc, "save_pretrained"):
            raise OmniretError(f"model family {m.family!r} is not trainable (needs .model and save_pretrained)")
        return enc

    def _mine(self, st: ResolvedStage, prev: Path | None, sdir: Path):
        """Mine hard negatives for every M-BEIR source of ``st``; an identical mining job of an earlier stage
        (same model, settings and source) is reused instead of run again."""
        from omniret.training.mining import mine_source

        m = st.mine
        if m.model == "previous":
            model_path = prev
        elif m.model.startswith("stage:"):
            name = m.model[len("stage:"):]
            model_path = self.out / name / "final"
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
            if is_main() and (src := self._same_mining(out, key)) is not None:
                self.log(f"stage {st.name}: reusing hard negatives mined in {src}")
            barrier()
            if not (out / DONE).is_file():
                if encoder is None:
                    encoder = load_encoder(model_path, device=self.cfg.device)
                if is_main():
                    # queries carry the instruction training gives them (same lookup, mode and seed)
                    stats = mine_source(encoder, s, out, m, instruction_mode=instruction_mode(st.data), seed=self.cfg.seed)
                    atomic_write_json(out / "key.json", key, indent=None)
                    atomic_write_json(out / DONE, stats, indent=None)
                    self.log(f"stage {st.name}: mined {out} {json.dumps(stats)}")
                barrier()
            sources.append(dataclasses.replace(s, queries=str(out)))
        return dataclasses.replace(st.data, sources=sources)

    def _same_mining(self, out: Path, key: dict[str, Any]) -> Path | None:
        """Copy into ``out`` the result of a finished mining job with the same ``key`` (model, settings, source),
        if any stage of this run has one and ``out`` is not finished yet; returns the directory copied."""
        if (out / DONE).is_file():
            return None
        for d in self.out.glob("*/mined/source*"):
            if d != out and (d / DONE).is_file() and (d / "key.json").is_file() \
                    and json.loads((d / "key.json").read_text()) == key:
                tmp = out.with_name(out.name + ".tmp")
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(d, tmp)
                tmp.rename(out)
                return d
        return None

    # ------------------------------------------------------------------ checkpoints / logs
    def _checkpoint(self, root, step, encoder, loss_fn, opt, sched, sampler, keep) -> None:
        tmp = ckpt.begin(root, step) if is_main() else root / f".tmp-step-{step:08d}"
        barrier()
        ckpt.save_rng(tmp / f"rng{self.rank}.safetensors")
        if is_main():
            encoder.save_pretrained(tmp)
            trainable = {n: p for n, p in encoder.model.named_parameters() if p.requires_grad}
            ckpt.save_tensors(trainable, tmp / "trainable.safetensors")
            ckpt.save_tensors(loss_fn.state_dict(), tmp / "loss.safetensors")
            ckpt.save_optimizer(opt, tmp / "optimizer.pt")
            save_config(self.cfg, tmp / "train_config.yaml")
        barrier()
        if is_main():
            sch = {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}
            ckpt.commit(tmp, step, {"step": step, "sampler": sampler.state, "scheduler": sch}, keep)
        barrier()

    def _resume(self, root, encoder, loss_fn, opt, sched, sampler) -> int:
        last = ckpt.latest(root)
        if last is None:
            return 0
        state = ckpt.read_state(last)
        trained = ckpt.load_tensors(last / "trainable.safetensors")
        own = dict(encoder.model.named_parameters())
        with torch.no_grad():
            for k, v in trained.items():
                if k not in own:
                    raise OmniretError(f"{last}: checkpoint tensor {k!r} does not exist in the model")
                own[k].copy_(v)
        loss_fn.load_state_dict(ckpt.load_tensors(last / "loss.safetensors"))
        ckpt.load_optimizer(opt, last / "optimizer.pt")
        sched.load_state_dict({**state["scheduler"], "lr_lambdas": [None]})
        sampler.state = dict(state["sampler"])
        rng = last / f"rng{self.rank}.safetensors"
        ckpt.load_rng(rng if rng.is_file() else last / "rng0.safetensors")
        self.log(f"resumed from {last} at step {state['step']}")
        return int(state["step"])

    def _write_log(self, rec: dict[str, Any]) -> None:
        if is_main():
            line = json.dumps(rec)
            self._log(line)
            with (self.out / "log.jsonl").open("a") as f:
                f.write(line + "\n")

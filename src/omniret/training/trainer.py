"""The trainer of one stage: AdamW, warmup + cosine/linear decay, GradCache or gradient accumulation, data
parallelism over ``torchrun`` processes (candidates gathered by the loss, gradients averaged once per step),
a loss composed of named terms, and atomic checkpoints that make a rerun resume.

It uses only the encoder contract (:mod:`omniret.encoders.base`): ``prepare`` + ``embed`` for the forward
pass, ``trainable_module`` for the optimiser, ``save`` for checkpoints and the stage's model — no family
branches. Stage orchestration (mining, initialisation, the run directory) is :mod:`omniret.training.stages`.

Layout of the stage directory::

    checkpoints/step-*   see :mod:`omniret.training.checkpoint`
    final/               the stage's model (omniret.json + weights + train_config.yaml + stage.json)
    train_log.jsonl      one JSON row per logged step: step, loss, loss_<term>..., lr, pairs_per_s (+ tau)
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

from omniret.errors import OmniretError
from omniret.io import atomic_write_json, atomic_write_text
from omniret.losses import CompositeLoss, LossInputs, build_loss
from omniret.training import checkpoint as ckpt
from omniret.training import matching  # noqa: F401  (registers the 'match' loss term)
from omniret.training.config import DataConfig, ResolvedStage, TrainConfig, save_config
from omniret.training.data import Batch, MixtureSampler, load_sources
from omniret.training.distributed import all_reduce_mean, average_gradients, barrier, is_main
from omniret.training.gradcache import chunked, grad_cache_step
from omniret.training.lora import apply_policy

DONE = "DONE"
LOG_FILE = "train_log.jsonl"


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
    """Trains ``encoder`` for one stage ``st`` on ``data`` and saves the result to ``sdir/final``."""

    def __init__(self, cfg: TrainConfig, st: ResolvedStage, encoder: Any, data: DataConfig, sdir: Path,
                 rank: int = 0, world: int = 1, log: Callable[[str], None] = print) -> None:
        self.cfg, self.st, self.encoder, self.sdir = cfg, st, encoder, sdir
        self.rank, self.world, self._log = rank, world, log
        counts = apply_policy(encoder, cfg.model)
        self.log(f"stage {st.name}: {counts['trainable']:,} of {counts['total']:,} parameters trainable")
        if cfg.model.gradient_checkpointing:
            encoder.enable_gradient_checkpointing()
        encoder.precision = st.optim.precision  # autocast in embed(); the weights stay fp32
        self.module = encoder.trainable_module()
        self.loss_fn: CompositeLoss = build_loss(st.loss.term_specs()).bind(encoder).to(encoder.device)
        o = st.optim
        self.params = [p for p in self.module.parameters() if p.requires_grad] + \
            [p for p in self.loss_fn.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=o.lr, weight_decay=o.weight_decay, betas=tuple(o.betas))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(o.schedule, o.warmup_steps, o.max_steps))
        self.sampler = MixtureSampler(load_sources(data, cfg.seed), o.batch_size, data.batching,
                                      st.loss.hard_negatives, cfg.seed + st.index, rank, world)

    def log(self, msg: str) -> None:
        if is_main():
            self._log(msg)

    def fit(self) -> Path:
        """Train to ``optim.max_steps`` (resuming from the last checkpoint) and save the stage's model."""
        o, final = self.st.optim, self.sdir / "final"
        if is_main():
            self.sdir.mkdir(parents=True, exist_ok=True)
        step = self._resume()
        self.module.train()
        t0, pairs = time.perf_counter(), 0
        while step < o.max_steps:
            self.opt.zero_grad(set_to_none=True)
            sums: dict[str, torch.Tensor] = {}
            for _ in range(o.accumulation_steps):
                for k, v in self._step(self.sampler.next_batch()).items():
                    sums[k] = sums.get(k, 0) + v / o.accumulation_steps
            average_gradients(self.params)
            if o.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.params, o.max_grad_norm)
            self.opt.step()
            self.sched.step()
            step += 1
            pairs += o.batch_size * o.accumulation_steps
            if step % o.log_every == 0 or step == o.max_steps:
                rec = {"stage": self.st.name, "step": step,
                       **{k: round(float(all_reduce_mean(v)), 5) for k, v in sums.items()},
                       "lr": self.sched.get_last_lr()[0], **self.loss_fn.log_values(),
                       "pairs_per_s": round(pairs / max(1e-9, time.perf_counter() - t0), 2)}
                self._write_log(rec)
            if step % o.checkpoint_every == 0 or step == o.max_steps:
                self._checkpoint(step)
        self.module.eval()
        if is_main():
            if final.exists():
                shutil.rmtree(final)
            self.encoder.save(final, merge_lora=self.cfg.model.merge_lora)
            save_config(self.cfg, final / "train_config.yaml")
            atomic_write_json(final / "stage.json", dataclasses.asdict(self.st))
            atomic_write_text(final / DONE, "ok\n")
        barrier()
        return final

    def _step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Forward + backward of this process's shard; returns the detached total and per-term losses."""
        enc, h = self.encoder, self.st.loss.hard_negatives
        scale = 1.0 / self.st.optim.accumulation_steps
        sides = [("queries", batch.queries, True), ("positives", batch.positives, False)]
        if h:
            sides.append(("negatives", batch.negatives, False))
        logged: dict[str, torch.Tensor] = {}
        names = [name for name, _, _ in sides]
        tokens = "tokens" in self.loss_fn.needs

        def encode(prepared: Any) -> torch.Tensor:
            """``(B, D)`` embeddings, or ``(B, 1 + K, D)`` = embedding then token states when a term reads
            them (one tensor, so GradCache caches and replays both)."""
            if not tokens:
                return enc.embed(prepared)
            emb, tok = enc.embed_tokens(prepared)
            return torch.cat([emb[:, None], tok], dim=1)

        def loss_of(outs: list[torch.Tensor], prepared: dict[str, Any] | None) -> torch.Tensor:
            embs = [o[:, 0] if tokens else o for o in outs]
            negs = embs[2].reshape(embs[0].shape[0], h, -1) if h else None
            inputs = LossInputs(embs[0], embs[1], negs, encoder=enc, prepared=prepared,
                                tokens={n: o[:, 1:] for n, o in zip(names, outs, strict=True)} if tokens else None,
                                items={name: list(items) for name, items, _ in sides})
            total, parts = self.loss_fn(inputs)
            logged.update({"loss": total.detach(), **{f"loss_{k}": v for k, v in parts.items()}})
            return total * scale

        chunk = self.st.optim.gradcache_chunk
        if chunk:
            groups = [[enc.prepare(list(c), is_query=isq) for c in chunked(items, chunk)] for _, items, isq in sides]
            grad_cache_step(encode, groups, lambda *outs: loss_of(list(outs), None))
            return logged
        prepared = {name: enc.prepare(list(items), is_query=isq) for name, items, isq in sides}
        loss = loss_of([encode(prepared[name]) for name in names], prepared)
        loss.backward()
        return logged

    # ------------------------------------------------------------------ checkpoints / logs
    def _checkpoint(self, step: int) -> None:
        root = self.sdir / "checkpoints"
        tmp = ckpt.begin(root, step) if is_main() else root / f".tmp-step-{step:08d}"
        barrier()
        ckpt.save_rng(tmp / f"rng{self.rank}.safetensors")
        if is_main():
            self.encoder.save(tmp)
            trainable = {n: p for n, p in self.module.named_parameters() if p.requires_grad}
            ckpt.save_tensors(trainable, tmp / "trainable.safetensors")
            ckpt.save_tensors(self.loss_fn.state_dict(), tmp / "loss.safetensors")
            ckpt.save_optimizer(self.opt, tmp / "optimizer.pt")
            save_config(self.cfg, tmp / "train_config.yaml")
        barrier()
        if is_main():
            sch = {k: v for k, v in self.sched.state_dict().items() if k != "lr_lambdas"}
            ckpt.commit(tmp, step, {"step": step, "sampler": self.sampler.state, "scheduler": sch},
                        self.st.optim.keep_checkpoints)
        barrier()

    def _resume(self) -> int:
        last = ckpt.latest(self.sdir / "checkpoints")
        if last is None:
            return 0
        state = ckpt.read_state(last)
        trained = ckpt.load_tensors(last / "trainable.safetensors")
        own = dict(self.module.named_parameters())
        with torch.no_grad():
            for k, v in trained.items():
                if k not in own:
                    raise OmniretError(f"{last}: checkpoint tensor {k!r} does not exist in the model")
                own[k].copy_(v)
        self.loss_fn.load_state_dict(ckpt.load_tensors(last / "loss.safetensors"))
        ckpt.load_optimizer(self.opt, last / "optimizer.pt")
        self.sched.load_state_dict({**state["scheduler"], "lr_lambdas": [None]})
        self.sampler.state = dict(state["sampler"])
        rng = last / f"rng{self.rank}.safetensors"
        ckpt.load_rng(rng if rng.is_file() else last / "rng0.safetensors")
        self.log(f"resumed from {last} at step {state['step']}")
        return int(state["step"])

    def _write_log(self, rec: dict[str, Any]) -> None:
        if is_main():
            line = json.dumps(rec)
            self._log(line)
            with (self.sdir / LOG_FILE).open("a") as f:
                f.write(line + "\n")

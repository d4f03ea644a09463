"""The one encoder protocol everything downstream (index, mining, eval, serve, training) relies on.

A concrete encoder implements two hooks:

* :meth:`Encoder.prepare` — CPU work for one batch (tokenisation, image decoding, formatting with the
  family's query/document template). It runs on a background thread, overlapping the previous batch's
  forward pass.
* :meth:`Encoder.forward` — the model call, returning ``(B, D)`` embeddings (any float dtype).

and the base class gives every family the same public contract:

* :meth:`Encoder.embed` — the *differentiable* embedding of a prepared batch: moves it to ``device``, runs
  ``forward`` under the encoder's precision (autocast) and returns ``(B, D)`` float32, not normalised.
  Inference (:meth:`encode_queries` / :meth:`encode_documents`, under ``torch.inference_mode``, sorted by
  :meth:`item_length` into low-padding batches, L2-normalised) and training both call it.
* :meth:`Encoder.trainable_module` — the ``nn.Module`` an optimiser trains (its parameter names are what
  freezing patterns match), with :meth:`param_roles` / :meth:`lora_scope` telling the trainer which
  parameters are the vision tower, the projector/heads and the language model (LoRA targets).
* :meth:`Encoder.save` — weights + recipe (``omniret.json``, written last) so that ``load_encoder(path)``
  alone reloads it; LoRA adapters injected by training are saved as adapters (re-applied at load) or
  merged into the weights (:mod:`omniret.encoders.lora`).
* ``source`` — set by ``load_encoder``: a reference that reopens the same model (``open_reference``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omniret.encoders.saved import write_saved_config
from omniret.errors import ConfigError, OmniretError
from omniret.types import Item, as_items

PRECISIONS = ("fp32", "bf16", "fp16")


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor moved to ``device`` (dicts, lists, tuples and dataclasses, one level deep
    per container; other values unchanged). Dataclass batches are copied, never mutated."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and any(isinstance(v, torch.Tensor) for v in batch):
        return type(batch)(to_device(v, device) for v in batch)
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {f.name: to_device(getattr(batch, f.name), device) for f in dataclasses.fields(batch)
                   if isinstance(getattr(batch, f.name), torch.Tensor)}
        return dataclasses.replace(batch, **changes) if changes else batch
    return batch


class Encoder(ABC):
    """Base class of every omniret encoder. Subclasses set ``name`` and ``dim`` and implement the hooks."""

    name: str = "encoder"
    dim: int = 0
    family: str = "base"
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"
    #: what ``load_encoder`` was called with (registered name, absolute directory, or a JSON reference with
    #: family/options): :func:`omniret.encoders.open_reference` reopens the same model from it. ``None`` for
    #: encoders built directly.
    source: str | None = None
    #: approximate sequence length one image adds (for sorting items into low-padding batches)
    image_length: int = 256
    #: extra positions every input gets (e.g. ReMatch's learnable tokens)
    extra_length: int = 0

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def prepare(self, items: list[Item], *, is_query: bool) -> Any:
        """CPU-side batch preparation (runs on a worker thread). Returns whatever :meth:`forward` takes."""

    @abstractmethod
    def forward(self, batch: Any) -> torch.Tensor:
        """Embed one prepared batch: returns ``(B, D)``."""

    def item_length(self, item: Item) -> int:
        """Approximate sequence length used to sort items into low-padding batches (~4 characters a token)."""
        text = sum(len(t) for t in item.texts) + len(item.instruction or "")
        return text // 4 + self.image_length * len(item.images) + self.extra_length + 1

    def set_runtime(self, device: str | torch.device = "cpu", precision: str = "fp32") -> None:
        """Validate and set ``device`` and ``precision`` (``fp32``/``bf16``/``fp16``: autocast in :meth:`embed`)."""
        if precision not in PRECISIONS:
            raise ConfigError(f"precision={precision!r} is not valid; choose one of {', '.join(PRECISIONS)}")
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as e:
            raise ConfigError(f"device={device!r} is not a valid torch device ({e})") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device={device!r} requested but CUDA is not available here")
        self.device, self.precision = dev, precision

    # ----------------------------------------------------------------- training contract
    def embed(self, prepared: Any) -> torch.Tensor:
        """Differentiable embedding of a batch from :meth:`prepare`: ``(B, D)`` float32, not normalised.

        Moves the batch to :attr:`device` and runs :meth:`forward` under the encoder's precision. Gradients
        flow unless the caller is in ``torch.no_grad`` / ``inference_mode``.
        """
        batch = to_device(prepared, self.device)
        with self.autocast():
            return self.forward(batch).float()

    def embed_tokens(self, prepared: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Multi-token families (ReMatch): ``(embeddings (B, D), token states (B, K, D))`` float32 from ONE
        differentiable forward pass; the embeddings equal :meth:`embed`'s. Others raise."""
        raise OmniretError(f"model family {self.family!r} has no per-token embedding states (a loss term that "
                           f"reads them, e.g. 'orth', needs a multi-token family such as 'rematch')")

    def trainable_parts(self) -> dict[str, torch.nn.Module]:
        """The named modules that make up the trainable network (family hook; default: not trainable)."""
        raise OmniretError(f"model family {self.family!r} is not trainable")

    def trainable_module(self) -> torch.nn.Module:
        """The ``nn.Module`` training optimises: the one part itself, or an ``nn.ModuleDict`` of the parts
        (names ``<part>.<param>``). The same object every call, sharing parameters with the encoder."""
        if getattr(self, "_trainable", None) is None:
            parts = self.trainable_parts()
            self._trainable = next(iter(parts.values())) if len(parts) == 1 else torch.nn.ModuleDict(parts)
        return self._trainable

    def param_roles(self) -> dict[str, list[str]]:
        """fnmatch globs over :meth:`trainable_module` parameter names, by role: ``vision`` (frozen by
        default), ``projector`` (projector, pooling heads, token banks: trained by default, also with LoRA)
        and ``unused`` (never trained, e.g. an LM head embeddings do not use)."""
        return {"vision": [], "projector": [], "unused": []}

    def lora_scope(self) -> tuple[str, list[str]]:
        """``(prefix, target suffixes)``: LoRA goes into the linear layers under module ``prefix`` of
        :meth:`trainable_module` whose names end in a target (the language model's attention and MLP)."""
        return "", []

    def train(self, mode: bool = True) -> Encoder:
        """Switch the trainable module between training (dropout on) and evaluation mode."""
        self.trainable_module().train(mode)
        return self

    def enable_gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass (HF modules' non-reentrant checkpointing)."""
        found = False
        for m in self.trainable_module().modules():
            if hasattr(m, "gradient_checkpointing_enable") and getattr(m, "supports_gradient_checkpointing", False):
                m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                found = True
        if not found:
            raise ConfigError(f"model family {self.family!r}: no module supports gradient checkpointing")

    # ----------------------------------------------------------------- persistence
    def save_files(self, out: Path) -> dict[str, Any]:
        """Family hook: write the weights (and tokenizer/processor files) into ``out``; return the
        ``omniret.json`` content (at least ``family``; ``name``, ``recipe``, ``options`` as the loader needs)."""
        raise OmniretError(f"model family {self.family!r} cannot be saved")

    def save(self, path: str | os.PathLike, *, merge_lora: bool = False) -> Path:
        """Write weights + recipe so ``load_encoder(path)`` reloads this encoder; ``omniret.json`` last.

        LoRA adapters in the trainable module are saved as adapters (re-applied at load, the default) or,
        with ``merge_lora``, merged into the saved weights (the live model keeps its adapters either way).
        """
        from omniret.encoders.lora import lora_detached

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        module = self.trainable_module() if self._is_trainable() else None
        with lora_detached(module, merge=merge_lora, out=out) as lora_meta:
            meta = self.save_files(out)
        if lora_meta:
            meta["lora"] = lora_meta
        return write_saved_config(out, meta)

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Alias of :meth:`save` (HF naming)."""
        return self.save(path)

    def _is_trainable(self) -> bool:
        try:
            self.trainable_module()
        except OmniretError:
            return False
        return True

    def recipe(self) -> dict[str, Any]:
        """JSON-serialisable description of everything that changes the embeddings (templates, pooling,
        weights identity). Index manifests store its hash so a mismatched encoder is caught."""
        return {"name": self.name, "family": self.family, "dim": self.dim}

    # ----------------------------------------------------------------- public API
    @property
    def recipe_hash(self) -> str:
        blob = json.dumps(self.recipe(), sort_keys=True, default=str).encode()
        return hashlib.sha1(blob).hexdigest()[:16]

    def encode_queries(
        self,
        items: Sequence[Item | str],
        instruction: str | None = None,
        batch_size: int = 32,
        progress: bool = False,
    ) -> np.ndarray:
        """Embed queries. ``instruction`` applies to every item that carries none of its own.

        Returns ``(N, dim)`` float32, rows L2-normalised.
        """
        its = as_items(items)
        if instruction:
            its = [it if it.instruction else it.with_instruction(instruction) for it in its]
        return self._encode(its, is_query=True, batch_size=batch_size, progress=progress)

    def encode_documents(
        self, items: Sequence[Item | str], batch_size: int = 32, progress: bool = False
    ) -> np.ndarray:
        """Embed documents / candidates. Returns ``(N, dim)`` float32, rows L2-normalised."""
        return self._encode(as_items(items), is_query=False, batch_size=batch_size, progress=progress)

    # ----------------------------------------------------------------- machinery
    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _batches(self, items: list[Item], batch_size: int) -> Iterator[list[int]]:
        order = sorted(range(len(items)), key=lambda i: -self.item_length(items[i]))
        for s in range(0, len(order), batch_size):
            yield order[s : s + batch_size]

    def _encode(self, items: list[Item], *, is_query: bool, batch_size: int, progress: bool) -> np.ndarray:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            from omniret.errors import ConfigError

            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        if not items:
            return out
        batches = list(self._batches(items, batch_size))
        bar = _progress(len(items), "queries" if is_query else "documents") if progress else None
        # prepare batch i+1 on a worker thread while batch i runs through the model; one batch (the serving
        # path) has nothing to overlap, and starting a thread would cost more than a short query's tokenising
        pool = ThreadPoolExecutor(max_workers=1) if len(batches) > 1 else _Inline()
        with pool, torch.inference_mode():
            nxt = pool.submit(self.prepare, [items[i] for i in batches[0]], is_query=is_query)
            for b, idx in enumerate(batches):
                prepared = nxt.result()
                if b + 1 < len(batches):
                    nxt = pool.submit(self.prepare, [items[i] for i in batches[b + 1]], is_query=is_query)
                emb = torch.nn.functional.normalize(self.embed(prepared), dim=-1)
                out[idx] = emb.cpu().numpy()
                if bar is not None:
                    bar.advance(len(idx))
        if bar is not None:
            bar.close()
        return out


class _Inline(contextlib.AbstractContextManager):
    """An executor that runs each task at once on the calling thread, outside inference mode as on a pool's
    worker thread (inference mode is thread-local), so what ``prepare`` caches stays usable for training."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future:
        done: Future = Future()
        try:
            with torch.inference_mode(False):
                done.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - re-raised by .result(), as a thread pool would
            done.set_exception(e)
        return done

    def __exit__(self, *exc: object) -> None:
        return None


class _progress:
    """A rich progress bar that is quiet when stderr is not a terminal-capable console."""

    def __init__(self, total: int, what: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._p = Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()
        )
        self._p.start()
        self._t = self._p.add_task(f"encoding {what}", total=total)

    def advance(self, n: int) -> None:
        self._p.advance(self._t, n)

    def close(self) -> None:
        self._p.stop()

"""The one encoder protocol everything downstream (index, mining, eval, serve) relies on.

A concrete encoder implements two hooks:

* :meth:`Encoder.prepare` — CPU work for one batch (tokenisation, image decoding, formatting with the
  family's query/document template). It runs on a background thread, overlapping the previous batch's
  forward pass.
* :meth:`Encoder.forward` — the model call, returning ``(B, D)`` embeddings (any float dtype; the base
  L2-normalises in float32).

The base class sorts items by length so batches pad little, batches them, runs under
``torch.inference_mode`` (and autocast when ``precision`` asks for it), restores the input order, and shows
an optional progress bar.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from omniret.types import Item, as_items

PRECISIONS = ("fp32", "bf16", "fp16")


class Encoder(ABC):
    """Base class of every omniret encoder. Subclasses set ``name`` and ``dim`` and implement the hooks."""

    name: str = "encoder"
    dim: int = 0
    family: str = "base"
    #: documents get no instruction unless the family's recipe says so (ReMatch/MMEB target instructions)
    device: torch.device = torch.device("cpu")
    precision: str = "fp32"

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def prepare(self, items: list[Item], *, is_query: bool) -> Any:
        """CPU-side batch preparation (runs on a worker thread). Returns whatever :meth:`forward` takes."""

    @abstractmethod
    def forward(self, batch: Any) -> torch.Tensor:
        """Embed one prepared batch: returns ``(B, D)``."""

    def item_length(self, item: Item) -> int:
        """Approximate sequence length used to sort items into low-padding batches."""
        return sum(len(t) for t in item.texts) // 4 + 256 * len(item.images) + 1

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
        # prepare batch i+1 on a worker thread while batch i runs through the model
        with ThreadPoolExecutor(max_workers=1) as pool, torch.inference_mode(), self.autocast():
            nxt = pool.submit(self.prepare, [items[i] for i in batches[0]], is_query=is_query)
            for b, idx in enumerate(batches):
                prepared = nxt.result()
                if b + 1 < len(batches):
                    nxt = pool.submit(self.prepare, [items[i] for i in batches[b + 1]], is_query=is_query)
                emb = self.forward(prepared).float()
                emb = torch.nn.functional.normalize(emb, dim=-1)
                out[idx] = emb.cpu().numpy()
                if bar is not None:
                    bar.advance(len(idx))
        if bar is not None:
            bar.close()
        return out


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

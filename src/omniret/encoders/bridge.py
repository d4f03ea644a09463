"""omniret-bridge: the zero-shot bridge ``conse-minilm`` plus small trained heads (family ``"bridge"``).

conse-minilm (:mod:`omniret.encoders.mini`) already puts text and images in one space, but an ImageNet
classifier read through class names misses much of what drawings, icons and emoji show, and it has no idea
which *modality* a query asks for: in a pool of images and captions a caption query's nearest neighbour is
another caption, never the image (modality accuracy@1 ≈ 0). The bridge family keeps every frozen part of
conse-minilm and trains two light heads on top:

* **image residual** — ``v = unit(conse(x) + g * unit(R([p; conse(x)])))``: ``p`` ``(1280,)`` are
  EfficientNet-Lite0's pooled head features, ``R`` an MLP to the 384-d MiniLM space and ``g = GATE_SCALE *
  gate`` a learned gate starting at 0 (so the untrained model's content part *is* conse-minilm; the idea of
  DeViSE's learned image-to-word-space map, Frome et al. 2013, as a zero-initialised residual like
  ControlNet's, arXiv:2302.05543 §3). During training the residual of each image is dropped with probability
  ``residual_dropout``, so the model must also rank with the bare bridge — which keeps the modality margin
  below wide enough for images whose residual is weak (unseen domains);
* **modality head** — ``k + 1`` extra dimensions: a text or image document gets its modality's learned vector,
  an image+text document the extra "neutral" axis no query points along (no such documents train the head, so
  none is preferred or penalised); a query with an instruction gets ``W · unit(MiniLM(instruction)) + U · mix(query)``
  (the instruction read in the light of the query's own modality mix); a query without one gets zeros, so it
  ranks by content alone (an image query finds the same photo stored with its caption first). Their
  product adds an instruction-dependent preference for a candidate modality to the content score — what
  MM-Embed's modality-aware hard negatives teach its MLLM (arXiv:2411.02571 §4.2), here as an explicit head.

The embedding is ``[content (384); s * unit(modality) (k + 1)]`` (unit content, ``s = modality_scale``; a
query without instruction has a zero modality part; :meth:`Encoder.encode_queries` normalises the whole). The
fixed norms make the score ``(content · content + s² cos(modality, modality)) / (1 + s²)`` for every query
with an instruction and ``content · content / sqrt(1 + s²)`` for one without (an item against itself: 0.707). Text content is exactly conse-minilm's (MiniLM with MM-Embed's instruction pooling), so text-to-text
retrieval ranks as conse-minilm does up to the modality head's per-modality offset. Frozen signals are pure
functions of the input and are cached per image content (``feature_cache_size``) across training steps.
Saved layout: ``omniret.json`` + ``model.safetensors`` (the heads only, ~4 MB).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omniret.encoders import ENCODERS, FAMILIES
from omniret.encoders.base import Encoder
from omniret.encoders.effnet import preprocess
from omniret.encoders.mini import CONSE_PRECISIONS, ConseMiniEncoder
from omniret.encoders.minilm import MAX_LENGTH, TextBatch
from omniret.encoders.options import declare_options, keyword_options
from omniret.encoders.saved import load_packaged_model, load_saved_model, tensor_digest
from omniret.errors import ModelNotFoundError, OmniretError
from omniret.types import Item

FAMILY = "bridge"
WEIGHTS = "model.safetensors"
POOLED_DIM = 1280  # EfficientNet-Lite0's head channels
TEXT_DIM = 384
#: order of the learned document-modality vectors
MODALITIES = ("text", "image")
#: g = GATE_SCALE * gate, so the single gate moves at the heads' learning rate times GATE_SCALE
GATE_SCALE = 10.0


class _SignalCache:
    """Process-wide LRU of frozen per-image signals ``(pooled (1280,), conse (384,))`` keyed by content.

    Shared by every bridge encoder of the process (the towers are the packaged ones, so the signals of an image
    never change): the folds of a leave-one-domain-out run and the stages of a recipe reuse each other's work.
    """

    def __init__(self) -> None:
        self.items: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.capacity = 0
        self.lock = threading.Lock()

    def get(self, key: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        with self.lock:
            hit = self.items.get(key)
            if hit is not None:
                self.items.move_to_end(key)
            return hit

    def put(self, key: str, value: tuple[torch.Tensor, torch.Tensor]) -> None:
        with self.lock:
            if self.capacity <= 0:
                return
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.capacity:
                self.items.popitem(last=False)


SIGNALS = _SignalCache()


@dataclass
class BridgeBatch:
    """One prepared batch of ``n`` items: ``text`` tokenises the items that have text (``text_rows``); images
    are ``image_rows`` (owning item of each of M images) with frozen signals either cached (``cached``:
    ``(M, 1664)`` rows, NaN where not cached) or to compute from ``pixels`` ``(M', 3, 224, 224)`` (``fresh``:
    which of the M they are, ``keys``: their cache keys); ``modality`` ``(n, 2)`` is each item's modality mix
    (text, image); for queries ``inst`` tokenises the distinct instructions and ``inst_rows`` ``(n,)`` indexes
    them (-1 = none)."""

    n: int
    text: TextBatch | None = None
    text_rows: list[int] = field(default_factory=list)
    image_rows: list[int] = field(default_factory=list)
    cached: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    fresh: list[int] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    modality: torch.Tensor | None = None
    is_query: bool = False
    inst: TextBatch | None = None
    inst_rows: torch.Tensor | None = None


class BridgeHeads(nn.Module):
    """The trainable part: image residual MLP + gate, document modality vectors, query modality map."""

    def __init__(self, hidden: int = 512, modality_dim: int = 8, dropout: float = 0.1,
                 residual_dropout: float = 0.5, modality_scale: float = 1.0) -> None:
        super().__init__()
        self.residual = nn.Sequential(nn.Dropout(dropout), nn.Linear(POOLED_DIM + TEXT_DIM, hidden), nn.GELU(),
                                      nn.Dropout(dropout), nn.Linear(hidden, TEXT_DIM))
        self.gate = nn.Parameter(torch.zeros(()))
        # random starts: with both sides at zero the gradient would vanish (a saddle point)
        self.doc_modality = nn.Parameter(torch.randn(len(MODALITIES), modality_dim) * 0.02)
        self.query_modality = nn.Linear(TEXT_DIM, modality_dim)
        nn.init.zeros_(self.query_modality.weight)
        nn.init.zeros_(self.query_modality.bias)
        # what an instruction asks for depends on what it is given: a term per query modality (text, image);
        # small random, like the document vectors, so the normalised modality part has a direction to start from
        self.query_own = nn.Parameter(torch.randn(len(MODALITIES), modality_dim) * 0.02)
        self.residual_dropout = residual_dropout
        self.modality_scale = modality_scale

    def image_content(self, pooled: torch.Tensor, conse: torch.Tensor) -> torch.Tensor:
        """``(M, 1280)``, ``(M, 384)`` unit -> ``(M, 384)`` unit image content (bridge + gated residual)."""
        r = F.normalize(self.residual(torch.cat([pooled, conse], dim=-1)), dim=-1) * (GATE_SCALE * self.gate)
        if self.training and self.residual_dropout > 0:
            keep = torch.rand(r.shape[0], 1, device=r.device) >= self.residual_dropout
            r = r * keep
        return F.normalize(conse + r, dim=-1)


class BridgeEncoder(Encoder):
    """conse-minilm + trained heads (see the module docstring). ``dim = 384 + modality_dim + 1``."""

    family = FAMILY

    def __init__(
        self,
        *,
        name: str = "omniret-bridge",
        hidden: int = 512,
        modality_dim: int = 8,
        dropout: float = 0.1,
        residual_dropout: float = 0.5,
        modality_scale: float = 1.0,
        max_length: int = MAX_LENGTH,
        feature_cache_size: int = 0,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        runtime: str | None = None,
    ) -> None:
        if not 1 <= int(modality_dim) <= 64:
            raise OmniretError(f"modality_dim must be in 1..64, got {modality_dim}")
        if not 16 <= int(hidden) <= 8192:
            raise OmniretError(f"hidden must be in 16..8192, got {hidden}")
        for what, p in (("dropout", dropout), ("residual_dropout", residual_dropout)):
            if not 0.0 <= float(p) < 1.0:
                raise OmniretError(f"{what} must be in [0, 1), got {p}")
        if not 0.0 < float(modality_scale) <= 10.0:
            raise OmniretError(f"modality_scale must be in (0, 10], got {modality_scale}")
        self.set_runtime(device, precision)
        self.name = name
        self.base = ConseMiniEncoder(device=self.device, precision=precision, runtime=runtime, max_length=max_length)
        self.heads = BridgeHeads(int(hidden), int(modality_dim), float(dropout), float(residual_dropout),
                                 float(modality_scale))
        self.heads.to(self.device).eval()
        self.dim = TEXT_DIM + int(modality_dim) + 1  # + the neutral axis of image+text documents
        SIGNALS.capacity = max(SIGNALS.capacity, int(feature_cache_size))
        self._weights_id = "untrained"

    def set_runtime(self, device: str | torch.device = "cpu", precision: str = "fp32") -> None:
        """Device and precision for the frozen towers (conse-minilm's, ``int8`` included: ONNX Runtime on CPU);
        the heads run in float32 except under bf16/fp16 autocast."""
        if precision not in CONSE_PRECISIONS:
            raise OmniretError(f"precision {precision!r} is not one of {', '.join(CONSE_PRECISIONS)}")
        super().set_runtime(device, "fp32" if precision == "int8" else precision)
        self.precision = precision
        if hasattr(self, "heads"):
            self.base.set_runtime(device, precision)
            self.heads.to(self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext() if self.precision == "int8" else super().autocast()

    # ----------------------------------------------------------------- training contract
    def trainable_parts(self) -> dict[str, nn.Module]:
        return {"heads": self.heads}

    def param_roles(self) -> dict[str, list[str]]:
        return {"vision": [], "projector": ["*"], "unused": []}

    # ----------------------------------------------------------------- Encoder hooks
    def item_length(self, item: Item) -> int:
        return self.base.item_length(item)

    def prepare(self, items: list[Item], *, is_query: bool) -> BridgeBatch:
        """Tokenise text and instructions; look images up in the signal cache, decode the others."""
        tower = self.base._text_tower()
        batch = BridgeBatch(n=len(items), is_query=is_query)
        texts, insts, cached, pixels = [], [], [], []
        modality = torch.zeros((len(items), len(MODALITIES)))
        for row, it in enumerate(items):
            if it.texts:
                batch.text_rows.append(row)
                texts.append(it.text)
                insts.append(it.instruction if is_query else None)
            for im in it.images:
                key = im.fingerprint()
                hit = SIGNALS.get(key)
                if hit is None:
                    batch.fresh.append(len(batch.image_rows))
                    batch.keys.append(key)
                    pixels.append(preprocess(im.load()))
                    cached.append(torch.full((POOLED_DIM + TEXT_DIM,), float("nan")))
                else:
                    cached.append(torch.cat(hit))
                batch.image_rows.append(row)
            present = [bool(it.texts), bool(it.images)]
            if any(present):
                modality[row] = torch.tensor(present, dtype=torch.float32) / sum(present)
        if texts:
            batch.text = tower.tokenize(texts, insts)
        if cached:
            batch.cached = torch.stack(cached)
        if pixels:
            batch.pixels = torch.from_numpy(np.stack(pixels))
        if is_query:
            distinct = sorted({it.instruction for it in items if it.instruction})
            batch.inst_rows = torch.tensor([distinct.index(it.instruction) if it.instruction else -1 for it in items])
            if distinct:
                batch.inst = tower.tokenize(distinct)
        batch.modality = modality
        return batch

    @torch.no_grad()
    def _signals(self, batch: BridgeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, 1280)`` pooled features and ``(M, 384)`` unit ConSE embeddings of the batch's images."""
        sig = batch.cached.to(self.device).clone()
        if batch.pixels is not None:
            with torch.autocast(self.device.type, enabled=False):
                pooled, logits = self.base.image_signals(batch.pixels)
                conse = self.base.conse_embeddings(logits.to(self.device))
            fresh = torch.cat([pooled.to(self.device), conse], dim=-1).float()
            sig[batch.fresh] = fresh
            for key, row in zip(batch.keys, fresh.cpu(), strict=True):
                SIGNALS.put(key, (row[:POOLED_DIM].clone(), row[POOLED_DIM:].clone()))
        return sig[:, :POOLED_DIM], sig[:, POOLED_DIM:]

    @torch.no_grad()
    def _text(self, tokens: TextBatch) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=False):
            return F.normalize(self.base._text_tower().embed(tokens).float().to(self.device), dim=-1)

    def forward(self, batch: BridgeBatch) -> torch.Tensor:
        """``(n, 384 + k)``: unit content (conse-minilm fusion with the residual on images) and modality."""
        content = torch.zeros((batch.n, TEXT_DIM), device=self.device)
        if batch.text is not None:
            content = content.index_add(0, torch.tensor(batch.text_rows, device=self.device), self._text(batch.text))
        if batch.image_rows:
            pooled, conse = self._signals(batch)
            img = self.heads.image_content(pooled, conse)  # (M, 384)
            rows = torch.tensor(batch.image_rows, device=self.device)
            per_item = torch.zeros_like(content).index_add(0, rows, img)
            has = torch.zeros(batch.n, 1, device=self.device).index_fill(0, rows, 1.0)
            content = content + has * F.normalize(per_item, dim=-1)
        content = F.normalize(content, dim=-1)
        mix = batch.modality.to(self.device)  # (n, 2)
        both = (mix > 0).all(dim=1, keepdim=True)
        if not batch.is_query:  # documents: their modality's vector, image+text ones the neutral axis
            modality = torch.where(both, 0.0, mix @ self.heads.doc_modality)
            neutral = both.to(content.dtype)
        else:  # queries: what the instruction asks for, given the query's own modality; nothing without one
            modality = torch.zeros((batch.n, self.heads.doc_modality.shape[1]), device=self.device)
            neutral = torch.zeros((batch.n, 1), device=self.device)
            if batch.inst is not None:
                wants = self.heads.query_modality(self._text(batch.inst))  # (I, k)
                rows = batch.inst_rows.to(self.device)
                asked = wants[rows.clamp(min=0)] + mix @ self.heads.query_own
                modality = torch.where((rows >= 0).unsqueeze(1), asked, modality)
        # a fixed norm: a free one would let training flatten every content score by inflating the modality
        # part under the final normalisation (a learned temperature in disguise)
        modality = F.normalize(torch.cat([modality, neutral], dim=-1), dim=-1)
        return torch.cat([content, self.heads.modality_scale * modality], dim=-1)

    # ----------------------------------------------------------------- persistence
    def options(self) -> dict[str, Any]:
        r = self.heads.residual
        return {"name": self.name, "hidden": r[1].out_features, "modality_dim": self.heads.doc_modality.shape[1],
                "dropout": r[0].p, "residual_dropout": self.heads.residual_dropout,
                "modality_scale": self.heads.modality_scale, "max_length": self.base.max_length}

    def recipe(self) -> dict[str, Any]:
        return {**super().recipe(), **self.options(), "bridge": self.base.recipe(), "weights": self._weights_id,
                "embedding": "[unit(content) ; modality]; image content = unit(conse + g*unit(R([pooled; conse])))"}

    def save_files(self, out: Path) -> dict[str, Any]:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous() for k, v in self.heads.state_dict().items()}
        save_file(tensors, str(out / WEIGHTS))
        self._weights_id = tensor_digest(tensors)
        return {"family": FAMILY, "name": self.name, "options": self.options(), "recipe": self.recipe()}

    def load_trained(self, path: str | os.PathLike) -> None:
        """Load ``model.safetensors`` written by :meth:`save` (missing or unknown tensors are an error)."""
        from safetensors.torch import load_file

        file = Path(path) / WEIGHTS
        if not file.is_file():
            raise ModelNotFoundError(f"{Path(path)}: no {WEIGHTS}")
        tensors = load_file(str(file))
        try:
            self.heads.load_state_dict(tensors, strict=True)
        except RuntimeError as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelNotFoundError(f"{file}: does not fit this architecture ({first})") from None
        self._weights_id = tensor_digest(tensors)


def load_bridge(path: str | os.PathLike | None = None, **options: Any) -> BridgeEncoder:
    """Family loader: an omniret-saved bridge directory (options from ``omniret.json``, then the heads), or
    ``None`` for untrained heads (whose content embeddings equal conse-minilm's)."""
    if path is None:
        return BridgeEncoder(**options)
    return load_saved_model(BridgeEncoder, path, "bridge", **options)


def load_packaged(**options: Any) -> BridgeEncoder:
    """The omniret-bridge weights trained by ``configs/omniret-bridge/train.yaml`` and shipped with the package."""
    return load_packaged_model("omniret-bridge", load_bridge, **options)


ENCODERS.add("omniret-bridge", load_packaged, "conse-minilm + trained image residual and modality heads (default)")
FAMILIES.add(FAMILY, declare_options(keyword_options(BridgeEncoder.__init__) or ())(load_bridge),
             "conse-minilm with trainable image-residual and modality heads")

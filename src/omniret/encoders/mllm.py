"""Qwen2-VL / Qwen2.5-VL bi-encoder machinery shared by the GME, VLM2Vec and ReMatch families.

A family is a :class:`MLLMRecipe`: a prompt template (registered in ``TEMPLATES``), a pooler, the position-id
scheme and the padding side. :class:`QwenVLEncoder` does the rest without ``Qwen2VLProcessor`` (which needs
torchvision): it renders each item with one ``<|image_pad|>`` per image, runs the ``*ImageProcessorPil``,
expands every placeholder to ``grid_thw.prod() // merge_size**2`` copies at the token level, builds
``mm_token_type_ids`` and the position ids itself, and pools the last hidden layer.

Position ids are always computed here, never left to the model: the model's fallback for text-only batches is
``arange(L)``, which shifts left-padded rows and would make embeddings depend on the batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from omniret.encoders.base import Encoder
from omniret.encoders.pooling import POOLERS, pool
from omniret.encoders.saved import read_saved_config, save_parts
from omniret.errors import ConfigError, DataError
from omniret.registry import Registry
from omniret.types import ImagePart, Item

IMAGE_PAD = "<|image_pad|>"
VISION_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
Template = Callable[[Item, bool, "MLLMRecipe"], str]
TEMPLATES: Registry[Template] = Registry("MLLM prompt template")
POSITIONS = ("mrope", "sequential")
PADDING_SIDES = ("left", "right")


@dataclass
class MLLMRecipe:
    """Everything that shapes a Qwen-VL family's embeddings (saved in ``omniret.json``)."""

    template: str = "gme"
    system_prompt: str = "You are a helpful assistant."
    pooling: str = "last"
    #: "mrope": Qwen's 3-D rotary positions for image tokens; "sequential": 0..n-1 for every token (GME's
    #: reference code calls the language model directly, which never builds M-RoPE positions)
    positions: str = "mrope"
    padding_side: str = "left"
    max_length: int = 1800
    min_pixels: int | None = None
    max_pixels: int | None = None
    #: qwen_vl_utils.fetch_image resize (factor 28, 4..16384 x 28^2 px) before the image processor (GME)
    pre_resize: bool = False
    #: use a document's own ``Item.instruction`` (MMEB target instructions); otherwise documents get none
    doc_instruction: bool = False
    #: VLM2Vec: the newline(s) its MMEB eval code appends to query/target strings "to stay consistent with v1
    #: eval" (only on Items read by :mod:`omniret.data.mmeb`, see ``families.qwen2vl.mmeb_eval_suffix``)
    mmeb_newlines: bool = False
    #: ReMatch: learnable tokens appended to every input (0 = none)
    num_tokens: int = 0
    #: ReMatch: one token bank for queries and documents instead of one per side
    shared_bank: bool = False

    def __post_init__(self) -> None:
        _choice("template", self.template, TEMPLATES.names())
        _choice("pooling", self.pooling, POOLERS.names())
        _choice("positions", self.positions, POSITIONS)
        _choice("padding_side", self.padding_side, PADDING_SIDES)
        if self.max_length < 8:
            raise ConfigError(f"max_length must be >= 8, got {self.max_length}")
        if self.num_tokens < 0:
            raise ConfigError(f"num_tokens must be >= 0, got {self.num_tokens}")

    @classmethod
    def split(cls, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split ``options`` into (recipe fields, everything else)."""
        names = {f.name for f in fields(cls)}
        return ({k: v for k, v in options.items() if k in names}, {k: v for k, v in options.items() if k not in names})


def _choice(option: str, value: Any, allowed: Any) -> None:
    if value not in allowed:
        raise ConfigError(f"{option}={value!r} is not valid; choose one of {', '.join(map(str, allowed))}")


def instruction_for(item: Item, is_query: bool, recipe: MLLMRecipe) -> str | None:
    """The instruction an item is rendered with: queries use theirs; documents only if the recipe says so."""
    if is_query or recipe.doc_instruction:
        return item.instruction
    return None


# --------------------------------------------------------------------------------------------- images
def qwen_fetch_resize(img: Image.Image, factor: int = 28, min_pixels: int = 4 * 28 * 28,
                      max_pixels: int = 16384 * 28 * 28, max_ratio: int | None = 200) -> Image.Image:
    """``qwen_vl_utils.fetch_image``'s resize as GME's ``gme_inference.py`` ships it (``smart_resize``): both
    sides to multiples of ``factor`` within the pixel range, aspect kept; then the long side is capped at
    ``max_ratio`` times the short one (``MAX_RATIO = 200``; ``None`` skips the cap); PIL's default (bicubic)
    filter. GME's inference code applies it before the image processor."""
    w, h = img.size
    hb = max(factor, round(h / factor) * factor)
    wb = max(factor, round(w / factor) * factor)
    if hb * wb > max_pixels:
        beta = math.sqrt(h * w / max_pixels)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < min_pixels:
        beta = math.sqrt(min_pixels / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    if max_ratio is not None and max(hb, wb) / min(hb, wb) > max_ratio:
        # the reference only caps the long side (it does not re-check max_pixels afterwards)
        hb, wb = (wb * max_ratio, wb) if hb > wb else (hb, hb * max_ratio)
    return img.resize((wb, hb))


def expand_image_tokens(ids: list[int], image_token_id: int, counts: list[int]) -> list[int]:
    """Repeat the ``i``-th ``image_token_id`` in ``ids`` ``counts[i]`` times (one slot per visual feature)."""
    out: list[int] = []
    k = 0
    for t in ids:
        if t == image_token_id:
            out.extend([t] * counts[k])
            k += 1
        else:
            out.append(t)
    return out


def _load_images(items: list[Item]) -> list[Image.Image]:
    return [p.load() for it in items for p in it.parts if isinstance(p, ImagePart)]


# --------------------------------------------------------------------------------------------- LoRA adapters
ADAPTER_CONFIG = "adapter_config.json"


def resolve_adapter(path: Path, base_model: str | None = None) -> tuple[Path, Path | None]:
    """(weights directory, adapter directory or None). A PEFT adapter directory (VLM2Vec's published
    checkpoints are LoRA adapters) names its base model; that is resolved like a registered checkpoint."""
    if (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
        return path, None
    if not (path / ADAPTER_CONFIG).is_file():
        raise ConfigError(f"{path}: not a model directory (no config.json or {ADAPTER_CONFIG})")
    base = base_model or json.loads((path / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{path}: {ADAPTER_CONFIG} names no base model; pass base_model=...")
    if Path(base).expanduser().is_dir():
        return Path(base).expanduser(), path
    from omniret.encoders.hub import resolve_checkpoint

    return resolve_checkpoint(base, "vlm2vec"), path


def merge_lora(model: Any, adapter: Path) -> Any:
    """Apply the PEFT adapter in ``adapter`` to ``model`` and merge it into the weights (no PEFT at runtime)."""
    try:
        from peft import PeftModel
    except ImportError as e:  # pragma: no cover - peft is in the train/dev extras
        raise ConfigError(f"{adapter} is a LoRA adapter; loading it needs `pip install omniret[train]` (peft)") from e
    return PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()


# --------------------------------------------------------------------------------------------- encoder
class QwenVLEncoder(Encoder):
    """A Qwen2-VL / Qwen2.5-VL checkpoint used as a bi-encoder with a :class:`MLLMRecipe`."""

    family = "qwen-vl"

    def __init__(self, path: str | Path, recipe: MLLMRecipe, *, name: str | None = None, device: str = "cpu",
                 precision: str = "fp32", trust_remote_code: bool = False, base_model: str | None = None) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

        self.set_runtime(device, precision)
        self.path = Path(path)
        self.recipe_ = recipe
        self.extra_length = recipe.num_tokens
        self.trust_remote_code = trust_remote_code
        self.name = name or str(self.path.resolve())
        weights, adapter = resolve_adapter(self.path, base_model)
        config = AutoConfig.from_pretrained(weights, trust_remote_code=trust_remote_code)
        if config.model_type not in ("qwen2_vl", "qwen2_5_vl"):
            raise ConfigError(f"{self.path}: model_type {config.model_type!r} is not a Qwen2-VL / Qwen2.5-VL "
                              f"checkpoint; family {self.family!r} needs one")
        # on GPU load the weights in the requested precision (autocast over fp32 weights wastes memory)
        dtype = torch.float32
        if self.device.type != "cpu" and precision != "fp32":
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        model = AutoModelForImageTextToText.from_pretrained(
            weights, dtype=dtype, attn_implementation="sdpa", trust_remote_code=trust_remote_code
        )
        if adapter is not None:
            model = merge_lora(model, adapter)
        self.model = model.to(self.device).eval()
        self.backbone = self.model.model  # Qwen2VLModel / Qwen2_5_VLModel: vision tower + language model
        # an adapter directory may ship its own tokenizer / processor files; else take the base model's
        files = self.path if (self.path / "tokenizer_config.json").is_file() else weights
        self.tokenizer = AutoTokenizer.from_pretrained(files, trust_remote_code=trust_remote_code)
        self.tokenizer.padding_side = recipe.padding_side
        pix = {k: v for k, v in (("min_pixels", recipe.min_pixels), ("max_pixels", recipe.max_pixels)) if v}
        self.image_processor = AutoImageProcessor.from_pretrained(
            self.path if (self.path / "preprocessor_config.json").is_file() else weights, backend="pil", **pix
        )
        self.merge_size = int(self.image_processor.merge_size)
        cfg = self.model.config
        self.image_token_id = int(cfg.image_token_id)
        self.pad_token_id = self._pad_id()
        self.dim = int(cfg.get_text_config().hidden_size)

    def _pad_id(self) -> int:
        tok = self.tokenizer
        pid = tok.pad_token_id if tok.pad_token_id is not None else tok.convert_tokens_to_ids("<|endoftext|>")
        if pid is None or pid == tok.unk_token_id:
            raise ConfigError(f"{self.path}: tokenizer has no pad token and no <|endoftext|> token")
        return int(pid)

    # ----------------------------------------------------------------- recipe / identity
    @property
    def mllm_recipe(self) -> MLLMRecipe:
        return self.recipe_

    def recipe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "dim": self.dim, **asdict(self.recipe_)}

    # ----------------------------------------------------------------- training contract
    def trainable_parts(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def _qualified(self, globs: list[str]) -> list[str]:
        """``globs`` over the HF model's names, as names of :meth:`trainable_module` (prefixed by ``model.``
        when the family trains more than the HF model, e.g. ReMatch's token banks)."""
        pre = "model." if len(self.trainable_parts()) > 1 else ""
        return [pre + g for g in globs]

    def param_roles(self) -> dict[str, list[str]]:
        # Qwen2-VL: model.visual = ViT blocks + "merger" (the 2x2 patch-merging MLP projector into the LM)
        return {"vision": self._qualified(["model.visual.*"]), "projector": self._qualified(["model.visual.merger.*"]),
                "unused": self._qualified(["lm_head.*"])}

    def lora_scope(self) -> tuple[str, list[str]]:
        pre = self._qualified(["model.language_model"])[0]
        return pre, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

    # ----------------------------------------------------------------- prepare (CPU, worker thread)
    def render(self, item: Item, is_query: bool) -> str:
        """The prompt string of one item, with one ``<|image_pad|>`` per image (before expansion)."""
        return TEMPLATES.get(self.recipe_.template)(item, is_query, self.recipe_)

    def _image_features(self, items: list[Item]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        images = _load_images(items)
        if not images:
            return None, None
        if self.recipe_.pre_resize:
            images = [qwen_fetch_resize(im) for im in images]
        feats = self.image_processor(images=images, return_tensors="pt")
        return feats["pixel_values"], feats["image_grid_thw"]

    def _token_ids(self, item: Item, text: str, counts: list[int]) -> list[int]:
        """Tokenise ``text`` and expand its ``<|image_pad|>`` tokens to ``counts`` copies each."""
        ids = self.tokenizer(text)["input_ids"]
        n_pads = sum(1 for t in ids if t == self.image_token_id)
        if n_pads != len(counts):
            raise DataError(f"item {item.id or item.text!r}: template produced {n_pads} image placeholders for "
                            f"{len(counts)} images")
        out = expand_image_tokens(ids, self.image_token_id, counts)
        if len(out) > self.recipe_.max_length:
            if self.image_token_id in out[self.recipe_.max_length:]:
                raise DataError(f"item {item.id or item.text!r}: {len(out)} tokens exceed max_length="
                                f"{self.recipe_.max_length} and truncation would cut image tokens; raise "
                                f"max_length or lower max_pixels")
            out = out[: self.recipe_.max_length]  # right truncation, as the reference processors do
        return out

    def prepare(self, items: list[Item], *, is_query: bool) -> dict[str, Any]:
        pixel_values, grid = self._image_features(items)
        counts = (grid.prod(-1) // self.merge_size**2).tolist() if grid is not None else []
        seqs, k = [], 0
        for it in items:
            n_img = len(it.images)
            seqs.append(self._token_ids(it, self.render(it, is_query), counts[k : k + n_img]))
            k += n_img
        return self._collate(seqs, pixel_values, grid, is_query)

    def _collate(self, seqs: list[list[int]], pixel_values: torch.Tensor | None, grid: torch.Tensor | None,
                 is_query: bool) -> dict[str, Any]:
        """Pad to ``(B, L)`` on the recipe's side; K appended learnable-token slots are marked in ``extra``."""
        n_extra = self.recipe_.num_tokens
        length = max(len(s) for s in seqs) + n_extra
        b = len(seqs)
        ids = torch.full((b, length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((b, length), dtype=torch.long)
        extra = torch.zeros((b, length), dtype=torch.bool)
        for i, s in enumerate(seqs):
            n = len(s) + n_extra
            start = length - n if self.recipe_.padding_side == "left" else 0
            ids[i, start : start + len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, start : start + n] = 1
            extra[i, start + len(s) : start + n] = True
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "mm_token_type_ids": (ids == self.image_token_id).to(torch.int32) * mask.to(torch.int32),
            "extra": extra,
            "pixel_values": pixel_values,
            "image_grid_thw": grid,
            "is_query": is_query,
        }

    # ----------------------------------------------------------------- forward (model device)
    def position_ids(self, batch: dict[str, Any]) -> torch.Tensor:
        """``(B, L)`` sequential or ``(3, B, L)`` M-RoPE positions counted over unmasked tokens only."""
        mask = batch["attention_mask"]
        seq = (mask.cumsum(-1) - 1).clamp(min=0)
        if self.recipe_.positions == "sequential" or batch["image_grid_thw"] is None:
            return seq
        pos, _ = self.backbone.get_rope_index(
            input_ids=batch["input_ids"], mm_token_type_ids=batch["mm_token_type_ids"],
            image_grid_thw=batch["image_grid_thw"], attention_mask=mask,
        )
        return pos

    def input_embeddings(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """Hook: ``(B, L, H)`` input embeddings to use instead of the token lookup (ReMatch), or ``None``."""
        return None

    def hidden_states(self, batch: dict[str, Any]) -> torch.Tensor:
        """Run the backbone on a prepared batch: returns the last layer's ``(B, L, H)`` hidden states."""
        dev = self.device
        batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        kwargs: dict[str, Any] = {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "position_ids": self.position_ids(batch),
            "mm_token_type_ids": batch["mm_token_type_ids"],
            "use_cache": False,
        }
        if batch["pixel_values"] is not None:
            kwargs["pixel_values"] = batch["pixel_values"]
            kwargs["image_grid_thw"] = batch["image_grid_thw"]
        embeds = self.input_embeddings(batch)
        if embeds is not None:
            kwargs["inputs_embeds"] = embeds
        return self.backbone(**kwargs).last_hidden_state

    def pool_mask(self, batch: dict[str, Any]) -> torch.Tensor:
        """The ``(B, L)`` positions the pooler reads: the attention mask, or the learnable tokens if any."""
        return batch["extra"] if self.recipe_.num_tokens else batch["attention_mask"]

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        hidden = self.hidden_states(batch)
        return pool(self.recipe_.pooling, hidden, self.pool_mask(batch).to(hidden.device))

    # ----------------------------------------------------------------- persistence
    def save_files(self, out: Path) -> dict[str, Any]:
        """HF-layout weights, tokenizer and image processor; the recipe goes into ``omniret.json``."""
        save_parts(out, self.model, self.tokenizer, self.image_processor)
        return {"family": self.family, "name": self.name, "recipe": asdict(self.recipe_)}


RUNTIME_OPTIONS = frozenset({"name", "device", "precision", "trust_remote_code", "base_model"})


def family_options(runtime_options: frozenset[str] = RUNTIME_OPTIONS) -> frozenset[str]:
    """Every option :func:`load_family` takes with ``runtime_options``: the recipe's fields and those."""
    return frozenset(f.name for f in fields(MLLMRecipe)) | runtime_options


def load_family(cls: type[QwenVLEncoder], path: str | Path, defaults: dict[str, Any],
                options: dict[str, Any], runtime_options: frozenset[str] = RUNTIME_OPTIONS) -> QwenVLEncoder:
    """Build ``cls`` from ``path``: family ``defaults`` < recipe saved in ``omniret.json`` < user ``options``."""
    path = Path(path)
    if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
        raise ConfigError(f"{path}: not a model directory (no config.json or {ADAPTER_CONFIG})")
    meta = read_saved_config(path)
    saved = dict(meta.get("recipe", {}))
    if meta.get("name"):
        options = {"name": meta["name"], **options}
    rec_opts, runtime = MLLMRecipe.split({**defaults, **saved, **options})
    unknown = set(runtime) - runtime_options
    if unknown:
        raise ConfigError(f"unknown option(s) for family {cls.family!r}: {', '.join(sorted(unknown))}")
    return cls(path, MLLMRecipe(**rec_opts), **runtime)


__all__ = ["MLLMRecipe", "QwenVLEncoder", "TEMPLATES", "IMAGE_PAD", "VISION_BLOCK", "load_family", "family_options",
           "qwen_fetch_resize", "instruction_for", "expand_image_tokens"]

"""Dual encoders: HF ``CLIPModel`` and ``SiglipModel`` (families ``clip`` and ``siglip``).

* text -> ``get_text_features`` (CLIP: EOS-token state through ``text_projection``; SigLIP: last position
  through the text head, text padded to ``max_length`` with no attention mask, as SigLIP was trained);
* image -> ``get_image_features`` (vision pooler through the projection / SigLIP's attention-pool head);
* image+text items are fused following UniIR's score-level-fusion CLIP_SF (arXiv 2311.17136; ``CLIPScoreFusion.
  fuse_embeddings``): ``fusion="sum_raw"`` (default) sums the raw, unnormalised projected image and text vectors,
  then the encoder L2-normalises the sum, exactly as the reference. ``fusion="sum_normalized"`` (omniret's
  earlier default, kept as an option) L2-normalises each part first, so ``<q, img + txt> ∝ cos(q, img) +
  cos(q, txt)`` whatever the parts' norms.
* instructions: ignored unless ``use_instruction=True``, which prefixes the query text with
  ``"{instruction} "`` (UniIR's instruction-tuned variants; image-only queries then get the instruction text fused).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch

from omniret.encoders import FAMILIES
from omniret.encoders.base import Encoder
from omniret.encoders.hub import register_checkpoint
from omniret.encoders.options import declare_options
from omniret.encoders.saved import read_saved_config, save_parts
from omniret.errors import ConfigError
from omniret.types import ImagePart, Item

FUSIONS = ("sum_normalized", "sum_raw")
MODEL_TYPES = {"clip": "clip", "siglip": "siglip"}


@dataclass
class DualRecipe:
    #: "sum_raw" (UniIR CLIP_SF, default) or "sum_normalized" (parts L2-normalised before the sum)
    fusion: str = "sum_raw"
    use_instruction: bool = False
    #: "longest" (CLIP) or "max_length" (SigLIP: trained on fixed-length, unmasked text)
    text_padding: str = "longest"
    max_length: int = 77
    attention_mask: bool = True

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(f"fusion={self.fusion!r} is not valid; choose one of {', '.join(FUSIONS)}")
        if self.text_padding not in ("longest", "max_length"):
            raise ConfigError(f"text_padding={self.text_padding!r} is not valid; choose longest or max_length")


class DualEncoder(Encoder):
    """A CLIP or SigLIP checkpoint as an omniret encoder (``family`` is ``"clip"`` or ``"siglip"``)."""

    def __init__(self, path: str | Path, recipe: DualRecipe, *, family: str, name: str | None = None,
                 device: str = "cpu", precision: str = "fp32", trust_remote_code: bool = False) -> None:
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoTokenizer

        self.set_runtime(device, precision)
        self.path, self.recipe_, self.family = Path(path), recipe, family
        self.name = name or str(self.path.resolve())
        config = AutoConfig.from_pretrained(self.path, trust_remote_code=trust_remote_code)
        if config.model_type != MODEL_TYPES[family]:
            raise ConfigError(f"{self.path}: model_type {config.model_type!r} does not match family {family!r} "
                              f"(expects {MODEL_TYPES[family]!r})")
        self.model = AutoModel.from_pretrained(self.path, trust_remote_code=trust_remote_code).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=trust_remote_code)
        self.image_processor = AutoImageProcessor.from_pretrained(self.path, backend="pil")
        self.max_length = min(recipe.max_length, int(config.text_config.max_position_embeddings))
        self.dim = self._dim(config)

    @staticmethod
    def _dim(config: Any) -> int:
        if config.model_type == "clip":
            return int(config.projection_dim)
        return int(config.text_config.projection_size)

    def recipe(self) -> dict[str, Any]:
        return {"name": self.name, "family": self.family, "dim": self.dim, **asdict(self.recipe_)}

    image_length = 64  # a tower pass per image: cost, not tokens

    # ----------------------------------------------------------------- training contract
    def trainable_parts(self) -> dict[str, torch.nn.Module]:
        return {"model": self.model}

    def param_roles(self) -> dict[str, list[str]]:
        # CLIP: visual_projection / text_projection; SigLIP: the heads inside each tower
        return {"vision": ["vision_model.*"], "projector": ["visual_projection.*", "vision_model.head.*"],
                "unused": ["logit_scale", "logit_bias"]}

    def lora_scope(self) -> tuple[str, list[str]]:
        return "text_model", ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]

    # ----------------------------------------------------------------- prepare / forward
    def item_text(self, item: Item, is_query: bool) -> str | None:
        """The text an item contributes: its text parts joined by spaces, instruction-prefixed if enabled."""
        text = item.text
        if is_query and self.recipe_.use_instruction and item.instruction:
            text = f"{item.instruction} {text}" if text else item.instruction
        return text

    def prepare(self, items: list[Item], *, is_query: bool) -> dict[str, Any]:
        texts, text_rows, images, image_rows = [], [], [], []
        for row, it in enumerate(items):
            text = self.item_text(it, is_query)
            if text:
                texts.append(text)
                text_rows.append(row)
            for p in it.parts:
                if isinstance(p, ImagePart):
                    images.append(p.load())
                    image_rows.append(row)
        batch: dict[str, Any] = {"n": len(items), "text_rows": torch.tensor(text_rows, dtype=torch.long),
                                 "image_rows": torch.tensor(image_rows, dtype=torch.long), "text": None,
                                 "pixel_values": None}
        if texts:
            batch["text"] = self.tokenizer(texts, padding=self.recipe_.text_padding, truncation=True,
                                           max_length=self.max_length, return_tensors="pt")
        if images:
            batch["pixel_values"] = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return batch

    def _features(self, out: Any) -> torch.Tensor:
        return out.pooler_output if hasattr(out, "pooler_output") else out

    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Fused ``(B, D)`` embeddings: per item, the sum of its text and image embeddings (parts normalised
        first with ``fusion="sum_normalized"``)."""
        parts, rows = [], []
        if batch["text"] is not None:
            enc = batch["text"]
            kwargs = {"input_ids": enc["input_ids"].to(self.device)}
            if self.recipe_.attention_mask and "attention_mask" in enc:
                kwargs["attention_mask"] = enc["attention_mask"].to(self.device)
            parts.append(self._features(self.model.get_text_features(**kwargs)))
            rows.append(batch["text_rows"])
        if batch["pixel_values"] is not None:
            pv = batch["pixel_values"].to(self.device)
            parts.append(self._features(self.model.get_image_features(pixel_values=pv)))
            rows.append(batch["image_rows"])
        emb = torch.cat([p.float() for p in parts])
        if self.recipe_.fusion == "sum_normalized":
            emb = torch.nn.functional.normalize(emb, dim=-1)
        out = torch.zeros(batch["n"], emb.shape[1], device=emb.device)
        return out.index_add_(0, torch.cat(rows).to(emb.device), emb)

    # ----------------------------------------------------------------- persistence
    def save_files(self, out: Path) -> dict[str, Any]:
        """HF-layout weights, tokenizer and image processor; the recipe goes into ``omniret.json``."""
        save_parts(out, self.model, self.tokenizer, self.image_processor)
        return {"family": self.family, "name": self.name, "recipe": asdict(self.recipe_)}


RUNTIME = frozenset({"name", "device", "precision", "trust_remote_code"})
#: every option a dual-encoder loader takes: the recipe's fields and the runtime ones
OPTIONS = frozenset(f.name for f in fields(DualRecipe)) | RUNTIME
DEFAULTS = {
    "clip": dict(text_padding="longest", max_length=77, attention_mask=True),
    "siglip": dict(text_padding="max_length", max_length=64, attention_mask=False),
}


def load_dual(family: str, path: str | Path, options: dict[str, Any]) -> DualEncoder:
    """Family defaults < recipe saved in ``omniret.json`` < user ``options``."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path}: not a model directory (no config.json)")
    meta = read_saved_config(path)
    saved = dict(meta.get("recipe", {}))
    if meta.get("name"):
        options = {"name": meta["name"], **options}
    merged = {**DEFAULTS[family], **saved, **options}
    names = {f.name for f in fields(DualRecipe)}
    unknown = set(merged) - OPTIONS
    if unknown:
        raise ConfigError(f"unknown option(s) for family {family!r}: {', '.join(sorted(unknown))}")
    recipe = DualRecipe(**{k: v for k, v in merged.items() if k in names})
    return DualEncoder(path, recipe, family=family, **{k: v for k, v in merged.items() if k in RUNTIME})


@FAMILIES.register("clip", "CLIP dual encoder: projection heads, image+text fused by UniIR-style score sum")
@declare_options(OPTIONS)
def load_clip(path: Any, **options: Any) -> DualEncoder:
    return load_dual("clip", path, options)


@FAMILIES.register("siglip", "SigLIP dual encoder: max_length text, attention-pool head, score-sum fusion")
@declare_options(OPTIONS)
def load_siglip(path: Any, **options: Any) -> DualEncoder:
    return load_dual("siglip", path, options)


register_checkpoint("openai/clip-vit-base-patch32", "clip", "CLIP ViT-B/32, 512-d, zero-shot (no instructions)")
register_checkpoint("google/siglip-base-patch16-224", "siglip", "SigLIP B/16-224, 768-d, text padded to 64")

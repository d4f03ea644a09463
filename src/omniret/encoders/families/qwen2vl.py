"""GME and VLM2Vec: Qwen2-VL / Qwen2.5-VL bi-encoders with last-token pooling.

GME (``gme_inference.py`` shipped with Alibaba-NLP/gme-Qwen2-VL-2B-Instruct)::

    <|im_start|>system\\n{instruction or "You are a helpful assistant."}<|im_end|>\\n
    <|im_start|>user\\n[<|vision_start|><|image_pad|><|vision_end|>]{text}<|im_end|>\\n
    <|im_start|>assistant\\n<|endoftext|>

  documents always use the default system prompt; last token (``<|endoftext|>``) pooled; images pre-resized
  by ``qwen_vl_utils.fetch_image`` then processed with 256..1280 x 28^2 pixels; sequential position ids (the
  reference calls the language model directly, bypassing M-RoPE); right padding.

VLM2Vec (``src/model/processor.py``, ``model.py`` and ``src/data/eval_dataset/image_*`` of TIGER-AI-Lab/VLM2Vec;
arXiv 2410.05160 §3): no chat template; ``<|image_1|>`` becomes ``<|image_pad|>``, so an item reads
``<|image_pad|>\\n{instruction} {text}``; the processor adds no BOS/EOS; the last token's final hidden state is
pooled; left padding. Its own Qwen2-VL copy finds images for M-RoPE only after ``<|vision_start|>``, which these
prompts never contain, so every token, image tokens included, gets plain positions 0..n-1
(``positions="sequential"``; ``"mrope"`` is the older omniret behaviour). Images are bounded to
4..1280 x 28^2 = 3,136..1,003,520 pixels (``resize_min_pixels``/``resize_max_pixels``; ``min_pixels=None,
max_pixels=None`` keeps the checkpoint processor's bounds). On MMEB eval Items the eval code's newlines are
appended (``mmeb_newlines``, see :func:`mmeb_eval_suffix`).
"""

from __future__ import annotations

from typing import Any

from omniret.encoders import FAMILIES
from omniret.encoders.hub import register_checkpoint
from omniret.encoders.mllm import (
    IMAGE_PAD,
    TEMPLATES,
    VISION_BLOCK,
    MLLMRecipe,
    QwenVLEncoder,
    family_options,
    instruction_for,
    load_family,
)
from omniret.encoders.options import declare_options
from omniret.types import ImagePart, Item


@TEMPLATES.register("gme", "GME chat template; instruction as system prompt; ends with <|endoftext|>")
def gme_template(item: Item, is_query: bool, recipe: MLLMRecipe) -> str:
    """GME's prompt: parts in order (images as vision blocks, texts concatenated as GME does)."""
    system = instruction_for(item, is_query, recipe) or recipe.system_prompt
    content = "".join(VISION_BLOCK if isinstance(p, ImagePart) else p for p in item.parts)
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n"
            f"<|im_start|>assistant\n<|endoftext|>")


def mmeb_eval_suffix(item: Item, is_query: bool) -> str:
    """The newline(s) VLM2Vec's MMEB eval code appends "to stay consistent with v1 eval".

    Queries of every parser end in ``"\\n"`` (VisDial's in ``"\\n\\n"``); text candidates (class labels, VQA
    answers, i2t captions) stay raw; image candidates end in ``"\\n"`` when they carry a caption or the query
    is text-only (``image_t2i``), not when both sides are images (``image_i2i_vg`` image-only targets).
    Items not read by :mod:`omniret.data.mmeb`'s eval reader get nothing.
    """
    role = item.metadata.get("mmeb_role")
    if role == "query":
        return "\n\n" if str(item.metadata.get("mmeb_dataset", "")).lower() == "visdial" else "\n"
    if role != "candidate" or not item.images:
        return ""
    return "\n" if item.texts or item.metadata.get("mmeb_query_modality") == "text" else ""


@TEMPLATES.register("vlm2vec", "VLM2Vec: '<|image_pad|>\\n{instruction} {text}', no chat template")
def vlm2vec_template(item: Item, is_query: bool, recipe: MLLMRecipe) -> str:
    """VLM2Vec's MMEB layout: image token(s) + newline first, then instruction and text joined by a space."""
    head = "".join(f"{IMAGE_PAD}\n" for _ in item.images)
    body = " ".join(x for x in (instruction_for(item, is_query, recipe), item.text) if x)
    text = (head + body) if body else head.rstrip("\n")
    return text + mmeb_eval_suffix(item, is_query) if recipe.mmeb_newlines else text


class GMEEncoder(QwenVLEncoder):
    family = "gme"


class VLM2VecEncoder(QwenVLEncoder):
    family = "vlm2vec"


GME_DEFAULTS: dict[str, Any] = dict(
    template="gme", positions="sequential", padding_side="right", max_length=1800,
    min_pixels=256 * 28 * 28, max_pixels=1280 * 28 * 28, pre_resize=True,
)
VLM2VEC_DEFAULTS: dict[str, Any] = dict(
    template="vlm2vec", positions="sequential", padding_side="left", max_length=2048, doc_instruction=True,
    min_pixels=4 * 28 * 28, max_pixels=1280 * 28 * 28, mmeb_newlines=True,
)


@FAMILIES.register("gme", "GME: Qwen2-VL chat template, instruction as system prompt, last-token pooling")
@declare_options(family_options())
def load_gme(path: Any, **options: Any) -> QwenVLEncoder:
    return load_family(GMEEncoder, path, GME_DEFAULTS, options)


@FAMILIES.register("vlm2vec", "VLM2Vec: '<|image_pad|>\\n{inst} {text}', last-token pooling, sequential positions")
@declare_options(family_options())
def load_vlm2vec(path: Any, **options: Any) -> QwenVLEncoder:
    return load_family(VLM2VecEncoder, path, VLM2VEC_DEFAULTS, options)


register_checkpoint(
    "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct", "gme",
    "Qwen2-VL-2B, GME chat template, <|endoftext|> last-token pooling, 1536-d",
)
register_checkpoint(
    "TIGER-Lab/VLM2Vec-Qwen2VL-2B", "vlm2vec",
    "Qwen2-VL-2B + LoRA (merged at load), MMEB template, last-token pooling, 1536-d",
)

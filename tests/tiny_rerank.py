"""Tiny random generative MLLMs for reranking tests: LLaVA-Next (with an LM head) beside the Qwen-VL builders."""

from __future__ import annotations

from pathlib import Path

import torch

from tiny_llava import image_processor, llava_config, llava_tokenizer
from tiny_models import _save, build_tiny_qwen2vl, build_tiny_qwen25vl

__all__ = ["build_tiny_llava_next", "build_tiny_qwen2vl", "build_tiny_qwen25vl"]


def build_tiny_llava_next(out: Path, seed: int = 0) -> Path:
    """Tiny random ``LlavaNextForConditionalGeneration`` whose vocabulary includes ``<image>`` (as llava-hf's)."""
    from transformers import LlavaNextForConditionalGeneration

    torch.manual_seed(seed)
    tok = llava_tokenizer()
    # the answer words are single tokens in LLaVA-Next's real vocabulary; the tiny BPE never saw capitals
    tok.add_tokens(["True", "False", "Yes", "No"])
    cfg = llava_config(len(tok), tok.convert_tokens_to_ids("<image>"))
    model = LlavaNextForConditionalGeneration(cfg).eval()
    return _save(out, model, tok, image_processor())

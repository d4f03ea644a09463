"""Tiny random models for the tests: the builders live in :mod:`omniret.encoders.tiny` (``omniret models
make-tiny`` uses them too); random images here.
"""

from __future__ import annotations

from functools import cache

import torch
from PIL import Image

from omniret.encoders.tiny import (  # noqa: F401  (re-exported for the tests)
    CLIP_SPECIALS,
    QWEN_SPECIALS,
    SIGLIP_SPECIALS,
    _save,
    build_tiny_clip,
    build_tiny_mmembed,
    build_tiny_omni_mini,
    build_tiny_qwen2vl,
    build_tiny_qwen25vl,
    build_tiny_siglip,
    clip_tokenizer,
    corpus_sentences,
    make_tiny,
    qwen_tokenizer,
    siglip_tokenizer,
)


# --------------------------------------------------------------------------------------------- images
@cache
def _noise(w: int, h: int, seed: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(h, w, 3, generator=g) * 255).to(torch.uint8).numpy().tobytes()


def random_image(w: int = 56, h: int = 56, seed: int = 0) -> Image.Image:
    """A deterministic random RGB image of ``w x h`` pixels."""
    return Image.frombytes("RGB", (w, h), _noise(w, h, seed))

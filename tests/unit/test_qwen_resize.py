"""GME's pre-resize (``smart_resize`` in ``gme_inference.py``): pixel bounds, multiples of 28, and the aspect-ratio
cap (``MAX_RATIO = 200``: the long side is cut to 200 x the short one), against values worked out by hand."""

from __future__ import annotations

from PIL import Image

from omniret.encoders.mllm import qwen_fetch_resize


def test_aspect_ratio_cap():
    # 8400 x 28: rounding keeps 8400 x 28 (235,200 px, inside the bounds); ratio 300 > 200 -> width 28 * 200
    assert qwen_fetch_resize(Image.new("RGB", (8400, 28))).size == (5600, 28)
    assert qwen_fetch_resize(Image.new("RGB", (28, 8400))).size == (28, 5600)
    assert qwen_fetch_resize(Image.new("RGB", (8400, 28)), max_ratio=None).size == (8400, 28)  # pre-fix behaviour


def test_ordinary_images_unchanged_by_the_cap():
    # 100 x 60 -> round(60/28)=2, round(100/28)=4 -> 112 x 56 (6,272 px, inside 3,136..12.8M)
    assert qwen_fetch_resize(Image.new("RGB", (100, 60))).size == (112, 56)
    # 10 x 10 -> 28 x 28 = 784 < 3,136 -> beta = sqrt(3136 / 100) = 5.6 -> ceil(56 / 28) * 28 = 56
    assert qwen_fetch_resize(Image.new("RGB", (10, 10))).size == (56, 56)
    # exactly 200:1 is allowed
    assert qwen_fetch_resize(Image.new("RGB", (5600, 28))).size == (5600, 28)

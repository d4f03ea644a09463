"""Render the emoji of Debian's ``fonts-noto-color-emoji`` (SIL OFL 1.1) with their Unicode names.

This gives a real, offline, redistributable image/text data set: ~1,350 colour pictures ("red apple",
"rocket", "cat face", ...) each with a human-written name. Enumeration reads the font's character map and
keeps single code points that

* have a ``unicodedata.name`` (Python's Unicode database may be older than the font; unnamed ones are skipped),
* are pictographs, not components: ASCII (digits, ``#``/``*`` keycap bases), joiners, tags, skin-tone
  modifiers, regional-indicator letters and the combining keycap are dropped.

Multi-code-point sequences (flags, ZWJ families, skin-tone variants) are not included: they have no single
Unicode name. Order is ascending code point, so every run yields the same sequence.

The font is a CBDT bitmap font whose strikes exist only at size 109, hence the fixed render size; each glyph
is cropped to its ink, centred on a square canvas and resized to the requested size.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from omniret.data.builders.debian import fetch_deb
from omniret.errors import OmniretError

EMOJI_PACKAGE = "fonts-noto-color-emoji"
FONT_RELPATH = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
#: the only pixel size the font's CBDT bitmap strike supports
CBDT_SIZE = 109

_DROP_CATEGORIES = {"Cf", "Sk", "Zs", "Nd", "Me", "Mn", "Cc"}
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)


def emoji_font_path(cache_dir: Path | None = None) -> Path:
    """Fetch (once) the Debian font package and return the path of ``NotoColorEmoji.ttf``."""
    root = fetch_deb(EMOJI_PACKAGE, cache_dir)
    font = root / FONT_RELPATH
    if not font.is_file():
        raise OmniretError(f"{EMOJI_PACKAGE}: expected font file {FONT_RELPATH} is missing under {root}")
    return font


def _keep(cp: int) -> str | None:
    """The lower-cased Unicode name when ``cp`` is a stand-alone pictograph, else ``None``."""
    if cp < 0x80 or cp in _REGIONAL_INDICATORS:
        return None
    ch = chr(cp)
    name = unicodedata.name(ch, None)
    if name is None or unicodedata.category(ch) in _DROP_CATEGORIES:
        return None
    return name.lower()


def list_emoji(font_path: Path) -> list[tuple[int, str]]:
    """``(code point, lower-case name)`` of every stand-alone emoji in the font's cmap, by code point."""
    try:
        from fontTools.ttLib import TTFont
    except ImportError as e:  # an optional dependency of the data builders only
        raise OmniretError("emoji enumeration needs fontTools: pip install 'omniret[data]'") from e
    font = TTFont(str(font_path), lazy=True)
    try:
        cmap = font.getBestCmap()
    finally:
        font.close()
    out = []
    for cp in sorted(cmap):
        name = _keep(cp)
        if name is not None:
            out.append((cp, name))
    return out


@lru_cache(maxsize=2)
def _font(font_path: str) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(font_path, CBDT_SIZE)


def render_emoji(
    cp: int, font_path: Path, size: int = 96, background: str = "white", pad: float = 0.06
) -> Image.Image | None:
    """Render one code point; ``None`` when the glyph draws no ink.

    Args:
        cp: Unicode code point.
        font_path: the colour emoji font.
        size: output side in pixels (square).
        background: ``"white"`` (RGB output) or ``"transparent"`` (RGBA output).
        pad: blank margin on each side as a fraction of ``size``.
    """
    if background not in ("white", "transparent"):
        raise ValueError(f"background must be 'white' or 'transparent', got {background!r}")
    font = _font(str(font_path))
    canvas = Image.new("RGBA", (2 * CBDT_SIZE, 2 * CBDT_SIZE), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((CBDT_SIZE // 4, CBDT_SIZE // 4), chr(cp), font=font, embedded_color=True)
    bbox = canvas.getchannel("A").getbbox()
    if bbox is None:
        return None
    glyph = canvas.crop(bbox)
    # centre on a square so non-square glyphs keep their aspect ratio
    side = max(glyph.size)
    square = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    square.paste(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    inner = max(1, round(size * (1 - 2 * pad)))
    square = square.resize((inner, inner), Image.Resampling.LANCZOS)
    out = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    off = (size - inner) // 2
    out.paste(square, (off, off))
    if background == "transparent":
        return out
    white = Image.new("RGB", out.size, (255, 255, 255))
    white.paste(out, mask=out.getchannel("A"))
    return white


def iter_emoji(
    cache_dir: Path | None = None, size: int = 96, background: str = "white"
) -> Iterator[tuple[int, str, Image.Image]]:
    """Yield ``(code point, name, image)`` for every stand-alone emoji, in code-point order.

    ``cache_dir`` is the Debian package cache (default ``~/.cache/omniret/debian``); the font is fetched
    with apt-get on first use. Names are lower-case Unicode names, e.g. ``(0x1F34E, "red apple", <img>)``.
    """
    font = emoji_font_path(cache_dir)
    for cp, name in list_emoji(font):
        img = render_emoji(cp, font, size=size, background=background)
        if img is not None:
            yield cp, name, img

"""Safe image decoding: paths, bytes or PIL images in; RGB PIL images out.

* a corrupt, truncated or unsupported file is an :class:`ImageError` naming the file;
* decompression bombs are refused before decoding (pixel cap, default 64 MP);
* EXIF orientation is applied;
* transparency (RGBA, LA, palette with transparency) is composited onto white.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from omniret.errors import OmniretError

DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})


class ImageError(OmniretError, ValueError):
    """An image could not be decoded safely; the message names the source."""


def _describe(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return f"<{type(source).__name__}>"


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and flatten any transparency onto white; returns mode ``RGB``."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGB", rgba.size, (255, 255, 255))
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    return img if img.mode == "RGB" else img.convert("RGB")


def load_image(source: str | os.PathLike | bytes | Image.Image, max_pixels: int | None = None) -> Image.Image:
    """Decode ``source`` into an RGB image, refusing bombs and naming the source on any failure."""
    cap = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    name = _describe(source)
    if isinstance(source, Image.Image):
        if source.width * source.height > cap:
            raise ImageError(f"{name}: {source.width}x{source.height} exceeds the pixel cap of {cap}")
        return to_rgb(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"{name}: no such image file")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ImageError(f"{name}: cannot read ({e.strerror or e})") from e
    elif isinstance(source, bytes):
        data = source
    else:
        raise ImageError(f"{name}: unsupported image source type")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.width * img.height > cap:
                raise ImageError(f"{name}: {img.width}x{img.height} exceeds the pixel cap of {cap}")
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: refused as a decompression bomb ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not a recognised image format") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from e
    return to_rgb(img)


def is_image_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS

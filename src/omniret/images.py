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


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit (``I;16*``), 32-bit integer (``I``) or float (``F``) image scaled to 8-bit ``L``.

    PIL's own ``convert`` clips such values at 255, turning a 16-bit photo pure white; here 16-bit data is
    divided by 257 (65535 -> 255), and float data in ``[0, 1]`` is multiplied by 255 (else clipped).
    """
    import numpy as np

    a = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        finite = a[np.isfinite(a)]
        top = float(finite.max()) if finite.size else 0.0
        a = np.nan_to_num(a, nan=0.0, posinf=top, neginf=0.0) * (255.0 if top <= 1.0 else 1.0)
    elif img.mode.startswith("I;16") or a.max(initial=0) > 255:
        a = a / 257.0
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")


def to_rgb(img: Image.Image) -> Image.Image:
    """Apply EXIF orientation and flatten any transparency onto white; returns mode ``RGB``."""
    img = ImageOps.exif_transpose(img) or img
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
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
        from omniret.io import MAX_IMAGE_BYTES, read_capped

        path = Path(source)
        if not path.exists():
            raise ImageError(f"{name}: no such image file")
        try:
            data = read_capped(path, MAX_IMAGE_BYTES)  # never blocks on a FIFO, never reads a device
        except OmniretError as e:
            raise ImageError(str(e)) from None
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

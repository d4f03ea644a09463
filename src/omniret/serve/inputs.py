"""Request JSON -> :class:`~omniret.types.Item`: text, interleaved parts and image URLs, with field-named errors.

An input is a string (text) or an object ``{"content": str | [part, ...]}`` whose parts follow the OpenAI chat
format: ``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url": {"url": ...}}``. Images come
as ``data:image/...;base64,...`` URLs; ``http(s)://`` URLs are fetched only when the server allows it. Every
image is size-checked before decoding (bytes, then pixels from the header) and decoded here, so a corrupt
upload is a 4xx naming its field and never reaches the encoder.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import urllib.request
from typing import Any

from PIL import Image

from omniret.errors import OmniretError
from omniret.images import ImageError, load_image
from omniret.serve.config import ServeConfig
from omniret.types import Item

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+/-]*)(?P<params>(?:;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)


class RequestError(OmniretError):
    """A bad request field: rendered as ``{"error": {"message": "FIELD: problem", "param": FIELD}}``."""

    def __init__(self, field: str, problem: str, status: int = 422) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.status = status


def _fetch(url: str, field: str, cap: int, timeout: float = 10.0) -> bytes:
    """GET ``url`` reading at most ``cap`` bytes (one more is read to detect an over-size body)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked by caller
            data = resp.read(cap + 1)
    except OSError as e:
        raise RequestError(field, f"cannot fetch {url} ({getattr(e, 'reason', e)})", 400) from e
    if len(data) > cap:
        raise RequestError(field, f"image at {url} exceeds the upload cap of {cap} bytes", 413)
    return data


def image_bytes(url: Any, field: str, cfg: ServeConfig) -> bytes:
    """The raw bytes behind an image URL (``data:`` or, when allowed, ``http(s)://``)."""
    if not isinstance(url, str) or not url:
        raise RequestError(field, "must be a non-empty string URL")
    low = url[:8].lower()
    if low.startswith(("http://", "https://")):
        if not cfg.allow_remote_urls:
            raise RequestError(
                field, "remote image URLs are disabled on this server (start it with --allow-remote-urls); "
                "send the image inline as a data:image/...;base64,... URL", 400)
        return _fetch(url, field, cfg.max_image_bytes)
    m = _DATA_URL.match(url)
    if m is None:
        raise RequestError(field, "must be a data:image/...;base64,... URL" + (
            "" if not cfg.allow_remote_urls else " or an http(s):// URL"))
    if not m["b64"]:
        raise RequestError(field, "data URL must be base64-encoded (data:image/...;base64,...)")
    payload = url[m.end():]
    # base64 carries 3 bytes per 4 characters: refuse an over-size upload before decoding it
    if len(payload) * 3 // 4 > cfg.max_image_bytes + 2:
        raise RequestError(field, f"image of about {len(payload) * 3 // 4} bytes exceeds the upload cap of "
                           f"{cfg.max_image_bytes} bytes", 413)
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(field, f"invalid base64 in data URL ({e})") from e


def decode_image(data: bytes, field: str, cfg: ServeConfig) -> Image.Image:
    """Decode ``data`` to RGB, refusing over-size images from their header before decoding pixels."""
    if len(data) > cfg.max_image_bytes:
        raise RequestError(field, f"image of {len(data)} bytes exceeds the upload cap of {cfg.max_image_bytes} bytes",
                           413)
    try:
        w, h = Image.open(io.BytesIO(data)).size  # header only: no pixels decoded yet
    except Exception as e:  # PIL raises many types for garbage; all mean "not an image"
        raise RequestError(field, "not a recognised image (corrupt or unsupported format)") from e
    if w * h > cfg.max_image_pixels:
        raise RequestError(field, f"{w}x{h} image exceeds the pixel cap of {cfg.max_image_pixels}", 413)
    try:
        return load_image(data, max_pixels=cfg.max_image_pixels)
    except ImageError as e:
        problem = str(e).split(": ", 1)[-1]  # drop load_image's "<N bytes>" source name: FIELD names it
        raise RequestError(field, problem) from e


def _part(value: Any, field: str, cfg: ServeConfig) -> str | Image.Image:
    if not isinstance(value, dict):
        raise RequestError(field, f"must be an object with a 'type', got {type(value).__name__}")
    kind = value.get("type")
    if kind == "text":
        text = value.get("text")
        if not isinstance(text, str):
            raise RequestError(f"{field}.text", "must be a string")
        return text
    if kind == "image_url":
        ref = value.get("image_url")
        url = ref.get("url") if isinstance(ref, dict) else ref
        sub = f"{field}.image_url.url" if isinstance(ref, dict) else f"{field}.image_url"
        return decode_image(image_bytes(url, sub, cfg), sub, cfg)
    raise RequestError(f"{field}.type", f"must be 'text' or 'image_url', got {kind!r}")


def has_images(value: Any) -> bool:
    """Whether request content (an input, a list of inputs) holds any image part, without decoding it."""
    if isinstance(value, list):
        return any(has_images(v) for v in value)
    if isinstance(value, dict):
        content = value.get("content")
        return isinstance(content, list) and any(isinstance(p, dict) and p.get("type") == "image_url"
                                                 for p in content)
    return False


def parse_item(value: Any, field: str, cfg: ServeConfig) -> Item:
    """One input: a string or ``{"content": str | [parts]}``."""
    if isinstance(value, str):
        parts: list[Any] = [value]
    elif isinstance(value, dict):
        extra = sorted(set(value) - {"content"})
        if extra:
            raise RequestError(field, f"unknown field(s) {', '.join(map(repr, extra))}; an item is "
                               '{"content": "text" or [{"type": "text" | "image_url", ...}, ...]}')
        content = value.get("content")
        if isinstance(content, str):
            parts = [content]
        elif isinstance(content, list):
            if not content:
                raise RequestError(f"{field}.content", "must not be empty")
            parts = [_part(p, f"{field}.content[{i}]", cfg) for i, p in enumerate(content)]
        else:
            raise RequestError(f"{field}.content", "must be a string or a list of text/image_url parts")
    else:
        raise RequestError(field, f"must be a string or an object with 'content', got {type(value).__name__}")
    if not any(isinstance(p, Image.Image) or p.strip() for p in parts):
        raise RequestError(field, "is empty: give some text or an image")
    return Item(parts=parts)


def parse_inputs(value: Any, field: str, cfg: ServeConfig) -> list[Item]:
    """A string, or a non-empty list of strings / items, as Items (OpenAI's ``input``)."""
    if isinstance(value, (str, dict)):
        return [parse_item(value, field, cfg)]
    if not isinstance(value, list):
        raise RequestError(field, f"must be a string or a list of strings/items, got {type(value).__name__}")
    if not value:
        raise RequestError(field, "must not be empty")
    if any(isinstance(v, int) or isinstance(v, list) for v in value):
        raise RequestError(field, "token-id inputs are not supported; send text or content parts")
    if len(value) > cfg.max_items:
        raise RequestError(field, f"{len(value)} inputs exceed the limit of {cfg.max_items} per request", 413)
    return [parse_item(v, f"{field}[{i}]", cfg) for i, v in enumerate(value)]

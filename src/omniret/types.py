"""Core value types: :class:`Item` (one query or document) and :class:`Hit` (one search result).

An Item is an ordered sequence of parts, each either a text string or an :class:`ImagePart`, plus an
optional task instruction. Its modality uses M-BEIR's labels: ``"text"``, ``"image"`` or ``"image,text"``.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image as PILImage

Modality = Literal["text", "image", "image,text"]
MODALITIES: tuple[str, ...] = ("text", "image", "image,text")

ImageSource = str | os.PathLike | bytes | PILImage.Image


@dataclass(frozen=True, eq=False)
class ImagePart:
    """An image inside an :class:`Item`: a path, raw bytes or a PIL image, decoded lazily and safely."""

    source: ImageSource

    @property
    def path(self) -> str | None:
        """The file path when the image came from one, else ``None``."""
        if isinstance(self.source, (str, os.PathLike)):
            return os.fspath(self.source)
        return None

    def load(self, max_pixels: int | None = None) -> PILImage.Image:
        """Decode to an RGB PIL image (see :func:`omniret.images.load_image`)."""
        from omniret.images import load_image

        return load_image(self.source, max_pixels=max_pixels)

    def fingerprint(self) -> str:
        """A stable content key (path + size + mtime for files; a hash of bytes/pixels otherwise)."""
        src = self.source
        if isinstance(src, (str, os.PathLike)):
            p = Path(src)
            try:
                st = p.stat()
                return f"file:{p}:{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                return f"file:{p}"
        if isinstance(src, bytes):
            return "bytes:" + hashlib.sha1(src).hexdigest()
        return "pil:" + hashlib.sha1(src.tobytes() + str(src.size).encode()).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImagePart) and self.fingerprint() == other.fingerprint()

    def __hash__(self) -> int:
        return hash(self.fingerprint())


Part = str | ImagePart


def _as_part(p: Any) -> Part:
    if isinstance(p, ImagePart):
        return p
    if isinstance(p, str):
        return p
    if isinstance(p, (bytes, PILImage.Image, os.PathLike)):
        return ImagePart(p)
    raise TypeError(f"Item part must be str, ImagePart, bytes, PIL image or path, got {type(p).__name__}")


@dataclass(frozen=True)
class Item:
    """One query or document: ordered text/image parts plus an optional instruction.

    Build it as ``Item("a red apple")``, ``Item(image="apple.jpg")``,
    ``Item("make it blue", image="car.png")`` (image first, then text, as in M-BEIR / MM-Embed
    templates) or ``Item(parts=["look at", ImagePart("x.png"), "and describe it"])`` for interleaving.
    A bare ``str`` positional argument is always text; pass paths through ``image=``.
    """

    parts: tuple[Part, ...] = ()
    instruction: str | None = None
    id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __init__(
        self,
        text: str | None = None,
        image: ImageSource | ImagePart | None = None,
        *,
        parts: Sequence[Any] | None = None,
        instruction: str | None = None,
        id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if parts is not None and (text is not None or image is not None):
            raise ValueError("Item: give either parts=... or text=/image=, not both")
        if parts is None:
            built: list[Part] = []
            if image is not None:
                built.append(image if isinstance(image, ImagePart) else ImagePart(image))
            if text is not None:
                if not isinstance(text, str):
                    raise TypeError(f"Item text must be str, got {type(text).__name__}")
                built.append(text)
            parts = built
        norm = tuple(_as_part(p) for p in parts)
        norm = tuple(p for p in norm if not (isinstance(p, str) and p == ""))
        if not norm:
            raise ValueError("Item is empty: give some text, an image or parts")
        object.__setattr__(self, "parts", norm)
        object.__setattr__(self, "instruction", instruction or None)
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "metadata", dict(metadata or {}))

    @property
    def texts(self) -> list[str]:
        return [p for p in self.parts if isinstance(p, str)]

    @property
    def images(self) -> list[ImagePart]:
        return [p for p in self.parts if isinstance(p, ImagePart)]

    @property
    def text(self) -> str | None:
        """All text parts joined with a space, or ``None`` for an image-only item."""
        t = self.texts
        return " ".join(t) if t else None

    @property
    def modality(self) -> Modality:
        has_t, has_i = bool(self.texts), bool(self.images)
        if has_t and has_i:
            return "image,text"
        return "image" if has_i else "text"

    def with_instruction(self, instruction: str | None) -> Item:
        """A copy carrying ``instruction`` (``None`` removes it)."""
        return Item(parts=self.parts, instruction=instruction, id=self.id, metadata=self.metadata)

    def fingerprint(self) -> str:
        """Stable content key of parts + instruction (used by caches and incremental indexing)."""
        h = hashlib.sha1()
        for p in self.parts:
            h.update(b"T" + p.encode() if isinstance(p, str) else b"I" + p.fingerprint().encode())
            h.update(b"\x00")
        h.update(b"N" + (self.instruction or "").encode())
        return h.hexdigest()


@dataclass
class Hit:
    """One search result. ``txt`` / ``img_path`` (the first image) / ``img_paths`` (every image, in order)
    describe the stored document for display; ``score`` is the retrieval score, ``rerank_score`` the
    reranker's (``None`` when the hit was not reranked)."""

    id: str
    score: float
    modality: str
    txt: str | None = None
    img_path: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    rerank_score: float | None = None
    img_paths: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "score": float(self.score),
            "rerank_score": None if self.rerank_score is None else float(self.rerank_score),
            "modality": self.modality,
            "txt": self.txt,
            "img_path": self.img_path,
            "img_paths": list(self.img_paths),
            "metadata": self.metadata,
        }


def as_items(xs: Iterable[Item | str]) -> list[Item]:
    """Accept plain strings wherever items are expected (a str becomes a text Item).

    ``xs`` must be a sequence: a lone ``str`` or ``Item`` is refused rather than read as its characters.
    """
    from omniret.errors import DataError

    if isinstance(xs, (str, bytes, Item)) or not isinstance(xs, Iterable):
        raise DataError(f"expected a list of Items or strings, got a single {type(xs).__name__}; wrap it in a list")
    out = []
    for i, x in enumerate(xs):
        if isinstance(x, Item):
            out.append(x)
        elif isinstance(x, str):
            out.append(Item(x))
        else:
            raise DataError(f"item {i}: expected Item or str, got {type(x).__name__}")
    return out

"""Thumbnails of indexed documents, and nothing else.

``GET /media/{doc_id}`` looks the id up in the index; a path never comes from the request, so ``../``,
absolute and URL-encoded paths name no document and get 404. The stored image path must still resolve inside
the folder that held it at indexing time: a symlink swapped in afterwards that points elsewhere is refused.
Files are decoded with the safe loader (pixel cap) and re-encoded as a JPEG thumbnail, so even a file that
got past these checks is never sent as raw bytes.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from pathlib import Path
from threading import Lock

from omniret.images import load_image
from omniret.index.base import Index, Record


def image_paths(record: Record) -> list[str]:
    """All image paths of a document (records of interleaved documents may keep several)."""
    many = getattr(record, "img_paths", None) or record.metadata.get("img_paths")
    if many:
        return [str(p) for p in many]
    return [record.img_path] if record.img_path else []


def safe_path(stored: str) -> Path | None:
    """``stored`` resolved, or ``None`` when it is missing or a symlink leads outside its own folder."""
    p = Path(stored)
    try:
        real = p.resolve(strict=True)
        folder = p.parent.resolve(strict=True)
    except (OSError, RuntimeError):  # missing file, symlink loop
        return None
    if not real.is_relative_to(folder) or not real.is_file():
        return None
    return real


class Thumbnails:
    """JPEG thumbnails of indexed documents' images, cached by (file, mtime, size)."""

    def __init__(self, index: Index, max_pixels: int, cache_size: int = 512) -> None:
        self.index = index
        self.max_pixels = max_pixels
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._lock = Lock()

    def has_image(self, doc_id: str) -> bool:
        rec = self.index.get(doc_id)
        return rec is not None and bool(image_paths(rec))

    def get(self, doc_id: str, part: int, size: int) -> bytes | None:
        """JPEG bytes of image ``part`` of ``doc_id`` at most ``size`` px a side; ``None`` = not served."""
        rec = self.index.get(doc_id)
        paths = image_paths(rec) if rec is not None else []
        if not 0 <= part < len(paths):
            return None
        real = safe_path(paths[part])
        if real is None:
            return None
        key = (str(real), os.stat(real).st_mtime_ns, size)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        img = load_image(real, max_pixels=self.max_pixels)
        img.thumbnail((size, size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
        data = buf.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return data

"""The ``omniret.json`` beside every saved encoder: family, name and recipe, so a path alone reloads it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omniret.errors import ModelNotFoundError
from omniret.io import atomic_write_json

SAVED_CONFIG = "omniret.json"


def save_dir(path: str | os.PathLike, meta: dict[str, Any], *hf_parts: Any) -> Path:
    """Create ``path``, ``save_pretrained`` each HF part (model, tokenizer, processor) into it, then write
    ``omniret.json`` last and atomically, so a half-written directory never looks like a saved model."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    save_parts(out, *hf_parts)
    return write_saved_config(out, meta)


def save_parts(out: Path, *hf_parts: Any) -> None:
    """``save_pretrained`` each HF part (model, tokenizer, processor) into ``out`` (a stale ``omniret.json``
    is removed first, so an interrupted overwrite never looks like a complete model)."""
    (out / SAVED_CONFIG).unlink(missing_ok=True)
    for part in hf_parts:
        part.save_pretrained(out)


def write_saved_config(path: str | os.PathLike, meta: dict[str, Any]) -> Path:
    """Write ``omniret.json`` into ``path`` atomically (temp file + rename); returns ``path``."""
    out = Path(path)
    atomic_write_json(out / SAVED_CONFIG, meta, default=str)
    return out


def read_saved_config(path: str | os.PathLike) -> dict[str, Any]:
    """The ``omniret.json`` of directory ``path`` as a dict; ``{}`` when there is none."""
    f = Path(path) / SAVED_CONFIG
    if not f.is_file():
        return {}
    try:
        meta = json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ModelNotFoundError(f"{f}: not valid JSON ({e})") from e
    if not isinstance(meta, dict):
        raise ModelNotFoundError(f"{f}: expected a JSON object")
    return meta

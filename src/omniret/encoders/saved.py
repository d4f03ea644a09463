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


def load_saved_model(build: Any, path: str | os.PathLike, what: str, **options: Any) -> Any:
    """Rebuild a model saved as ``omniret.json`` options + trained tensors: ``build(**saved, **options)``, then
    its ``load_trained(path)``. ``what`` names the family in the error when ``path`` holds no saved model."""
    p = Path(path)
    meta = read_saved_config(p)
    if not meta:
        raise ModelNotFoundError(f"{p}: not a saved {what} model (no {SAVED_CONFIG})")
    enc = build(**{**meta.get("options", {}), **options})
    enc.load_trained(p)
    return enc


def packaged_path(name: str) -> Path:
    """Where trained weights named ``name`` ship inside the package (``omniret/resources/<name>``)."""
    from importlib.resources import files

    return Path(str(files("omniret.resources"))) / name


def load_packaged_model(name: str, load: Any, **options: Any) -> Any:
    """``load(packaged_path(name), **options)``, with a clear error when the package lacks the weights."""
    p = packaged_path(name)
    if not (p / SAVED_CONFIG).is_file():
        raise ModelNotFoundError(f"{p}: the packaged {name} weights are missing (a broken install?)")
    return load(p, **options)


def tensor_digest(tensors: dict[str, Any]) -> str:
    """A short content hash of named tensors (the ``weights`` identity in a recipe)."""
    import hashlib

    h = hashlib.sha1()
    for k in sorted(tensors):
        h.update(k.encode())
        h.update(tensors[k].float().numpy().tobytes())
    return h.hexdigest()[:16]

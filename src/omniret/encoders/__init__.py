"""Encoders: the protocol, the registries and :func:`load_encoder`.

Two registries:

* ``ENCODERS``: registered names (``"default"``, ``"nvidia/MM-Embed"``, ...) -> factory ``(**options) -> Encoder``;
* ``FAMILIES``: family names (``"mini"``, ``"clip"``, ``"qwen2-vl"``, ...) -> loader
  ``(path, **options) -> Encoder`` for an HF-layout or omniret-saved directory.

A directory saved by omniret holds ``omniret.json`` (``{"family": ..., "recipe": {...}}``, plus ``lora`` when
LoRA adapters are kept) so the path alone reloads it with its recipe. Every encoder ``load_encoder`` returns
carries ``source``: a reference :func:`open_reference` turns back into the same model (index manifests
store it).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omniret.encoders.base import Encoder
from omniret.encoders.saved import SAVED_CONFIG, read_saved_config
from omniret.errors import ModelNotFoundError
from omniret.registry import Registry

ENCODERS: Registry[Callable[..., Encoder]] = Registry("encoder")
FAMILIES: Registry[Callable[..., Encoder]] = Registry("model family")


# Modules whose import registers encoders/families. Imported on first use so `import omniret` stays light.
_BUILTIN_MODULES = [
    "omniret.encoders.mini",
    "omniret.encoders.omni_mini",
    "omniret.encoders.bridge",
    "omniret.encoders.dual",
    "omniret.encoders.families.qwen2vl",
    "omniret.encoders.families.rematch",
    "omniret.encoders.families.mmembed",
]
_loaded = False

#: the registered encoder that ``"default"`` names, chosen by held-out quality (docs/results.md, "Leave-one-domain-
#: out"): omniret-bridge beats the zero-shot conse-minilm on every held-out domain in both directions, puts the
#: asked-for modality first in union pools, and ranks text exactly as conse-minilm does
DEFAULT_ENCODER = "omniret-bridge"


def load_builtins() -> None:
    global _loaded
    if not _loaded:
        for mod in _BUILTIN_MODULES:
            importlib.import_module(mod)
        ENCODERS.add("default", ENCODERS.get(DEFAULT_ENCODER), f"the bundled offline encoder ({DEFAULT_ENCODER})")
        _loaded = True


#: options that say where a model runs, not what it computes: left out of ``Encoder.source``
RUNTIME_ONLY = frozenset({"device"})


def load_encoder(name_or_path: str | Path = "default", *, family: str | None = None, **options: Any) -> Encoder:
    """Load an encoder by registered name, by omniret-saved directory, or by HF directory + ``family``.

    ``options`` are passed to the factory (e.g. ``device="cuda"``, ``precision="bf16"``). The result's
    ``source`` reopens the same model through :func:`open_reference`.
    """
    load_builtins()
    key = str(name_or_path)
    path = Path(key).expanduser()
    if family is None and key in ENCODERS:
        enc = ENCODERS.get(key)(**options)
        ref = key
    elif path.is_dir():
        meta = read_saved_config(path)
        if family is None:
            family = meta.get("family")
        if family is None:
            raise ModelNotFoundError(
                f"{path}: not an omniret-saved model (no {SAVED_CONFIG}); pass family=... to load an HF directory "
                f"with a chosen recipe (known families: {', '.join(FAMILIES.names())})"
            )
        enc = FAMILIES.get(family)(path, **options)
        if meta.get("lora"):
            from omniret.encoders.lora import load_adapters

            load_adapters(enc.trainable_module(), path, meta["lora"])
        ref = str(path.resolve())
        if family != meta.get("family"):
            options = {**options, "family": family}
    elif family is not None:
        enc = FAMILIES.get(family)(key, **options)
        ref = key
        options = {**options, "family": family}
    else:
        raise ModelNotFoundError(
            f"unknown model {key!r}: not a registered name and not a directory. "
            f"Registered: {', '.join(ENCODERS.names())}"
        )
    kept = {k: v for k, v in options.items() if k not in RUNTIME_ONLY}
    enc.source = json.dumps({"model": ref, **kept}, sort_keys=True, default=str) if kept else ref
    return enc


def open_reference(ref: str, **options: Any) -> Encoder:
    """Reopen the model an ``Encoder.source`` names: a registered name, a directory, or a JSON object
    ``{"model": ..., "family": ..., <options>}`` (``options`` here override the stored ones, e.g. device)."""
    if ref.startswith("{"):
        try:
            spec = json.loads(ref)
            model = spec.pop("model")
        except (json.JSONDecodeError, KeyError, AttributeError) as e:
            raise ModelNotFoundError(f"encoder reference {ref!r} is not valid ({e})") from None
        return load_encoder(model, **{**spec, **options})
    return load_encoder(ref, **options)


__all__ = ["DEFAULT_ENCODER", "Encoder", "ENCODERS", "FAMILIES", "load_encoder", "load_builtins", "open_reference",
           "SAVED_CONFIG"]

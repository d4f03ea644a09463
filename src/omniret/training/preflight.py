"""Pre-flight checks of a training config: everything a run will read exists and every model option is one
the family accepts — checked before the model loads and before the run folder gets its fingerprint, so a
failed start costs seconds and leaves the folder reusable."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omniret.training.config import TrainConfig


def check_inputs(cfg: TrainConfig) -> None:
    """Raise :class:`~omniret.training.config.ConfigError` naming the first missing path or unknown option."""
    from omniret.training.config import ConfigError

    _check_model_options(cfg)
    init = cfg.model.init
    if init is not None and init.startswith("tiny:"):
        from omniret.encoders.tiny import TINY

        if init[len("tiny:"):] not in TINY:
            raise ConfigError(f"model.init: {init}: no tiny builder for that family; one of "
                              f"{', '.join('tiny:' + f for f in sorted(TINY))}")
    elif init is not None and not Path(init).exists():
        raise ConfigError(f"model.init: {init}: no such model directory")
    for st in cfg.resolved_stages():
        for i, src in enumerate(st.data.sources):
            where = f"stage {st.name!r}: data.sources[{i}]"
            for key in ("path", "pool", "queries", "image_root"):
                value = getattr(src, key, None)
                if value is not None and not Path(value).exists():
                    raise ConfigError(f"{where}.{key}: {value}: no such file or folder")
        if st.init not in ("base", "previous") and not Path(st.init).exists():
            raise ConfigError(f"stage {st.name!r}: init {st.init}: no such model directory")


def _check_model_options(cfg: TrainConfig) -> None:
    from omniret.encoders import FAMILIES, load_builtins
    from omniret.training.config import ConfigError

    load_builtins()
    family = cfg.model.family
    if family not in FAMILIES:
        raise ConfigError(f"model.family: unknown family {family!r}; known: {', '.join(FAMILIES.names())}")
    accepted = _accepted_options(FAMILIES.get(family))
    if accepted is None:
        return
    allowed = sorted(accepted - {"device"})
    unknown = sorted(set(cfg.model.options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"model.options: unknown option(s) {', '.join(unknown)} for family {family!r}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )


def _accepted_options(factory: object) -> set[str] | None:
    """Keyword options ``factory(path, **options)`` accepts, or ``None`` when it forwards ``**options`` (the
    family's own loader or constructor then refuses an unknown one, and the trainer reports it as a
    :class:`~omniret.training.config.ConfigError` naming ``model.options``)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return set(list(params)[1:])  # the first parameter is the model path

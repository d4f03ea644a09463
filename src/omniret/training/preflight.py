"""Pre-flight checks of a training config: everything a run will read exists and every model option is one
the family accepts — checked before the model loads and before the run folder gets its fingerprint, so a
failed start costs seconds and leaves the folder reusable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from omniret.training.config import TrainConfig


def check_inputs(cfg: TrainConfig) -> None:
    """Raise :class:`~omniret.training.config.ConfigError` naming the first missing path or unknown option."""
    from omniret.training.config import ConfigError

    check_model_options(cfg)
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


def check_model_options(cfg: TrainConfig) -> None:
    """Raise :class:`~omniret.training.config.ConfigError` when ``model.options`` names an option the family's
    loader does not accept (its declared set, :mod:`omniret.encoders.options`), or the device."""
    from omniret.encoders import FAMILIES, load_builtins
    from omniret.encoders.options import accepted_options
    from omniret.training.config import ConfigError

    load_builtins()
    family = cfg.model.family
    if family not in FAMILIES:
        raise ConfigError(f"model.family: unknown family {family!r}; known: {', '.join(FAMILIES.names())}")
    accepted = accepted_options(FAMILIES.get(family))
    if accepted is None:  # an undeclared third-party loader: it refuses unknown options itself, at build
        return
    if "device" in cfg.model.options:  # the trainer passes the config's own device and would override it
        raise ConfigError("model.options: device is set by the config's top-level 'device' key, not here")
    allowed = sorted(accepted - {"device"})
    unknown = sorted(set(cfg.model.options) - set(allowed))
    if unknown:
        raise ConfigError(
            f"model.options: unknown option(s) {', '.join(unknown)} for family {family!r}; "
            f"allowed: {', '.join(allowed) or '(none)'}"
        )


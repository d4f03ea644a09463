"""What trains: LoRA on the language model (via peft, :mod:`omniret.encoders.lora`) and freezing policies.

The policy reads only the encoder contract (``trainable_module``, ``param_roles``, ``lora_scope``), so it is
the same for every family. In order:

1. ``model.lora`` set: LoRA layers go into the family's language model (``lora_scope``; targets and scope
   overridable), and only the adapters train. A model that already carries adapters (a stage initialised
   from a previous stage saved with adapters kept) keeps training those instead of stacking new ones.
   ``model.lora`` null: full fine-tuning, every parameter trains.
2. the vision tower is frozen (``freeze_vision``), the projector and pooling heads train
   (``train_projector``), parameters the embedding never uses (an LM head) are frozen;
3. ``frozen`` then ``trainable`` fnmatch patterns over parameter names switch parameters off / on — e.g.
   ``trainable: ["text.pooler.*"]``.
"""

from __future__ import annotations

from fnmatch import fnmatch
from typing import Any

from omniret.encoders.lora import LoraSpec, inject_lora, is_lora_layer, remember_spec
from omniret.errors import OmniretError
from omniret.training.config import ModelConfig


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch(name, p) for p in patterns)


def apply_policy(encoder: Any, cfg: ModelConfig) -> dict[str, int]:
    """Apply LoRA + freezing to ``encoder.trainable_module()``. Returns ``{trainable, total}`` parameter counts."""
    module = encoder.trainable_module()
    has_lora = any(is_lora_layer(m) for m in module.modules())
    if cfg.lora is not None and not has_lora:
        scope, targets = encoder.lora_scope()
        spec = LoraSpec(r=cfg.lora.r, alpha=cfg.lora.alpha, dropout=cfg.lora.dropout,
                        targets=list(cfg.lora.target_modules or targets),
                        scope=scope if cfg.lora.scope is None else cfg.lora.scope)
        inject_lora(module, spec)
        remember_spec(module, spec)
        has_lora = True
    roles = encoder.param_roles()
    names = [n for n, _ in module.named_parameters()]
    for pat in cfg.frozen + cfg.trainable:
        if not any(fnmatch(n, pat) for n in names):
            raise OmniretError(f"model freezing pattern {pat!r} matches no parameter (e.g. {names[0]!r})")
    for n, p in module.named_parameters():
        on = ".lora_" in n if has_lora else True
        if cfg.freeze_vision and _matches(n, roles["vision"]):
            on = False
        if cfg.train_projector and _matches(n, roles["projector"]):
            on = True
        if _matches(n, roles["unused"]):
            on = False
        if _matches(n, cfg.frozen):
            on = False
        if _matches(n, cfg.trainable):
            on = True
        p.requires_grad_(on)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if trainable == 0:
        raise OmniretError("the freezing policy leaves no trainable parameter (check model.frozen/trainable/lora)")
    return {"trainable": trainable, "total": sum(p.numel() for p in module.parameters())}

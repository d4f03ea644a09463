"""LoRA adapters (via peft) and freezing policies by parameter-name patterns.

The policy is applied in order: LoRA injection (which freezes every non-adapter weight), then ``frozen``
patterns switch parameters off, then ``trainable`` patterns switch them on — e.g. MM-Embed's recipe is
``lora: {r: 8, alpha: 64}`` + ``trainable: ["projector.*"]`` (vision tower frozen, projector and LoRA
trained). Patterns are fnmatch globs over ``named_parameters()`` names.
"""

from __future__ import annotations

from fnmatch import fnmatch

from torch import nn

from omniret.errors import OmniretError
from omniret.training.config import LoraConfig, ModelConfig


def apply_lora(module: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Inject LoRA adapters in place into every ``nn.Linear`` whose name ends with a ``target_modules`` entry."""
    try:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model
    except ImportError as e:
        raise OmniretError("model.lora needs peft: pip install 'omniret[train]'") from e
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not any(n.split(".")[-1] in cfg.target_modules for n in names):
        raise OmniretError(
            f"model.lora.target_modules {cfg.target_modules} match no linear layer; examples of names: "
            f"{', '.join(sorted({n.split('.')[-1] for n in names})[:12])}"
        )
    peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules)
    return inject_adapter_in_model(peft_cfg, module)


def apply_policy(module: nn.Module, cfg: ModelConfig) -> dict[str, int]:
    """LoRA (if configured) then freeze/unfreeze by pattern. Returns parameter counts ``{trainable, total}``."""
    if cfg.lora is not None:
        apply_lora(module, cfg.lora)
    names = [n for n, _ in module.named_parameters()]
    for pat in cfg.frozen + cfg.trainable:
        if not any(fnmatch(n, pat) for n in names):
            raise OmniretError(f"model freezing pattern {pat!r} matches no parameter (e.g. {names[0]!r})")
    for n, p in module.named_parameters():
        if any(fnmatch(n, pat) for pat in cfg.frozen):
            p.requires_grad_(False)
        if any(fnmatch(n, pat) for pat in cfg.trainable):
            p.requires_grad_(True)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    if trainable == 0:
        raise OmniretError("the freezing policy leaves no trainable parameter (check model.frozen/trainable/lora)")
    return {"trainable": trainable, "total": sum(p.numel() for p in module.parameters())}

"""LoRA (Hu et al., arXiv:2106.09685) adapters on an encoder's trainable module, via peft, for every family.

* :func:`inject_lora` puts peft LoRA layers into the linear layers named by a :class:`LoraSpec` (a module
  prefix — the language model — and name suffixes such as ``q_proj``), in place.
* :func:`lora_detached` is how :meth:`Encoder.save` writes a model that has adapters: for the duration of
  the save every LoRA layer is swapped back for its base layer, so the family's ordinary ``save_pretrained``
  writes plain weights. ``merge=True`` adds ``scaling · B @ A`` to those base weights for the save (and puts
  the exact original weights back afterwards); otherwise the adapter tensors go to ``lora_adapters.safetensors``
  and the spec to ``omniret.json``'s ``lora`` entry.
* :func:`load_adapters` re-injects the saved spec after the family loaded the base weights and loads the
  adapter tensors, so ``load_encoder(path)`` returns the trained model either way.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from omniret.errors import ConfigError, ModelNotFoundError

ADAPTER_FILE = "lora_adapters.safetensors"


@dataclass
class LoraSpec:
    """Where and how LoRA is injected (saved in ``omniret.json`` so a reload injects the same layers)."""

    r: int = 8
    alpha: int = 64
    dropout: float = 0.0
    #: linear layers whose name ends in one of these (e.g. ``q_proj``)
    targets: list[str] = field(default_factory=list)
    #: ... under this module prefix of the trainable module ("" = anywhere)
    scope: str = ""

    def pattern(self) -> str:
        """The full-match regex peft applies to module names."""
        ends = "|".join(re.escape(t) for t in self.targets)
        head = re.escape(self.scope) + r"\.(.*\.)?" if self.scope else r"(.*\.)?"
        return f"{head}({ends})"


def is_lora_layer(mod: nn.Module) -> bool:
    """A peft LoRA layer (duck-typed so the library does not import peft unless LoRA is used)."""
    return hasattr(mod, "base_layer") and hasattr(mod, "lora_A") and hasattr(mod, "active_adapters")


def inject_lora(module: nn.Module, spec: LoraSpec) -> nn.Module:
    """Inject LoRA layers into ``module`` in place; every linear layer the spec names gets one."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError as e:  # pragma: no cover - peft is in the train/dev extras
        raise ConfigError("LoRA needs peft: pip install 'omniret[train]'") from e
    if spec.r < 1 or spec.alpha <= 0 or not spec.targets:
        raise ConfigError(f"lora: needs r >= 1, alpha > 0 and at least one target module, got {asdict(spec)}")
    rx = re.compile(spec.pattern())
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not any(rx.fullmatch(n) for n in names):
        ends = ", ".join(sorted({n.split(".")[-1] for n in names})[:12])
        raise ConfigError(f"lora.target_modules {spec.targets} under {spec.scope or 'the model'!r} match no linear "
                          f"layer; linear layer names end in e.g. {ends}")
    cfg = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=spec.pattern())
    return inject_adapter_in_model(cfg, module)


def _parent(root: nn.Module, name: str) -> tuple[nn.Module, str]:
    head, _, attr = name.rpartition(".")
    return (root.get_submodule(head) if head else root), attr


@contextlib.contextmanager
def lora_detached(root: nn.Module | None, *, merge: bool, out: Path) -> Iterator[dict[str, Any] | None]:
    """While active, ``root``'s LoRA layers are replaced by their (merged, if ``merge``) base layers.

    Unless merging, writes the adapter tensors to ``out/lora_adapters.safetensors``. Yields the ``lora`` entry
    for ``omniret.json`` (``None`` when there are no adapters or they were merged).
    """
    layers = [(n, m) for n, m in root.named_modules() if is_lora_layer(m)] if root is not None else []
    (out / ADAPTER_FILE).unlink(missing_ok=True)
    if not layers:
        yield None
        return
    meta = None
    if not merge:
        from safetensors.torch import save_file

        state = {k: v.detach().float().cpu().contiguous() for k, v in root.state_dict().items() if ".lora_" in k}
        save_file(state, str(out / ADAPTER_FILE))
        meta = _spec_of(root, layers)
    swaps = []
    try:
        with torch.no_grad():
            for name, layer in layers:
                base = layer.base_layer
                orig = base.weight.data
                if merge:
                    delta = sum(layer.get_delta_weight(a) for a in layer.active_adapters)
                    base.weight.data = orig + delta.to(orig.dtype)
                parent, attr = _parent(root, name)
                setattr(parent, attr, base)
                swaps.append((parent, attr, layer, base, orig))
        yield meta
    finally:
        for parent, attr, layer, base, orig in reversed(swaps):
            base.weight.data = orig  # the exact pre-merge tensor, not a subtraction
            setattr(parent, attr, layer)


def _spec_of(root: nn.Module, layers: list[tuple[str, nn.Module]]) -> dict[str, Any]:
    """The spec that re-injects exactly ``layers``: stored on the root by :func:`remember_spec`."""
    spec = getattr(root, "_omniret_lora_spec", None)
    if spec is None:
        raise ConfigError("the model has LoRA layers that omniret did not inject; cannot save them as adapters "
                          "(save with merge_lora=True)")
    return asdict(spec)


def remember_spec(root: nn.Module, spec: LoraSpec) -> None:
    """Record on ``root`` the spec it was injected with (what :meth:`Encoder.save` writes)."""
    root._omniret_lora_spec = spec  # type: ignore[attr-defined]


def load_adapters(root: nn.Module, path: Path, meta: dict[str, Any]) -> None:
    """Inject the LoRA spec ``meta`` (from ``omniret.json``) into ``root`` and load its saved adapter tensors."""
    from safetensors.torch import load_file

    file = path / ADAPTER_FILE
    if not file.is_file():
        raise ModelNotFoundError(f"{path}: omniret.json lists LoRA adapters but {ADAPTER_FILE} is missing")
    try:
        spec = LoraSpec(**meta)
    except TypeError as e:
        raise ModelNotFoundError(f"{path}: invalid lora entry in omniret.json ({e})") from None
    inject_lora(root, spec)
    remember_spec(root, spec)
    state = load_file(str(file))
    own = {k for k in root.state_dict() if ".lora_" in k}
    if set(state) != own:
        diff = sorted(set(state) ^ own)[:3]
        raise ModelNotFoundError(f"{file}: adapter tensors do not match the injected layers (e.g. {diff})")
    ref = next(iter(root.parameters()))
    root.load_state_dict({k: v.to(ref.device) for k, v in state.items()}, strict=False)

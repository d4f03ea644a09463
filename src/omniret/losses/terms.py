"""Loss terms composed by config: a registry of named terms, each with a weight.

A training config lists its objective as terms (``loss.terms``)::

    loss:
      terms:
        - {name: contrastive, weight: 1.0, temperature: 0.02}
        - {name: orth, weight: 0.5}           # ReMatch's L_orth on the K token states
        - {name: match, weight: 0.1}          # ReMatch's generative matching (omniret.training.matching)

The total loss is ``Σ weight · term``; every term's unweighted value is logged as ``loss_<name>``.

Writing a term
--------------
Subclass :class:`LossTerm`, register it with ``@LOSS_TERMS.register("name")``; its constructor's keyword
arguments are the keys a config may give beside ``name`` and ``weight`` (an unknown key is a config error).
``forward(inputs: LossInputs) -> scalar tensor``. Say what the term needs with the class attribute ``needs``:

* ``"embeddings"`` — only ``inputs.queries`` / ``positives`` / ``negatives`` (``(B, D)``, ``(B, D)``,
  ``(B, H, D)`` or ``None``; this process's rows, not normalised). Works with GradCache.
* ``"parameters"`` — also the encoder's parameters (``inputs.encoder.trainable_module()``, e.g. an
  orthogonality penalty on a learnable token bank). Works with GradCache: the term's gradient reaches the
  parameters directly.
* ``"tokens"`` — also the per-token states of a multi-token family (``inputs.tokens``: ``{"queries":
  (B, K, D), "positives": (B, K, D), "negatives": (B·H, K, D) or None}`` from ``encoder.embed_tokens``, the
  same forward pass that gives the embeddings), e.g. ReMatch's orthogonality loss. Works with GradCache
  (the token states are cached beside the embeddings).
* ``"items"`` — also the batch's :class:`~omniret.types.Item` lists (``inputs.items``: ``{"queries": [...],
  "positives": [...], "negatives": [...] or absent}``) for a forward pass of its own that reads the encoder's
  weights and the embeddings but no activation of the embedding passes, e.g. ReMatch's generative matching.
  Works with GradCache: the gradient it sends into the embeddings is cached like the other terms'; its own
  pass is whole-batch (its memory is not chunked).
* ``"forward"`` — its own differentiable forward pass over the prepared batch (``inputs.prepared``:
  ``{"queries": prepared, "positives": prepared, "negatives": prepared or None}`` from ``encoder.prepare``).
  GradCache never holds a whole batch's prepared inputs and activations, so such a term is refused at config
  validation when ``optim.gradcache_chunk`` is set.

A term that owns parameters sized by the model (e.g. a projector into the LM's input space) creates them in
:meth:`LossTerm.bind`, which the trainer calls with the encoder before it builds the optimiser.

Under ``torchrun`` a term sees its process's shard; a term that needs other processes' rows gathers them
itself (see :func:`omniret.losses.gather_with_grad`, as :class:`~omniret.losses.InfoNCE` does).
Extra values worth logging (e.g. the learnable temperature) come from :meth:`LossTerm.log_values`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from omniret.errors import ConfigError, OmniretError
from omniret.losses.contrastive import InfoNCE
from omniret.registry import Registry

NEEDS = ("embeddings", "parameters", "tokens", "items", "forward")


@dataclass
class LossInputs:
    """What a term may read (see the module docstring)."""

    queries: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor | None = None
    encoder: Any = None
    prepared: dict[str, Any] | None = None
    tokens: dict[str, torch.Tensor | None] | None = None
    items: dict[str, list[Any]] | None = None


class LossTerm(nn.Module):
    """One named objective; ``needs`` says what it reads (see :data:`NEEDS` and the module docstring)."""

    needs: ClassVar[str] = "embeddings"

    def bind(self, encoder: Any) -> None:
        """Create model-sized state (called once by the trainer before the optimiser exists)."""

    def forward(self, inputs: LossInputs) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_values(self) -> dict[str, float]:
        """Extra scalars to log beside the loss (name -> value)."""
        return {}


LOSS_TERMS: Registry[type[LossTerm]] = Registry("loss term")


@LOSS_TERMS.register("contrastive", "InfoNCE over in-batch (+ hard) negatives, gathered across processes")
class ContrastiveTerm(LossTerm):
    """:class:`InfoNCE` (cosine / τ; in-batch candidates plus each query's hard negatives)."""

    needs = "embeddings"

    def __init__(self, temperature: float = 0.05, learnable_temperature: bool = False, symmetric: bool = False) -> None:
        super().__init__()
        self.info_nce = InfoNCE(temperature, learnable_temperature, symmetric)

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return self.info_nce(inputs.queries, inputs.positives, inputs.negatives)

    def log_values(self) -> dict[str, float]:
        return {"tau": round(float(self.info_nce.temperature.detach()), 5)}


class CompositeLoss(nn.Module):
    """``Σ weight_i · term_i``; ``forward`` returns the total and each term's (unweighted, detached) value."""

    def __init__(self, terms: dict[str, LossTerm], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    @property
    def needs(self) -> set[str]:
        return {t.needs for t in self.terms.values()}

    def bind(self, encoder: Any) -> CompositeLoss:
        """:meth:`LossTerm.bind` every term to ``encoder``; returns ``self``."""
        for term in self.terms.values():
            term.bind(encoder)
        return self

    def forward(self, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {name: term(inputs) for name, term in self.terms.items()}
        total = sum(self.weights[n] * v for n, v in parts.items())
        return total, {n: v.detach() for n, v in parts.items()}

    def log_values(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for term in self.terms.values():
            out.update(term.log_values())
        return out


def build_loss(specs: list[dict[str, Any]], where: str = "loss.terms") -> CompositeLoss:
    """Build a :class:`CompositeLoss` from config entries ``{name, weight, **options}``; every problem is a
    :class:`ConfigError` naming the entry."""
    if not specs:
        raise ConfigError(f"{where}: at least one loss term is needed")
    terms, weights = {}, {}
    for i, raw in enumerate(specs):
        at = f"{where}[{i}]"
        if not isinstance(raw, dict) or "name" not in raw:
            raise ConfigError(f"{at}: expected a mapping with a 'name' (one of {', '.join(LOSS_TERMS.names())})")
        opts = dict(raw)
        name, weight = opts.pop("name"), opts.pop("weight", 1.0)
        if name not in LOSS_TERMS:
            raise ConfigError(f"{at}: unknown loss term {name!r}; known: {', '.join(LOSS_TERMS.names())}")
        if name in terms:
            raise ConfigError(f"{at}: loss term {name!r} is listed twice")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise ConfigError(f"{at}.weight: expected a number >= 0, got {weight!r}")
        cls = LOSS_TERMS.get(name)
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        unknown = sorted(set(opts) - set(allowed))
        if unknown:
            raise ConfigError(f"{at}: unknown option(s) {', '.join(unknown)} for term {name!r}; "
                              f"allowed: name, weight, {', '.join(allowed)}")
        try:
            term = cls(**opts)
        except (TypeError, ValueError, OmniretError) as e:
            raise ConfigError(f"{at}: {e}") from None
        if term.needs not in NEEDS:
            raise ConfigError(f"{at}: term {name!r} declares needs={term.needs!r}; expected one of {NEEDS}")
        terms[name], weights[name] = term, float(weight)
    return CompositeLoss(terms, weights)


__all__ = ["LOSS_TERMS", "LossTerm", "LossInputs", "CompositeLoss", "ContrastiveTerm", "build_loss"]

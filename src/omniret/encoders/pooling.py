"""Poolers: turn a ``(B, L, D)`` hidden-state tensor into ``(B, D)`` embeddings.

Every pooler works with either padding side: positions are taken from the mask, never assumed.
Registered in ``POOLERS`` so a family's recipe names its pooler by string.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from omniret.registry import Registry

Pooler = Callable[..., torch.Tensor]
POOLERS: Registry[Pooler] = Registry("pooler")


def _check(hidden: torch.Tensor, mask: torch.Tensor) -> None:
    if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
        raise ValueError(f"pooling expects hidden (B, L, D) and mask (B, L); got {tuple(hidden.shape)} "
                         f"and {tuple(mask.shape)}")


@POOLERS.register("mean")
def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` over positions where ``mask`` is non-zero.

    Args:
        hidden: ``(B, L, D)`` hidden states.
        mask: ``(B, L)`` 0/1 (or bool) selection: the attention mask, or a pool mask that also zeroes
            instruction tokens, or a mask of appended learnable tokens.

    Returns:
        ``(B, D)`` in ``hidden``'s dtype; rows with an empty mask are zeros (never NaN).
    """
    _check(hidden, mask)
    keep = mask.bool().unsqueeze(-1)
    # masked_fill, not multiply: padded rows of some attention kernels hold NaN, and NaN * 0 is NaN.
    # Sum in float32: bf16 accumulation over long sequences drifts.
    total = hidden.float().masked_fill(~keep, 0.0).sum(dim=1)
    count = keep.float().sum(dim=1).clamp(min=1.0)
    return (total / count).to(hidden.dtype)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last non-zero position of every row of a ``(B, L)`` mask -> ``(B,)`` long.

    Works for right padding (``1 1 1 0 0``), left padding (``0 0 1 1 1``) and mixed batches alike, unlike
    the ``mask.sum(1) - 1`` shortcut, which is only right for right padding.
    """
    m = mask.to(torch.long)
    if (m.sum(dim=1) == 0).any():
        raise ValueError("last-token pooling: a row of the mask selects no token")
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    return (positions * m).argmax(dim=1)


@POOLERS.register("last")
def last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state at the last unmasked position of every row: ``(B, L, D) -> (B, D)``."""
    _check(hidden, mask)
    idx = last_token_index(mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


@POOLERS.register("first")
def first_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state at the first unmasked position of every row (CLS-style): ``(B, L, D) -> (B, D)``."""
    _check(hidden, mask)
    idx = mask.to(torch.long).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def pool(name: str, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Apply the registered pooler ``name`` (``"mean"``, ``"last"``, ``"first"``)."""
    return POOLERS.get(name)(hidden, mask)


__all__ = ["POOLERS", "masked_mean", "last_token", "last_token_index", "first_token", "pool"]

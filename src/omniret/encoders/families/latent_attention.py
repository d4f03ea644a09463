"""NV-Embed latent-attention pooling, written from the NV-Embed paper / METHODS.md §2.1 (not copied).

Steps, for last hidden states ``H`` of shape ``(B, L, D)`` and a learned latent array ``Lat`` ``(R, D)``:

1. cross-attention in which the *sequence tokens are the queries* and the latents are keys and values::

       H <- to_out(MHA(q=to_q(LN_q(H)), k,v=chunk(to_kv(LN_lat(Lat)), 2))) + H      # no mask

2. a GEGLU feed-forward (inner size ``mult * D``) with pre-norm and residual::

       x, gate = chunk(ffn_in(LN_ffn(H)), 2);  H <- ffn_out(x * gelu(gate)) + H

3. masked mean of ``H`` over ``pool_mask`` -> ``(B, D)`` (the encoder base L2-normalises).

The sequence positions never interact with each other here (each token attends only to the latents), so
the output of one position does not depend on padding or batch composition.

:func:`map_reference_latent_keys` renames the reference checkpoint layout
(``cross_attend_blocks.{0,1}.*``, ``latents``) onto this module's parameter names.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from omniret.encoders.pooling import masked_mean
from omniret.errors import OmniretError


@dataclass(frozen=True)
class LatentAttentionConfig:
    """Sizes of the pooler. NV-Embed-v1 / MM-Embed: 512 latents, 8 heads, head dim = hidden = 4096, mult 4."""

    hidden_dim: int
    num_latents: int = 512
    num_heads: int = 8
    head_dim: int = 4096
    ffn_mult: int = 4

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatentAttentionConfig:
        return cls(**{k: int(d[k]) for k in ("hidden_dim", "num_latents", "num_heads", "head_dim", "ffn_mult")})


class LatentAttentionPooler(nn.Module):
    """Latent-attention pooling: ``(B, L, D)`` hidden states + ``(B, L)`` pool mask -> ``(B, D)``."""

    def __init__(self, cfg: LatentAttentionConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, inner = cfg.hidden_dim, cfg.num_heads * cfg.head_dim
        self.latents = nn.Parameter(torch.randn(cfg.num_latents, d))
        self.norm_q = nn.LayerNorm(d)
        self.norm_latents = nn.LayerNorm(d)
        self.to_q = nn.Linear(d, inner, bias=False)
        self.to_kv = nn.Linear(d, 2 * inner, bias=False)
        self.to_out = nn.Linear(inner, d, bias=False)
        self.norm_ffn = nn.LayerNorm(d)
        self.ffn_in = nn.Linear(d, 2 * cfg.ffn_mult * d)
        self.ffn_out = nn.Linear(cfg.ffn_mult * d, d)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, N, H*Dh)`` -> ``(B, H, N, Dh)``."""
        b, n, _ = x.shape
        return x.view(b, n, self.cfg.num_heads, self.cfg.head_dim).transpose(1, 2)

    def token_states(self, hidden: torch.Tensor) -> torch.Tensor:
        """Steps 1-2 for every position: ``(B, L, D)`` -> ``(B, L, D)`` (before pooling)."""
        b, n, _ = hidden.shape
        lat = self.norm_latents(self.latents).unsqueeze(0).expand(b, -1, -1)
        k, v = self.to_kv(lat).chunk(2, dim=-1)
        q = self._heads(self.to_q(self.norm_q(hidden)))
        # SDPA's default scale is head_dim ** -0.5, the reference's scale
        att = nn.functional.scaled_dot_product_attention(q, self._heads(k), self._heads(v))
        hidden = self.to_out(att.transpose(1, 2).reshape(b, n, -1)) + hidden
        x, gate = self.ffn_in(self.norm_ffn(hidden)).chunk(2, dim=-1)
        return self.ffn_out(x * nn.functional.gelu(gate)) + hidden

    def forward(self, hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
        """``hidden (B, L, D)``, ``pool_mask (B, L)`` 0/1 -> masked mean ``(B, D)`` (not normalised)."""
        return masked_mean(self.token_states(hidden), pool_mask)


# reference (NV-Embed / MM-Embed remote code) name -> ours, relative to the latent-attention prefix
_REFERENCE_NAMES = {
    "latents": "latents",
    "cross_attend_blocks.0.norm.weight": "norm_q.weight",
    "cross_attend_blocks.0.norm.bias": "norm_q.bias",
    "cross_attend_blocks.0.norm_context.weight": "norm_latents.weight",
    "cross_attend_blocks.0.norm_context.bias": "norm_latents.bias",
    "cross_attend_blocks.0.fn.to_q.weight": "to_q.weight",
    "cross_attend_blocks.0.fn.to_kv.weight": "to_kv.weight",
    "cross_attend_blocks.0.fn.to_out.weight": "to_out.weight",
    "cross_attend_blocks.1.norm.weight": "norm_ffn.weight",
    "cross_attend_blocks.1.norm.bias": "norm_ffn.bias",
    "cross_attend_blocks.1.fn.net.0.weight": "ffn_in.weight",
    "cross_attend_blocks.1.fn.net.0.bias": "ffn_in.bias",
    "cross_attend_blocks.1.fn.net.2.weight": "ffn_out.weight",
    "cross_attend_blocks.1.fn.net.2.bias": "ffn_out.bias",
}


def map_reference_latent_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a reference latent-attention state dict (keys relative to its module) to ours.

    Raises :class:`OmniretError` naming any key that has no counterpart or any missing key.
    """
    unknown = sorted(set(state) - set(_REFERENCE_NAMES))
    missing = sorted(set(_REFERENCE_NAMES) - set(state))
    if unknown or missing:
        raise OmniretError(
            f"latent-attention weights do not match the NV-Embed layout: unknown {unknown[:5]}, missing {missing[:5]}"
        )
    return {_REFERENCE_NAMES[k]: v for k, v in state.items()}


def infer_config(state: dict[str, torch.Tensor], num_heads: int = 8, ffn_mult: int | None = None) -> LatentAttentionConfig:
    """Sizes from our-layout weights; the head count is not recoverable from shapes, so it is an input."""
    num_latents, d = state["latents"].shape
    inner = state["to_q.weight"].shape[0]
    if inner % num_heads:
        raise OmniretError(f"latent attention: inner size {inner} is not divisible by num_heads={num_heads}")
    mult = ffn_mult or state["ffn_out.weight"].shape[1] // d
    return LatentAttentionConfig(d, num_latents, num_heads, inner // num_heads, mult)


__all__ = ["LatentAttentionConfig", "LatentAttentionPooler", "map_reference_latent_keys", "infer_config"]

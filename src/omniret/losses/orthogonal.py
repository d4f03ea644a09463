"""ReMatch's orthogonal regulariser for multi-token embeddings (arXiv 2511.19278 §3; docs/rematch.md).

``L_orth = 2 / (K(K-1)) · Σ_{i<j} (ê_iᵀ ê_j)²`` per input, averaged over inputs: it pushes the K learnable
token states of one input towards mutually orthogonal directions so they carry different information.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from omniret.errors import OmniretError
from omniret.losses.terms import LOSS_TERMS, LossInputs, LossTerm


def orthogonal_loss(tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean pairwise squared cosine between the K token embeddings of each input.

    Args:
        tokens: ``(N, K, D)`` with K ≥ 2.
        mask: optional ``(N,)`` bool; only inputs where it is True are averaged.

    Returns:
        scalar loss in ``[0, 1]``.
    """
    if tokens.ndim != 3 or tokens.shape[1] < 2:
        raise OmniretError(f"orthogonal_loss: tokens must be (N, K>=2, D), got shape {tuple(tokens.shape)}")
    e = F.normalize(tokens.float(), dim=-1)
    gram = e @ e.transpose(1, 2)  # (N, K, K)
    k = tokens.shape[1]
    off = ~torch.eye(k, dtype=torch.bool, device=tokens.device)
    # the off-diagonal holds each unordered pair twice, so the mean over it equals 2/(K(K-1)) Σ_{i<j}
    per_input = gram.pow(2)[:, off].mean(dim=1)  # (N,)
    if mask is not None:
        if mask.shape != (tokens.shape[0],):
            raise OmniretError(f"orthogonal_loss: mask must be ({tokens.shape[0]},), got {tuple(mask.shape)}")
        if not bool(mask.any()):
            return per_input.sum() * 0.0
        per_input = per_input[mask.bool()]
    return per_input.mean()


@LOSS_TERMS.register("orth", "ReMatch's L_orth: mean pairwise squared cosine of each input's K token states")
class OrthTerm(LossTerm):
    """:func:`orthogonal_loss` over the K token states of every query, positive and hard negative of the
    batch (arXiv 2511.19278 §3; averaged over all of them [I])."""

    needs = "tokens"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        if not inputs.tokens:
            raise OmniretError("loss term 'orth' needs token states; the encoder gave none")
        return orthogonal_loss(torch.cat([t for t in inputs.tokens.values() if t is not None]))

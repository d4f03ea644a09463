"""ReMatch's generative matching loss (arXiv 2511.19278 §3, "MVQDM"; docs/rematch.md).

The MLLM reads a (query view, document view) pair and answers whether they are related; the loss is the
next-token cross-entropy of the label token ("Yes" for the positive document, "No" for the hard negative) at
the answer position only, averaged over every pair of every sample. The packing that produces the answer
logits lives in :mod:`omniret.training.matching`; this module is the maths on logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from omniret.errors import OmniretError


def matching_loss(answer_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of the label token over all answers.

    Args:
        answer_logits: ``(N, V)`` vocabulary logits at the position that predicts each answer's label token.
        labels: ``(N,)`` long, the label token id of each answer (the "Yes" or "No" token).

    Returns:
        scalar loss (float32).
    """
    if answer_logits.ndim != 2 or answer_logits.shape[0] == 0:
        raise OmniretError(f"matching_loss: answer_logits must be (N>0, V), got {tuple(answer_logits.shape)}")
    if labels.shape != answer_logits.shape[:1]:
        raise OmniretError(f"matching_loss: labels must be ({answer_logits.shape[0]},), got {tuple(labels.shape)}")
    return F.cross_entropy(answer_logits.float(), labels.to(answer_logits.device))


def yes_probability(answer_logits: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """``P(Yes) / (P(Yes) + P(No))`` per answer, ``(N, V) -> (N,)``: a readable matching accuracy signal."""
    two = answer_logits[:, [yes_id, no_id]].float()
    return two.softmax(-1)[:, 0]


__all__ = ["matching_loss", "yes_probability"]

"""InfoNCE with in-batch negatives, explicit hard negatives and an optional symmetric term.

Embeddings in, scalar out. Scores are cosine similarities divided by a temperature that is either fixed or
learnable (stored as ``log τ`` so it stays positive). Under ``torch.distributed`` the candidates (and, for
the symmetric term, the queries) of every process are gathered with gradients flowing back to the local
shard, so a run on W processes optimises exactly the loss of one W-times-larger batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from omniret.errors import OmniretError
from omniret.losses.distributed import gather_with_grad, world


def _check(name: str, t: torch.Tensor, ndim: int, dim: int | None = None) -> None:
    if t.ndim != ndim:
        raise OmniretError(f"InfoNCE: {name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if dim is not None and t.shape[-1] != dim:
        raise OmniretError(f"InfoNCE: {name} has embedding size {t.shape[-1]}, queries have {dim}")


class InfoNCE(nn.Module):
    """Contrastive loss ``-mean_i log softmax_j(s(q_i, c_j)/τ)[target_i]`` with cosine ``s``.

    Args:
        temperature: τ (initial value when learnable).
        learnable_temperature: learn ``log τ``, clamped to ``[min_temperature, 1]``.
        symmetric: add the document→query term (each positive against all queries) and average the two.
        gather: gather candidates across processes when torch.distributed is initialised.
        min_temperature: lower clamp of a learnable τ (avoids a collapsing softmax).
    """

    def __init__(
        self,
        temperature: float = 0.02,
        learnable_temperature: bool = False,
        symmetric: bool = False,
        gather: bool = True,
        min_temperature: float = 1e-3,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise OmniretError(f"InfoNCE: temperature must be > 0, got {temperature}")
        log_t = torch.tensor(math.log(temperature))
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)
        self.symmetric = symmetric
        self.gather = gather
        self._log_min = math.log(min_temperature)

    @property
    def temperature(self) -> torch.Tensor:
        """The current τ (a 0-d tensor, differentiable when learnable). Only a learnable τ is clamped; a fixed
        one is used exactly as configured (a τ > 1 is unusual but is the user's explicit choice)."""
        if isinstance(self.log_temperature, nn.Parameter):
            return self.log_temperature.clamp(self._log_min, 0.0).exp()
        return self.log_temperature.exp()

    def forward(
        self, queries: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Loss over in-batch negatives plus explicit hard negatives.

        Args:
            queries: ``(B, D)``.
            positives: ``(B, D)``; row i is query i's positive and a negative for every other query.
            negatives: optional hard negatives, ``(B, H, D)`` (H per query) or a flat ``(M, D)`` pool; every
                query is scored against all of them (the VLM2Vec / ReMatch negative set).

        Returns:
            scalar loss.
        """
        _check("queries", queries, 2)
        _check("positives", positives, 2, queries.shape[1])
        if positives.shape[0] != queries.shape[0]:
            raise OmniretError(f"InfoNCE: {queries.shape[0]} queries but {positives.shape[0]} positives")
        cands = [positives]
        if negatives is not None:
            if negatives.ndim == 3:
                _check("negatives", negatives, 3, queries.shape[1])
                negatives = negatives.reshape(-1, negatives.shape[-1])
            _check("negatives", negatives, 2, queries.shape[1])
            cands.append(negatives)
        rank, _ = world()
        n_local = queries.shape[0]
        targets = torch.arange(n_local, device=queries.device) + rank * n_local
        all_pos = self._gather(positives)
        pool = torch.cat([all_pos] + [self._gather(c) for c in cands[1:]], dim=0)
        loss = self.pool_loss(queries, pool, targets)
        if self.symmetric:
            # document -> query: each local positive against all (gathered) queries
            loss = 0.5 * (loss + self.pool_loss(positives, self._gather(queries), targets))
        return loss

    def pool_loss(self, queries: torch.Tensor, pool: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``queries`` ``(B, D)`` over a candidate ``pool`` ``(M, D)``.

        ``targets`` ``(B,)`` holds the index of each query's positive in ``pool``. No gathering here.
        """
        _check("queries", queries, 2)
        _check("pool", pool, 2, queries.shape[1])
        if targets.shape != (queries.shape[0],):
            raise OmniretError(f"InfoNCE: targets must have shape ({queries.shape[0]},), got {tuple(targets.shape)}")
        if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= pool.shape[0]):
            raise OmniretError(f"InfoNCE: a target index is outside the pool of {pool.shape[0]} candidates")
        q = F.normalize(queries.float(), dim=-1)
        c = F.normalize(pool.float(), dim=-1)
        logits = q @ c.T / self.temperature
        return F.cross_entropy(logits, targets.long())

    def _gather(self, x: torch.Tensor) -> torch.Tensor:
        return gather_with_grad(x) if self.gather else x

"""A differentiable all-gather so contrastive losses can use every process's candidates as negatives.

``torch.distributed.all_gather`` returns tensors that are cut off from autograd. Here each process gets the
concatenation of every process's rows, and in the backward pass the gradient of *its own* rows is the sum of
the gradients every process computed for them (an all-reduce), so each process backprops exactly what the
full-batch loss would have sent to its shard.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from omniret.errors import OmniretError


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, size = world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        out = [torch.empty_like(x) for _ in range(size)]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # every process computed a loss over all rows; the full objective is the sum of those losses, so the
        # local rows' gradient is the sum over processes of their gradients for these rows
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather ``x`` ``(n, ...)`` from every process into ``(world * n, ...)``, ordered by rank.

    Gradients flow back to the local shard. Without an initialised process group this returns ``x``.
    Every process must pass the same ``n`` (drop the last uneven batch).
    """
    rank, size = world()
    if size == 1:
        return x
    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(size)]
    dist.all_gather(sizes, n)
    if any(int(s) != x.shape[0] for s in sizes):
        raise OmniretError(
            f"gather_with_grad: processes hold different row counts {[int(s) for s in sizes]}; "
            "use equal per-process batches (drop_last)"
        )
    return _GatherWithGrad.apply(x)

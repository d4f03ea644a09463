"""Process-group helpers for ``torchrun`` training (gloo on CPU, nccl on GPU).

The differentiable all-gather used by the losses lives in :mod:`omniret.losses.distributed` (the library
must not depend on training); this module sets up and tears down the process group and wraps models.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import nn

from omniret.losses.distributed import world


def init_from_env(backend: str | None = None) -> tuple[int, int]:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1); a no-op otherwise.

    Returns ``(rank, world_size)``. The backend defaults to nccl when CUDA is available, else gloo.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size > 1 and not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world()


def is_main() -> bool:
    """True on rank 0 (and in single-process runs): the process that writes checkpoints and logs."""
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over processes (for logging losses); returns ``x`` unchanged when single-process."""
    if world()[1] == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.SUM)
    return y / world()[1]


def average_gradients(params: list[nn.Parameter]) -> None:
    """Replace each parameter's ``.grad`` by its mean over processes (a missing grad counts as zeros).

    Called once per optimiser step, after every backward of the step. Unlike DDP's per-backward hooks this is
    indifferent to how many backwards a step takes (GradCache, accumulation), to parameters a process did not
    use (the image projector in a text-only batch) and to parameters outside the model (a learnable
    temperature): one flattened all-reduce per step, of the trainable parameters only.
    """
    if world()[1] == 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world()[1]
    for p, g in zip(params, flat.split([p.numel() for p in params]), strict=True):
        p.grad = g.view_as(p)


@contextlib.contextmanager
def process_group_from_env(backend: str | None = None) -> Iterator[tuple[int, int]]:
    """Context manager: init from the environment, destroy the group on exit."""
    rw = init_from_env(backend)
    try:
        yield rw
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

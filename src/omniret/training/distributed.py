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


def wrap_ddp(model: nn.Module) -> nn.Module:
    """Wrap in DistributedDataParallel when a process group is up (frozen parameters are fine)."""
    if world()[1] == 1:
        return model
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    ids = [dev.index] if dev.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)


def no_sync_factory(model: nn.Module):
    """``model.no_sync`` for a DDP model (skip all-reduce on intermediate backwards), else ``None``."""
    return model.no_sync if isinstance(model, nn.parallel.DistributedDataParallel) else None


@contextlib.contextmanager
def process_group_from_env(backend: str | None = None) -> Iterator[tuple[int, int]]:
    """Context manager: init from the environment, destroy the group on exit."""
    rw = init_from_env(backend)
    try:
        yield rw
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

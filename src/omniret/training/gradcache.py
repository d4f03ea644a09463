"""GradCache (Gao et al., 2021): contrastive batches far larger than memory, with exact gradients.

A contrastive loss couples every embedding in the batch, so the batch cannot simply be split into
gradient-accumulation steps. GradCache splits only the *encoder* work:

1. embed every chunk without autograd and keep the ``(n, D)`` embeddings (cheap to store);
2. compute the loss on the full set of embeddings and backprop to them — the gradient of the loss with
   respect to each embedding is now cached;
3. re-embed each chunk with autograd and backprop its cached gradient through the encoder.

Peak activation memory is that of one chunk. Dropout masks must be the same in (1) and (3), so the RNG
state before each chunk is recorded and replayed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import torch


class _RngState:
    """CPU and (initialised) CUDA generator states, captured before a chunk and replayed for it."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    @contextlib.contextmanager
    def replay(self):
        devices = list(range(len(self.cuda))) if self.cuda is not None else []
        # fork_rng restores the post-step-1 state afterwards, so the caller's RNG stream is unaffected
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state_all(self.cuda)
            yield


def grad_cache_step(
    encode: Callable[[Any], torch.Tensor],
    groups: Sequence[Sequence[Any]],
    loss_fn: Callable[..., torch.Tensor],
) -> torch.Tensor:
    """Run one forward/backward of ``loss_fn`` over chunked inputs; gradients land in ``.grad`` as with
    ``loss.backward()`` on the unchunked batch.

    Args:
        encode: maps one chunk to its embeddings ``(n, D)`` (it carries whatever it needs, e.g. query vs
            document side).
        groups: one list of chunks per loss argument, e.g. ``[query_chunks, positive_chunks]``.
        loss_fn: called as ``loss_fn(*embeddings)`` with ``embeddings[g]`` = ``(sum n, D)`` of group ``g``
            (e.g. an :class:`omniret.losses.InfoNCE`; its own parameters get gradients directly).

    Returns:
        the detached scalar loss.
    """
    reps, states = [], []
    with torch.no_grad():
        for chunks in groups:
            outs = []
            for chunk in chunks:
                states.append(_RngState())
                outs.append(encode(chunk))
            reps.append(torch.cat(outs).detach().requires_grad_())
    loss = loss_fn(*reps)
    loss.backward()

    jobs = [(chunk, g) for g, chunks in enumerate(groups) for chunk in chunks]
    offsets = [0] * len(groups)
    for (chunk, g), state in zip(jobs, states, strict=True):
        with state.replay():
            emb = encode(chunk)
            grad = reps[g].grad[offsets[g] : offsets[g] + emb.shape[0]]
            offsets[g] += emb.shape[0]
            # a surrogate whose gradient w.r.t. emb is the cached one
            torch.autograd.backward(emb, grad_tensors=grad.to(emb.dtype))
    return loss.detach()


def chunked(seq: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """Split ``seq`` into consecutive chunks of ``size`` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [seq[i : i + size] for i in range(0, len(seq), size)]

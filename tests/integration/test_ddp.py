"""Two gloo processes with gathered negatives give exactly the single-process full-batch gradients."""

import os

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn

from omniret.losses import InfoNCE
from omniret.training.distributed import average_gradients
from omniret.training.gradcache import chunked, grad_cache_step

B, WORLD = 4, 2  # per-process batch, processes


def _model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 8))


def _data():
    g = torch.Generator().manual_seed(4)
    return torch.randn(B * WORLD, 6, generator=g), torch.randn(B * WORLD, 6, generator=g), \
        torch.randn(B * WORLD, 2, 6, generator=g)


def _loss() -> InfoNCE:
    return InfoNCE(temperature=0.1, symmetric=True)


def _worker(rank: int, init_file: str, out_dir: str, use_gradcache: bool) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        model = _model()
        q, d, n = (x[rank * B : (rank + 1) * B] for x in _data())
        loss_fn = _loss()
        if use_gradcache:
            def enc(x):
                return model(x)

            def fn(qe, de, ne):
                return loss_fn(qe, de, ne.reshape(B, 2, -1))

            loss = grad_cache_step(enc, [chunked(q, 2), chunked(d, 3), chunked(n.reshape(-1, 6), 3)], fn)
        else:
            loss = loss_fn(model(q), model(d), model(n))
            loss.backward()
        average_gradients(list(model.parameters()))
        grads = {k: p.grad for k, p in model.named_parameters()}
        grads["loss"] = loss.detach().reshape(1)
        save_file(grads, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("use_gradcache", [False, True])
def test_gathered_loss_matches_full_batch(tmp_path, use_gradcache):
    # spawn, not fork: forking a process that already runs library threads (tokenizers, OpenMP, the encoders'
    # background prep thread) can deadlock the children; spawn costs an import of torch but cannot hang that way
    mp.start_processes(_worker, args=(str(tmp_path / "init"), str(tmp_path), use_gradcache), nprocs=WORLD,
                       join=True, start_method="spawn")
    model, loss_fn = _model(), _loss()
    q, d, n = _data()
    loss = loss_fn(model(q), model(d), model(n))
    loss.backward()
    r0, r1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(WORLD))
    # each process's loss covers its own queries; their mean is the full-batch loss
    assert ((r0["loss"] + r1["loss"]) / 2).item() == pytest.approx(loss.item(), abs=1e-6)
    for name, p in model.named_parameters():
        assert torch.allclose(r0[name], p.grad, atol=1e-6), name
        assert torch.equal(r0[name], r1[name]), name  # averaging left both replicas with the same gradient

"""GradCache gives the same gradients as plain backprop, over every parameter of a real (tiny) BERT."""

import pytest
import torch
from transformers import BertConfig, BertModel

from omniret.losses import InfoNCE
from omniret.training.gradcache import chunked, grad_cache_step


def _bert(dropout: float) -> BertModel:
    torch.manual_seed(1)
    cfg = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, max_position_embeddings=32,
    )
    return BertModel(cfg).train()


def _encode(model: BertModel):
    def enc(ids: torch.Tensor) -> torch.Tensor:  # (n, L) -> (n, 32) mean-pooled
        return model(input_ids=ids).last_hidden_state.mean(dim=1)

    return enc


def _grads(model, loss_fn):
    return {n: p.grad.clone() for n, p in list(model.named_parameters()) + list(loss_fn.named_parameters())
            if p.grad is not None}


def _batch():
    g = torch.Generator().manual_seed(2)
    return torch.randint(0, 100, (8, 10), generator=g), torch.randint(0, 100, (8, 12), generator=g)


def _compare(ref: dict, got: dict) -> None:
    assert ref.keys() == got.keys() and len(ref) > 10
    for n in ref:
        assert torch.allclose(ref[n], got[n], atol=1e-5, rtol=0), n


def test_gradcache_equals_full_batch_backprop():
    q, d = _batch()
    model, loss_fn = _bert(0.0), InfoNCE(temperature=0.05, learnable_temperature=True, symmetric=True)
    enc = _encode(model)
    loss_fn(enc(q), enc(d)).backward()
    ref = _grads(model, loss_fn)

    model.zero_grad()
    loss_fn.zero_grad()
    loss = grad_cache_step(enc, [chunked(q, 3), chunked(d, 3)], loss_fn)
    assert loss.requires_grad is False
    _compare(ref, _grads(model, loss_fn))


def test_gradcache_replays_dropout_masks():
    # with dropout, the reference is the same chunks embedded with autograd from the same RNG state:
    # GradCache must reproduce each chunk's dropout mask when it re-embeds
    q, d = _batch()
    model, loss_fn = _bert(0.3), InfoNCE(temperature=0.05)
    enc = _encode(model)
    torch.manual_seed(5)
    reps = [torch.cat([enc(c) for c in chunked(x, 4)]) for x in (q, d)]
    ref_loss = loss_fn(*reps)
    ref_loss.backward()
    ref = _grads(model, loss_fn)

    model.zero_grad()
    torch.manual_seed(5)
    loss = grad_cache_step(enc, [chunked(q, 4), chunked(d, 4)], loss_fn)
    assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-6)
    _compare(ref, _grads(model, loss_fn))
    # the RNG stream after the step continues from the end of the first (no-grad) pass, as plain training does
    torch.manual_seed(5)
    with torch.no_grad():
        for x in (q, d):
            for c in chunked(x, 4):
                enc(c)
    expected_next = torch.rand(1)
    model.zero_grad()
    torch.manual_seed(5)
    grad_cache_step(enc, [chunked(q, 4), chunked(d, 4)], loss_fn)
    assert torch.equal(torch.rand(1), expected_next)


def test_chunked_rejects_bad_size():
    with pytest.raises(ValueError, match="chunk size"):
        chunked([1, 2], 0)

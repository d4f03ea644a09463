"""InfoNCE and L_orth against values computed by hand."""

import math

import pytest
import torch

from omniret.errors import OmniretError
from omniret.losses import InfoNCE, orthogonal_loss

E = torch.eye(3)


def test_in_batch_exact():
    # q_i = e_i, positives = e_i: each query scores 1 on its positive and 0 on the other one
    loss = InfoNCE(temperature=1.0)(E[:2], E[:2])
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)


def test_temperature_and_unnormalised_inputs():
    # cosine is scale-free: scaling inputs changes nothing; τ=0.5 doubles the logits
    loss = InfoNCE(temperature=0.5)(3 * E[:2], 7 * E[:2])
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_hard_negatives_per_query_are_shared_by_all_queries():
    q = E[:2]
    pos = E[:2]
    # query 0's hard negative equals query 0 itself direction e0 scaled (cos 1) -> a strong negative for query 0
    neg = torch.stack([E[0:1], E[2:3]])  # (B=2, H=1, D)
    loss = InfoNCE(temperature=1.0)(q, pos, neg)
    # query 0 logits: pos0=1, pos1=0, neg0=1, neg1=0 ; query 1 logits: 0, 1, 0, 0
    l0 = -math.log(math.e / (2 * math.e + 2))
    l1 = -math.log(math.e / (math.e + 3))
    assert loss.item() == pytest.approx((l0 + l1) / 2, abs=1e-6)
    # the same negatives as a flat (M, D) pool give the same loss
    flat = InfoNCE(temperature=1.0)(q, pos, neg.reshape(2, 3))
    assert flat.item() == pytest.approx(loss.item(), abs=1e-7)


def test_symmetric_term():
    q = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = 1 / math.sqrt(2)
    # q->d: q0: [1, 0] target 0 ; q1: [c, c] target 1
    qd = (-math.log(math.e / (math.e + 1)) - math.log(0.5)) / 2
    # d->q: p0 vs queries [1, c] target 0 ; p1 vs queries [0, c] target 1
    dq = (-math.log(math.e / (math.e + math.exp(c))) - math.log(math.exp(c) / (1 + math.exp(c)))) / 2
    loss = InfoNCE(temperature=1.0, symmetric=True)(q, p)
    assert loss.item() == pytest.approx((qd + dq) / 2, abs=1e-6)


def test_pool_loss_with_targets():
    pool = torch.tensor([[0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    loss = InfoNCE(temperature=1.0).pool_loss(torch.tensor([[1.0, 0.0]]), pool, torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 1 + math.exp(-1))), abs=1e-6)


def test_learnable_temperature_gets_gradient():
    fn = InfoNCE(temperature=0.1, learnable_temperature=True)
    assert fn.temperature.item() == pytest.approx(0.1)
    q = torch.randn(4, 8)
    loss = fn(q, q + 0.1 * torch.randn(4, 8))
    loss.backward()
    assert fn.log_temperature.grad is not None and fn.log_temperature.grad.abs() > 0
    # a fixed temperature is a buffer, not a parameter
    assert list(InfoNCE(temperature=0.1).parameters()) == []


def test_bad_inputs_are_clear_errors():
    fn = InfoNCE()
    with pytest.raises(OmniretError, match="positives"):
        fn(torch.randn(2, 4), torch.randn(3, 4))
    with pytest.raises(OmniretError, match="embedding size"):
        fn(torch.randn(2, 4), torch.randn(2, 5))
    with pytest.raises(OmniretError, match="target index"):
        fn.pool_loss(torch.randn(2, 4), torch.randn(3, 4), torch.tensor([0, 3]))
    with pytest.raises(OmniretError, match="temperature"):
        InfoNCE(temperature=0)


def test_orthogonal_exact():
    # K=3 tokens: e0, e1 and (e0+e1)/√2 -> pair cosines 0, c, c with c² = 1/2 -> mean of pairs = 1/3
    t = torch.stack([E[0], E[1], (E[0] + E[1])]).unsqueeze(0)
    assert orthogonal_loss(t).item() == pytest.approx(1 / 3, abs=1e-6)
    ortho = E.unsqueeze(0)
    both = torch.cat([t, 5 * ortho])
    assert orthogonal_loss(both).item() == pytest.approx(1 / 6, abs=1e-6)
    assert orthogonal_loss(both, mask=torch.tensor([False, True])).item() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(OmniretError, match="K>=2"):
        orthogonal_loss(torch.randn(2, 1, 4))

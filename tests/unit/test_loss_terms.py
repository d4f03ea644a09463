"""Loss terms composed by config: weights, per-term values, config errors, GradCache refusal; sampler shards."""

from __future__ import annotations

import math

import pytest
import torch

from omniret.errors import ConfigError
from omniret.losses import LOSS_TERMS, InfoNCE, LossInputs, LossTerm, build_loss
from omniret.training.config import config_from_dict
from omniret.training.data import Example, MixtureSampler, Source
from omniret.types import Item


class _Norm(LossTerm):
    """A 'parameters' term: the squared norm of a parameter the encoder exposes (like a token-bank penalty)."""

    needs = "parameters"

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return inputs.encoder.weight.pow(2).sum()


class _Forward(LossTerm):
    """A 'forward' term (its own pass over the prepared batch): GradCache must refuse it."""

    needs = "forward"

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, inputs: LossInputs) -> torch.Tensor:
        return inputs.prepared["queries"].sum() * self.scale


LOSS_TERMS.add("test-norm", _Norm)
LOSS_TERMS.add("test-forward", _Forward)


def test_composite_is_the_weighted_sum_of_named_terms():
    torch.manual_seed(0)
    q, p = torch.randn(4, 8), torch.randn(4, 8)
    enc = torch.nn.Linear(2, 2)
    loss = build_loss([{"name": "contrastive", "weight": 0.5, "temperature": 0.1},
                       {"name": "test-norm", "weight": 2.0}])
    total, parts = loss(LossInputs(q, p, encoder=enc))
    want_c = InfoNCE(temperature=0.1)(q, p)
    want_n = enc.weight.pow(2).sum()
    torch.testing.assert_close(parts["contrastive"], want_c)
    torch.testing.assert_close(parts["test-norm"], want_n)
    torch.testing.assert_close(total, 0.5 * want_c + 2.0 * want_n)
    total.backward()  # the parameters term reaches the parameter directly
    torch.testing.assert_close(enc.weight.grad, 4.0 * enc.weight)
    assert loss.log_values() == {"tau": 0.1}


@pytest.mark.parametrize("specs, msg", [
    ([], "at least one loss term"),
    ([{"weight": 1.0}], "with a 'name'"),
    ([{"name": "nope"}], "unknown loss term 'nope'"),
    ([{"name": "contrastive", "temp": 0.1}], "unknown option.*temp.*allowed: name, weight, temperature"),
    ([{"name": "contrastive"}, {"name": "contrastive"}], "listed twice"),
    ([{"name": "contrastive", "weight": -1}], "weight: expected a number >= 0"),
    ([{"name": "contrastive", "temperature": 0}], "temperature must be > 0"),
])
def test_bad_term_specs_are_config_errors(specs, msg):
    with pytest.raises(ConfigError, match=msg):
        build_loss(specs)


def _cfg(tmp_path, loss: dict, optim: dict) -> dict:
    (tmp_path / "p").mkdir(exist_ok=True)
    return {"data": {"sources": [{"kind": "pairs", "path": str(tmp_path / "p")}]}, "loss": loss,
            "optim": {"max_steps": 1, **optim}}


def test_config_validation_refuses_a_forward_term_under_gradcache(tmp_path):
    terms = {"terms": [{"name": "contrastive"}, {"name": "test-forward", "weight": 0.1}]}
    with pytest.raises(ConfigError, match="test-forward.*cannot work with GradCache"):
        config_from_dict(_cfg(tmp_path, terms, {"gradcache_chunk": 4}), tmp_path)
    config_from_dict(_cfg(tmp_path, terms, {"gradcache_chunk": 0}), tmp_path)  # fine without GradCache
    with pytest.raises(ConfigError, match=r"stage 'main': loss.terms\[0\]: unknown loss term"):
        config_from_dict(_cfg(tmp_path, {"terms": [{"name": "x"}]}, {}), tmp_path)


def test_old_loss_keys_make_one_contrastive_term(tmp_path):
    cfg = config_from_dict(_cfg(tmp_path, {"temperature": 0.07, "symmetric": True}, {}), tmp_path)
    (spec,) = cfg.loss.term_specs()
    assert spec == {"name": "contrastive", "weight": 1.0, "temperature": 0.07, "learnable_temperature": False,
                    "symmetric": True}
    assert math.isclose(float(build_loss([spec]).terms["contrastive"].info_nce.temperature), 0.07, rel_tol=1e-6)


def _source() -> Source:
    exs = [Example(Item(f"q{i}"), [Item(f"p{i}")], [Item(f"n{i}a"), Item(f"n{i}b")]) for i in range(10)]
    return Source("s", 1.0, {"t": exs})


def test_sampler_shards_partition_the_global_batch():
    whole = MixtureSampler([_source()], 6, hard_negatives=2, seed=3)
    shards = [MixtureSampler([_source()], 6, hard_negatives=2, seed=3, rank=r, world=3) for r in range(3)]
    for _ in range(4):
        b = whole.next_batch()
        parts = [s.next_batch() for s in shards]
        assert [q.text for p in parts for q in p.queries] == [q.text for q in b.queries]
        assert [x.text for p in parts for x in p.positives] == [x.text for x in b.positives]
        assert [x.text for p in parts for x in p.negatives] == [x.text for x in b.negatives]
        assert all(len(p.queries) == 2 and len(p.negatives) == 4 for p in parts)

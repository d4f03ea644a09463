"""omni-mini's bridge prior: untrained it IS conse-minilm; training moves its gate; save/reload keeps it."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertModel

from omniret.encoders import load_encoder
from omniret.encoders.minilm import default_minilm_path
from omniret.encoders.omni_mini import GATE_SCALE, OmniMiniEncoder
from omniret.errors import OmniretError
from omniret.training.config import LoraConfig, ModelConfig
from omniret.training.lora import apply_policy
from omniret.types import Item
from sample_items import APPLE, CAT, INST, ITEMS


def _tiny_bert(d: Path, hidden: int) -> Path:
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=128)).save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default_minilm_path() / f, d / f)
    return d


@pytest.fixture(scope="module")
def conse():
    return load_encoder("conse-minilm")


@pytest.fixture(scope="module")
def prior_enc():
    return OmniMiniEncoder(grid=1, bridge_prior=True, feature_cache_size=100)


@pytest.mark.parametrize("side", ["queries", "documents"])
def test_untrained_prior_model_equals_conse_minilm(prior_enc, conse, side):
    got = getattr(prior_enc, f"encode_{side}")(ITEMS)
    want = getattr(conse, f"encode_{side}")(ITEMS)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # second pass comes from the prior cache and is the same
    np.testing.assert_array_equal(getattr(prior_enc, f"encode_{side}")(ITEMS), got)


def test_option_is_off_by_default_and_leaves_the_model_unchanged():
    plain = OmniMiniEncoder(grid=1)
    assert plain.model.prior_gate is None and plain.prior is None
    assert "bridge_prior" not in plain.options() and "bridge_prior" not in plain.recipe()
    assert "prior_gate" not in dict(plain.model.named_parameters())
    assert "prior_gate" not in plain.trained_tensors()


def test_save_reload_keeps_prior_and_gate(prior_enc, conse, tmp_path):
    with torch.no_grad():
        prior_enc.model.prior_gate.fill_(0.004)
    try:
        before = prior_enc.encode_queries(ITEMS)
        # moved away from conse-minilm by exactly g * unit(omni): check one row independently
        omni_only = OmniMiniEncoder(grid=1).encode_queries(ITEMS[:1])
        want = conse.encode_queries(ITEMS[:1]) + GATE_SCALE * 0.004 * omni_only
        np.testing.assert_allclose(before[:1], want / np.linalg.norm(want), atol=1e-5)
        prior_enc.save(tmp_path / "m")
        loaded = load_encoder(tmp_path / "m")
    finally:
        with torch.no_grad():
            prior_enc.model.prior_gate.zero_()
    assert loaded.options()["bridge_prior"] is True
    assert loaded.model.prior_gate.item() == pytest.approx(0.004)
    assert loaded.recipe_hash != OmniMiniEncoder(grid=1).recipe_hash
    np.testing.assert_allclose(loaded.encode_queries(ITEMS), before, atol=1e-6)


def test_prior_needs_a_384_d_text_tower(tmp_path):
    with pytest.raises(OmniretError, match="bridge_prior.*384-d.*32-d"):
        OmniMiniEncoder(text_model=_tiny_bert(tmp_path / "b", 32), bridge_prior=True)


def test_training_steps_lower_the_loss_and_move_the_gate(tmp_path):
    # a 1-layer 384-d BERT keeps this fast; the prior is still the real conse-minilm
    enc = OmniMiniEncoder(text_model=_tiny_bert(tmp_path / "b", 384), grid=1, bridge_prior=True,
                          feature_cache_size=100)
    torch.manual_seed(0)
    apply_policy(enc, ModelConfig(lora=LoraConfig(r=4, alpha=8, target_modules=["query", "value"])))
    module = enc.trainable_module()
    names = {n for n, p in module.named_parameters() if p.requires_grad}
    assert "prior_gate" in names and any("projector" in n for n in names)
    queries = [Item(t, instruction=INST) for t in ("a red apple", "a cat", "a car", "a cup of coffee")]
    docs = [Item(image=APPLE), Item(image=CAT), Item("an automobile"), Item("coffee in a mug")]
    qb, db = enc.prepare(queries, is_query=True), enc.prepare(docs, is_query=False)
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    enc.train()
    losses = []
    for _ in range(6):
        q = F.normalize(enc.embed(qb), dim=-1)
        d = F.normalize(enc.embed(db), dim=-1)
        loss = F.cross_entropy(q @ d.T / 0.05, torch.arange(len(queries)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    enc.train(False)
    assert losses[-1] < losses[0]
    assert abs(enc.model.prior_gate.item()) > 1e-3

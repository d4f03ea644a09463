"""The bridge family: untrained it ranks as conse-minilm; its heads act as documented; save/reload is exact."""


import numpy as np
import pytest
import torch
import torch.nn.functional as F

from omniret.encoders import load_encoder
from omniret.encoders.bridge import GATE_SCALE, POOLED_DIM, SIGNALS, BridgeEncoder
from omniret.encoders.effnet import EfficientNetLite0, preprocess
from omniret.errors import ModelNotFoundError, OmniretError
from omniret.types import Item
from sample_items import APPLE, CAT, INST, ITEMS


@pytest.fixture(scope="module")
def conse():
    return load_encoder("conse-minilm")


@pytest.fixture(scope="module")
def bridge():
    torch.manual_seed(0)
    return BridgeEncoder(modality_dim=4, feature_cache_size=100)


def _trained_like(enc: BridgeEncoder, seed: int = 1) -> None:
    """Give every head non-zero weights (as training would)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in enc.heads.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        enc.heads.gate.fill_(0.05)


@pytest.mark.parametrize("side", ["queries", "documents"])
def test_untrained_content_is_conse_minilm_and_queries_have_no_modality(bridge, conse, side):
    got = getattr(bridge, f"encode_{side}")(ITEMS)
    want = getattr(conse, f"encode_{side}")(ITEMS)
    assert got.shape == (len(ITEMS), 384 + 4 + 1)
    content = got[:, :384] / np.linalg.norm(got[:, :384], axis=1, keepdims=True)
    np.testing.assert_allclose(content, want, atol=1e-6)
    if side == "queries":  # a query without instruction asks for no modality; one with an instruction does
        has = np.array([bool(it.instruction) for it in ITEMS])
        assert np.abs(got[~has, 384:]).max() == 0.0 and (np.abs(got[has, 384:]).max(axis=1) > 0).all()
    # the second pass reads the image signals from the cache and is identical
    np.testing.assert_array_equal(getattr(bridge, f"encode_{side}")(ITEMS), got)


def test_pooled_features_and_logits_come_from_one_pass_equal_to_the_classifier():
    tower = EfficientNetLite0()
    from PIL import Image

    px = torch.from_numpy(np.stack([preprocess(Image.open(p).convert("RGB")) for p in (APPLE, CAT)]))
    pooled, logits = tower.pooled_and_logits(px)
    assert pooled.shape == (2, POOLED_DIM)
    torch.testing.assert_close(logits, tower.logits(px), atol=1e-5, rtol=0)


def test_heads_compute_the_documented_embedding(conse):
    enc = BridgeEncoder(modality_dim=3)
    _trained_like(enc)
    h = enc.heads
    docs = enc.encode_documents([Item("a red apple"), Item(image=APPLE), Item("an apple", image=APPLE)])
    queries = enc.encode_queries([Item("a red apple", instruction=INST), Item("a red apple")])
    with torch.no_grad():
        # image content = unit(conse + g * unit(R([pooled; conse]))), recomputed independently
        from PIL import Image

        px = torch.from_numpy(preprocess(Image.open(APPLE).convert("RGB"))[None])
        pooled, logits = EfficientNetLite0().pooled_and_logits(px)
        c = conse.conse_embeddings(logits)
        v = F.normalize(c + GATE_SCALE * 0.05 * F.normalize(h.residual(torch.cat([pooled, c], -1)), dim=-1), dim=-1)
        t = torch.from_numpy(conse.encode_documents(["a red apple", "an apple"]))
        m_text, m_image = h.doc_modality

        def m(x):  # the modality part has norm modality_scale (1); its last axis is the neutral one
            return torch.cat([F.normalize(x, dim=-1), torch.zeros(1)])

        neutral = torch.tensor([0.0, 0.0, 0.0, 1.0])  # image+text documents
        want = [torch.cat([t[0], m(m_text)]), torch.cat([v[0], m(m_image)]),
                torch.cat([F.normalize(t[1] + v[0], dim=-1), neutral])]
        tq = torch.from_numpy(conse.encode_queries([Item("a red apple", instruction=INST)]))[0]
        inst = torch.from_numpy(conse.encode_documents([INST]))[0]
        want_q = [torch.cat([tq, m(h.query_modality(inst) + h.query_own[0])]), torch.cat([t[0], torch.zeros(4)])]
    for got, w in zip(list(docs) + list(queries), want + want_q, strict=True):
        np.testing.assert_allclose(got, (w / w.norm()).numpy(), atol=2e-5)


def test_residual_dropout_acts_only_in_training():
    enc = BridgeEncoder(residual_dropout=0.5)
    _trained_like(enc)
    pooled, conse = torch.randn(64, POOLED_DIM), F.normalize(torch.randn(64, 384), dim=-1)
    enc.train(False)
    a, b = enc.heads.image_content(pooled, conse), enc.heads.image_content(pooled, conse)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, conse, atol=1e-3)  # the residual is on
    enc.train(True)
    enc.heads.residual.eval()  # isolate the residual dropout from the MLP's own dropout
    torch.manual_seed(0)
    c = enc.heads.image_content(pooled, conse)
    dropped = torch.isclose(c, conse, atol=1e-6).all(dim=1)
    kept = torch.isclose(c, a, atol=1e-6).all(dim=1)
    assert bool((dropped | kept).all()) and 16 <= int(dropped.sum()) <= 48


def test_save_reload_is_exact_and_bad_weights_are_refused(tmp_path):
    enc = BridgeEncoder(modality_dim=4, hidden=64)
    _trained_like(enc, seed=3)
    before_q, before_d = enc.encode_queries(ITEMS), enc.encode_documents(ITEMS)
    enc.save(tmp_path / "m")
    loaded = load_encoder(tmp_path / "m")
    assert loaded.options() == enc.options() and loaded.recipe_hash == enc.recipe_hash
    np.testing.assert_array_equal(loaded.encode_queries(ITEMS), before_q)
    np.testing.assert_array_equal(loaded.encode_documents(ITEMS), before_d)
    assert loaded.recipe_hash != BridgeEncoder(modality_dim=4, hidden=64).recipe_hash
    with pytest.raises(ModelNotFoundError, match="does not fit"):
        load_encoder(tmp_path / "m", hidden=32)
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="no model.safetensors"):
        load_encoder(tmp_path / "m")


@pytest.mark.parametrize("opt", [{"modality_dim": 0}, {"hidden": 8}, {"residual_dropout": 1.0}, {"dropout": -0.1},
                                 {"modality_scale": 0.0}])
def test_bad_options_are_refused(opt):
    with pytest.raises(OmniretError, match=next(iter(opt))):
        BridgeEncoder(**opt)


def test_signal_cache_is_bounded():
    cap = SIGNALS.capacity
    try:
        SIGNALS.capacity = 1
        SIGNALS.put("a", (torch.zeros(1), torch.zeros(1)))
        SIGNALS.put("b", (torch.ones(1), torch.ones(1)))
        assert SIGNALS.get("a") is None and SIGNALS.get("b") is not None
    finally:
        SIGNALS.capacity = cap


def test_int8_runs_the_frozen_text_tower_quantised_and_keeps_the_heads(conse):
    enc = BridgeEncoder(precision="int8")
    assert enc.base.precision == "int8" and enc.base.uses_onnx()
    q8 = enc.encode_queries(["a red apple"])[0, :384]
    full = conse.encode_queries(["a red apple"])[0]
    assert 0.97 < float(q8 @ full) < 1.0  # quantised, not identical
    with pytest.raises(OmniretError, match="precision 'int4'"):
        BridgeEncoder(precision="int4")

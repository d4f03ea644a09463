"""CLIP and SigLIP families on tiny random models: projection-head features, UniIR score-sum fusion,
instructions, batch invariance, save/load and faithfulness to a direct HF computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniret import Item, load_encoder
from omniret.errors import ConfigError
from tiny_models import build_tiny_clip, build_tiny_siglip, random_image


@pytest.fixture(scope="module", params=["clip", "siglip"])
def family_dir(request, tmp_path_factory):
    build = build_tiny_clip if request.param == "clip" else build_tiny_siglip
    return request.param, build(tmp_path_factory.mktemp(request.param))


def _direct(path, family, texts, images):
    """Reference: the HF model + tokenizer + PIL image processor, as their model cards show."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    proc = AutoImageProcessor.from_pretrained(path, backend="pil")
    with torch.no_grad():
        if family == "siglip":  # SigLIP: padding="max_length", input_ids only
            enc = tok(texts, padding="max_length", max_length=32, return_tensors="pt")
            t = model.get_text_features(input_ids=enc.input_ids).pooler_output
        else:
            enc = tok(texts, padding=True, return_tensors="pt")
            t = model.get_text_features(**enc).pooler_output
        v = model.get_image_features(**proc(images=images, return_tensors="pt")).pooler_output
    return t, v


def test_text_image_and_fused_match_direct_computation(family_dir):
    family, path = family_dir
    enc = load_encoder(path, family=family)
    imgs = [random_image(40, 32, 1), random_image(32, 48, 2)]
    texts = ["a red dog", "a small bird on the tree"]
    t, v = _direct(path, family, texts, imgs)
    n = torch.nn.functional.normalize
    np.testing.assert_allclose(enc.encode_documents([Item(x) for x in texts]), n(t, dim=-1).numpy(), atol=1e-5)
    np.testing.assert_allclose(enc.encode_documents([Item(image=i) for i in imgs]), n(v, dim=-1).numpy(),
                               atol=1e-5)
    # default = UniIR CLIP_SF: the raw projected vectors summed, then normalised
    fused = enc.encode_documents([Item(texts[0], image=imgs[0])])[0]
    np.testing.assert_allclose(fused, n(t[0] + v[0], dim=-1).numpy(), atol=1e-5)
    normed = load_encoder(path, family=family, fusion="sum_normalized")
    expect = n(n(t[0], dim=-1) + n(v[0], dim=-1), dim=-1).numpy()
    np.testing.assert_allclose(normed.encode_documents([Item(texts[0], image=imgs[0])])[0], expect, atol=1e-5)
    assert np.abs(fused - expect).max() > 1e-3  # the two modes differ on these weights
    assert enc.dim == t.shape[1]


def test_batch_invariance_and_save_reload(family_dir, tmp_path):
    family, path = family_dir
    enc = load_encoder(path, family=family)
    a, b = random_image(32, 32, 3), random_image(64, 40, 4)
    items = [Item("a red dog"), Item(image=a), Item("a cat near the old house with a dog", image=b),
             Item(parts=["look", a, "and", b]), Item("bird")]
    together = enc.encode_queries(items, batch_size=5)
    alone = np.stack([enc.encode_queries([x])[0] for x in items])
    assert np.abs(together - alone).max() <= 1e-5
    again = load_encoder(enc.save(tmp_path / "saved"))
    assert again.family == family
    assert np.abs(again.encode_queries(items) - together).max() == 0.0


def test_instructions_only_when_enabled(family_dir):
    family, path = family_dir
    plain = load_encoder(path, family=family)
    q = [Item("a red dog")]
    np.testing.assert_array_equal(plain.encode_queries(q, instruction="find a photo"), plain.encode_queries(q))
    inst = load_encoder(path, family=family, use_instruction=True)
    assert inst.item_text(Item("a red dog", instruction="find a photo"), True) == "find a photo a red dog"
    assert inst.item_text(Item(image=random_image(), instruction="find a photo"), True) == "find a photo"
    assert inst.item_text(Item("a red dog", instruction="find a photo"), False) == "a red dog"
    assert np.abs(inst.encode_queries(q, instruction="find a photo") - inst.encode_queries(q)).max() > 1e-4


def test_bad_options_are_clear(family_dir):
    family, path = family_dir
    with pytest.raises(ConfigError, match="fusion"):
        load_encoder(path, family=family, fusion="concat")
    other = "siglip" if family == "clip" else "clip"
    with pytest.raises(ConfigError, match="does not match family"):
        load_encoder(path, family=other)

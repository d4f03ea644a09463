"""ReMatch-style multi-token family on tiny Qwen2.5-VL and Qwen2-VL: learnable-token banks appended as input
embeddings, mean of their final states, per-side banks saved/loaded, batch invariance with both paddings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniret import Item, load_encoder
from omniret.encoders.families.rematch import BANK_FILE
from omniret.errors import ConfigError, ModelNotFoundError
from tiny_models import build_tiny_qwen2vl, build_tiny_qwen25vl, random_image


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl"])
def backbone(request, tmp_path_factory):
    build = build_tiny_qwen25vl if request.param == "qwen2_5_vl" else build_tiny_qwen2vl
    return build(tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def rematch(backbone, tmp_path_factory):
    enc = load_encoder(backbone, family="rematch", init_tokens=True, num_tokens=4)
    return enc, enc.save(tmp_path_factory.mktemp("saved"))


def items() -> list[Item]:
    a, b = random_image(56, 84, 11), random_image(28, 56, 12)
    return [Item("a red dog"), Item("a cat near the river", image=a), Item(image=b),
            Item(parts=["look at", a, "and", b]), Item("small bird on a tree near the old house")]


def test_template_and_slots(rematch):
    enc, _ = rematch
    it = Item("a dog", image=random_image(), instruction="Find it.")
    assert enc.render(it, True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nFind it.\n"
        "<|vision_start|><|image_pad|><|vision_end|>a dog<|im_end|>\n<|im_start|>assistant\n")
    batch = enc.prepare([it, Item("cat")], is_query=True)
    assert batch["extra"].sum(1).tolist() == [4, 4]
    # left padding: the K slots are the last K positions of every row
    assert batch["extra"][:, -4:].all()


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_invariance_both_paddings(rematch, side):
    _, saved = rematch
    enc = load_encoder(saved, padding_side=side)
    its = items()
    together = enc.encode_queries(its, instruction="find", batch_size=len(its))
    alone = np.stack([enc.encode_queries([x], instruction="find")[0] for x in its])
    assert np.abs(together - alone).max() <= 1e-5
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-6)


def test_matches_manual_computation(rematch):
    """Independent: token embeddings + K bank vectors concatenated by hand, plain causal LM forward with
    sequential positions (text-only), mean of the last K hidden states, L2 norm."""
    enc, _ = rematch
    texts = ["a red dog", "small bird on a tree"]
    out = []
    with torch.no_grad():
        for t in texts:
            prompt = enc.render(Item(t), False)
            ids = torch.tensor([enc.tokenizer(prompt)["input_ids"]])
            emb = enc.backbone.get_input_embeddings()(ids)
            x = torch.cat([emb, enc.banks["document"].detach()[None]], dim=1)
            h = enc.backbone.language_model(inputs_embeds=x).last_hidden_state
            out.append(torch.nn.functional.normalize(h[0, -4:].mean(0), dim=-1).numpy())
    ours = enc.encode_documents([Item(t) for t in texts])
    assert np.abs(ours - np.stack(out)).max() <= 1e-5


def test_banks_saved_loaded_and_sides_differ(rematch):
    enc, saved = rematch
    assert (saved / BANK_FILE).is_file()
    again = load_encoder(saved)
    assert type(again).__name__ == "ReMatchEncoder" and again.recipe_.num_tokens == 4
    its = items()
    assert np.abs(enc.encode_documents(its) - again.encode_documents(its)).max() == 0.0
    # one bank per side: the same item embeds differently as query and as document
    q, d = again.encode_queries(its[:1]), again.encode_documents(its[:1])
    assert np.abs(q - d).max() > 1e-3


def test_shared_bank_option(backbone, tmp_path):
    enc = load_encoder(backbone, family="rematch", init_tokens=True, num_tokens=3, shared_bank=True)
    its = [Item("a red dog")]
    np.testing.assert_allclose(enc.encode_queries(its), enc.encode_documents(its), atol=1e-6)
    again = load_encoder(enc.save(tmp_path / "s"))
    assert list(again.banks) == ["shared"]


def test_missing_or_bad_bank_is_clear(backbone, rematch, tmp_path):
    with pytest.raises(ModelNotFoundError, match=BANK_FILE):
        load_encoder(backbone, family="rematch")
    _, saved = rematch
    with pytest.raises(ConfigError, match="shape"):
        load_encoder(saved, num_tokens=5)
    with pytest.raises(ConfigError, match="num_tokens"):
        load_encoder(backbone, family="rematch", init_tokens=True, num_tokens=0)

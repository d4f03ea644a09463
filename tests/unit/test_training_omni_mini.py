"""omniret-mini: interleaving, instruction-free pooling, gradients into the projector, save/load with LoRA."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import BertConfig, BertModel

from omniret.encoders import load_encoder
from omniret.encoders.minilm import default_minilm_path
from omniret.encoders.omni_mini import OmniMiniEncoder
from omniret.training.config import LoraConfig, ModelConfig
from omniret.training.lora import apply_policy
from omniret.types import ImagePart, Item


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=128)).save_pretrained(d)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(default_minilm_path() / f, d / f)
    return d


@pytest.fixture(scope="module")
def enc(bert_dir):
    return OmniMiniEncoder(text_model=bert_dir, grid=1)


IMG = Image.new("RGB", (40, 30), (200, 30, 30))


def test_prepare_interleaves_parts_and_masks_the_instruction(enc):
    t = enc.model.tokens_per_image
    assert t == 2
    it = Item(parts=["red", ImagePart(IMG), "ball"], instruction="find")
    b = enc.prepare([it, Item("x")], is_query=True)
    ids = enc.tower._ids(["red", "ball", "find", "x"])
    row = [enc.tower.cls_id, *ids[2], enc.tower.sep_id, *ids[0], 0, 0, *ids[1], enc.tower.sep_id]
    img_col = 3 + len(ids[2]) + len(ids[0]) - 1
    width = len(row)
    assert b.input_ids.shape == (2, width)
    got = b.input_ids[0].tolist()
    assert got[:img_col] == row[:img_col] and got[img_col + t:] == row[img_col + t:]
    assert b.image_pos.tolist() == [[img_col, img_col + 1]]
    n_inst = len(ids[2]) + 1
    assert b.pool_mask[0].tolist() == [1] + [0] * n_inst + [1] * (width - 1 - n_inst)
    # documents never get the instruction
    d = enc.prepare([it], is_query=False)
    assert d.pool_mask[0].sum() == d.attention_mask[0].sum()
    assert b.pixels.shape == (1, 3, 224, 224)


def test_gradient_reaches_projector_not_vision(enc):
    enc.model.train()
    enc.model.zero_grad()
    out = enc.model(enc.prepare([Item("red", image=IMG)], is_query=False))
    out.sum().backward()
    assert enc.model.projector[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.model.vision().model.parameters())
    enc.model.eval()


def test_save_load_roundtrip_with_merged_lora(bert_dir, tmp_path):
    torch.manual_seed(1)
    e = OmniMiniEncoder(text_model=bert_dir, grid=1)
    apply_policy(e.model, ModelConfig(lora=LoraConfig(r=2, alpha=4, target_modules=["query", "value"]),
                                      trainable=["projector.*"]))
    with torch.no_grad():  # make the adapters non-trivial (peft starts B at zero)
        for n, p in e.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    items = [Item("a red ball", instruction="find"), Item(image=IMG), Item("ball", image=IMG)]
    before = e.encode_queries(items)
    e.save_pretrained(tmp_path / "m")
    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert "text.encoder.layer.0.attention.self.query.weight" in tensors
    assert not any("lora" in k or "word_embeddings" in k for k in tensors)  # merged, and only what changed
    loaded = load_encoder(tmp_path / "m")
    assert loaded.family == "omni-mini" and loaded.recipe_hash == e.recipe_hash
    np.testing.assert_allclose(loaded.encode_queries(items), before, atol=1e-5)


def test_feature_cache_gives_identical_embeddings(bert_dir):
    e = OmniMiniEncoder(text_model=bert_dir, grid=1, feature_cache_size=10)
    items = [Item(image=IMG), Item("red", image=IMG)]
    first = e.encode_documents(items)
    assert len(e.model.feature_cache) == 1
    b = e.prepare(items, is_query=False)
    assert b.pixels is None and b.decoded == []  # nothing left to decode
    np.testing.assert_array_equal(e.encode_documents(items), first)

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
from omniret.errors import ModelNotFoundError
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


def _lora(e, seed, targets=("query", "value"), trainable=("projector.*",)):
    torch.manual_seed(seed)
    apply_policy(e, ModelConfig(lora=LoraConfig(r=2, alpha=4, target_modules=list(targets)),
                                      trainable=list(trainable)))
    with torch.no_grad():  # make the adapters non-trivial (peft starts B at zero)
        for n, p in e.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)


ITEMS = [Item("a red ball", instruction="find"), Item(image=IMG), Item("ball", image=IMG)]


def test_save_load_roundtrip_stores_lora_as_low_rank_update(bert_dir, tmp_path):
    e = OmniMiniEncoder(text_model=bert_dir, grid=1)
    _lora(e, 1)
    before = e.encode_queries(ITEMS)
    e.save_pretrained(tmp_path / "m")
    tensors = load_file(str(tmp_path / "m" / "model.safetensors"))
    q = "text.encoder.layer.0.attention.self.query.weight"
    assert tensors[q + ".delta_b"].shape == (32, 2) and tensors[q + ".delta_a"].shape == (2, 32)
    assert not any("lora" in k or "word_embeddings" in k or k.endswith("query.weight") for k in tensors)
    loaded = load_encoder(tmp_path / "m")
    assert loaded.family == "omni-mini" and loaded.recipe_hash == e.recipe_hash
    np.testing.assert_allclose(loaded.encode_queries(ITEMS), before, atol=1e-5)
    base = OmniMiniEncoder(text_model=bert_dir, grid=1).model.text.state_dict()
    got = loaded.model.text.state_dict()
    delta = tensors[q + ".delta_b"] @ tensors[q + ".delta_a"]
    torch.testing.assert_close(got[q[5:]], base[q[5:]] + delta)


def test_continued_stage_appends_its_rank_and_keeps_whole_tensors(bert_dir, tmp_path):
    first = OmniMiniEncoder(text_model=bert_dir, grid=1)
    _lora(first, 1)
    first.save_pretrained(tmp_path / "s1")
    # stage 2 continues from stage 1 with new adapters on query/key and a LayerNorm trained whole
    second = load_encoder(tmp_path / "s1", text_model=bert_dir)
    _lora(second, 2, targets=("query", "key"), trainable=("projector.*", "text.encoder.layer.1.output.LayerNorm.*"))
    with torch.no_grad():
        dict(second.model.named_parameters())["text.encoder.layer.1.output.LayerNorm.weight"].add_(0.25)
    before = second.encode_queries(ITEMS)
    second.save_pretrained(tmp_path / "s2")
    tensors = load_file(str(tmp_path / "s2" / "model.safetensors"))
    q, v, k = (f"text.encoder.layer.0.attention.self.{m}.weight" for m in ("query", "value", "key"))
    assert tensors[q + ".delta_b"].shape == (32, 4)  # rank 2 from each stage
    assert tensors[v + ".delta_b"].shape == (32, 2) and tensors[k + ".delta_b"].shape == (32, 2)
    assert "text.encoder.layer.1.output.LayerNorm.weight" in tensors
    np.testing.assert_allclose(load_encoder(tmp_path / "s2", text_model=bert_dir).encode_queries(ITEMS), before,
                               atol=1e-5)


def test_truncated_low_rank_update_is_a_clear_error(bert_dir, tmp_path):
    from safetensors.torch import save_file

    e = OmniMiniEncoder(text_model=bert_dir, grid=1)
    _lora(e, 1)
    e.save_pretrained(tmp_path / "m")
    f = tmp_path / "m" / "model.safetensors"
    tensors = load_file(str(f))
    del tensors["text.encoder.layer.0.attention.self.query.weight.delta_a"]
    save_file(tensors, str(f))
    with pytest.raises(ModelNotFoundError, match="query.weight.*incomplete"):
        load_encoder(tmp_path / "m")


def test_feature_cache_gives_identical_embeddings(bert_dir):
    e = OmniMiniEncoder(text_model=bert_dir, grid=1, feature_cache_size=10)
    items = [Item(image=IMG), Item("red", image=IMG)]
    first = e.encode_documents(items)
    assert len(e.model.feature_cache) == 1
    b = e.prepare(items, is_query=False)
    assert b.pixels is None and b.decoded == []  # nothing left to decode
    np.testing.assert_array_equal(e.encode_documents(items), first)

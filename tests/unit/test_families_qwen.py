"""GME and VLM2Vec on tiny random Qwen2-VL / Qwen2.5-VL models: templates, <|image_pad|> expansion,
batch-composition invariance, save/load, LoRA adapters, and faithfulness against an independent computation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from omniret import Item, load_encoder
from omniret.encoders.mllm import qwen_fetch_resize
from omniret.errors import ConfigError, DataError
from tiny_models import build_tiny_qwen2vl, build_tiny_qwen25vl, random_image


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    return build_tiny_qwen2vl(tmp_path_factory.mktemp("q2"))


@pytest.fixture(scope="module")
def qwen25(tmp_path_factory):
    return build_tiny_qwen25vl(tmp_path_factory.mktemp("q25"))


@pytest.fixture(scope="module")
def gme(qwen2):
    return load_encoder(qwen2, family="gme")


@pytest.fixture(scope="module")
def vlm2vec(qwen2):
    return load_encoder(qwen2, family="vlm2vec")


def mixed_items() -> list[Item]:
    img = [random_image(56, 84, 1), random_image(28, 28, 2), random_image(112, 56, 3)]
    return [
        Item("a red dog"),
        Item("a cat sitting on the car near the river", image=img[0]),
        Item(image=img[1]),
        Item("small bird"),
        Item(parts=["look at", img[2], "and the", img[1], "dog"]),
        Item("what kind of house is this old house near the dark mountain street", image=img[2]),
    ]


# --------------------------------------------------------------------------------------------- templates
def test_gme_template_exact(gme):
    it = Item("a dog", image=random_image(), instruction="Find an image.")
    assert gme.render(it, is_query=True) == (
        "<|im_start|>system\nFind an image.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>a dog<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
    )
    # documents always use the default system prompt, whatever instruction they carry
    assert gme.render(it, is_query=False).startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")


def test_vlm2vec_template_exact(vlm2vec):
    img = random_image()
    assert vlm2vec.render(Item("what is it?", image=img, instruction="Represent the given image with the "
                               "following question:"), True) == \
        "<|image_pad|>\nRepresent the given image with the following question: what is it?"
    assert vlm2vec.render(Item(image=img), False) == "<|image_pad|>"
    assert vlm2vec.render(Item("a cat", instruction="Find a caption:"), True) == "Find a caption: a cat"
    # MMEB target instructions are kept on the document side
    assert vlm2vec.render(Item(image=img, instruction="Represent the given image."), False) == \
        "<|image_pad|>\nRepresent the given image."


def test_image_pad_expansion_and_token_types(gme):
    it = Item("a dog", image=random_image(112, 56, 4))
    batch = gme.prepare([it, Item("cat")], is_query=False)
    grid = batch["image_grid_thw"]
    n_expected = int(grid.prod(-1).sum()) // gme.merge_size**2
    ids, tt = batch["input_ids"], batch["mm_token_type_ids"]
    assert int((ids == gme.image_token_id).sum()) == n_expected == int(tt.sum())
    assert batch["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    # right padding for GME: the text-only row ends with pads
    assert batch["attention_mask"][1, -1] == 0 and batch["attention_mask"][0, -1] == 1


# --------------------------------------------------------------------------------------------- invariance
@pytest.mark.parametrize("family,side", [("gme", "right"), ("gme", "left"), ("vlm2vec", "left"),
                                         ("vlm2vec", "right")])
def test_batch_composition_invariance(qwen2, family, side):
    enc = load_encoder(qwen2, family=family, padding_side=side)
    items = mixed_items()
    together = enc.encode_queries(items, instruction="find it", batch_size=len(items))
    alone = np.stack([enc.encode_queries([it], instruction="find it")[0] for it in items])
    assert together.shape == (len(items), enc.dim)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-6)
    assert np.abs(together - alone).max() <= 1e-5
    docs = enc.encode_documents(items, batch_size=3)
    assert np.abs(docs - enc.encode_documents(items, batch_size=1)).max() <= 1e-5


def test_padding_side_does_not_change_embeddings(qwen2):
    items = mixed_items()
    left = load_encoder(qwen2, family="vlm2vec", padding_side="left").encode_documents(items, batch_size=6)
    right = load_encoder(qwen2, family="vlm2vec", padding_side="right").encode_documents(items, batch_size=6)
    assert np.abs(left - right).max() <= 1e-5


def test_qwen25_backbone(qwen25):
    enc = load_encoder(qwen25, family="vlm2vec")
    items = mixed_items()
    together = enc.encode_documents(items, batch_size=6)
    alone = np.stack([enc.encode_documents([it])[0] for it in items])
    assert np.abs(together - alone).max() <= 1e-5


# --------------------------------------------------------------------------------------------- faithfulness
def _reference_gme(path, items, instruction):
    """GME's gme_inference.py spelled out: f-string prompt, processor-style string expansion of
    <|image_pad|>, fetch_image resize, embed_tokens + visual features scattered, language model called with
    inputs_embeds only (no position ids), right padding, last token, L2 norm."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    proc = AutoImageProcessor.from_pretrained(path, backend="pil", min_pixels=256 * 28 * 28,
                                              max_pixels=1280 * 28 * 28)
    texts, images = [], []
    for it in items:
        s = ""
        if it.images:
            s += "<|vision_start|><|image_pad|><|vision_end|>"
            images.append(qwen_fetch_resize(it.images[0].load()))
        s += it.text or ""
        texts.append(f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{s}<|im_end|>\n"
                     f"<|im_start|>assistant\n<|endoftext|>")
    feats = proc(images=images, return_tensors="pt") if images else None
    k = 0
    for i, t in enumerate(texts):
        if "<|image_pad|>" in t:
            n = int(feats["image_grid_thw"][k].prod()) // 4
            texts[i] = t.replace("<|image_pad|>", "<|image_pad|>" * n)
            k += 1
    tok.padding_side = "right"
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        lm = model.model.language_model
        emb = lm.embed_tokens(enc.input_ids)
        if feats is not None:
            vis = model.model.visual(feats["pixel_values"], grid_thw=feats["image_grid_thw"]).pooler_output
            emb[enc.input_ids == model.config.image_token_id] = vis
        h = lm(inputs_embeds=emb, attention_mask=enc.attention_mask).last_hidden_state
        last = h[torch.arange(len(texts)), enc.attention_mask.sum(1) - 1]
    return torch.nn.functional.normalize(last, dim=-1).numpy()


def test_gme_matches_reference_computation(qwen2, gme):
    items = [Item("a red dog"), Item("a cat on the car", image=random_image(84, 56, 5)),
             Item(image=random_image(56, 56, 6))]
    ours = gme.encode_queries(items, instruction="Find an image that matches the given text.")
    ref = _reference_gme(qwen2, items, "Find an image that matches the given text.")
    assert np.abs(ours - ref).max() <= 1e-4
    docs = gme.encode_documents(items)
    assert np.abs(docs - _reference_gme(qwen2, items, "You are a helpful assistant.")).max() <= 1e-4


def _reference_mrope(path, texts, images):
    """The pre-fix ``positions="mrope"`` option spelled out: processor-style expansion, left padding, full HF
    Qwen2VLForConditionalGeneration forward (its own M-RoPE), hidden_states[-1] at the last position. VLM2Vec's
    own reference semantics are pinned in test_vlm2vec_reference.py."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    proc = AutoImageProcessor.from_pretrained(path, backend="pil")
    feats = proc(images=images, return_tensors="pt")
    expanded, k = [], 0
    for t in texts:
        if "<|image_pad|>" in t:
            t = t.replace("<|image_pad|>", "<|image_pad|>" * (int(feats["image_grid_thw"][k].prod()) // 4))
            k += 1
        expanded.append(t)
    tok.padding_side = "left"
    enc = tok(expanded, padding=True, return_tensors="pt")
    tt = (enc.input_ids == model.config.image_token_id).int()
    with torch.no_grad():
        out = model(**enc, pixel_values=feats["pixel_values"], image_grid_thw=feats["image_grid_thw"],
                    mm_token_type_ids=tt, output_hidden_states=True)
    return torch.nn.functional.normalize(out.hidden_states[-1][:, -1], dim=-1).numpy()


def test_vlm2vec_mrope_option_matches_hf_forward(qwen2):
    imgs = [random_image(84, 56, 7), random_image(56, 56, 8)]
    items = [Item("what is in it?", image=imgs[0], instruction="Represent the given image with the following "
                  "question:"), Item(image=imgs[1], instruction="Represent the given image for classification")]
    texts = ["<|image_pad|>\nRepresent the given image with the following question: what is in it?",
             "<|image_pad|>\nRepresent the given image for classification"]
    old = load_encoder(qwen2, family="vlm2vec", positions="mrope", min_pixels=None, max_pixels=None)
    assert np.abs(old.encode_queries(items) - _reference_mrope(qwen2, texts, imgs)).max() <= 1e-4


# --------------------------------------------------------------------------------------------- persistence
def test_save_reload_identical_and_recipe_kept(gme, tmp_path):
    out = gme.save(tmp_path / "saved")
    meta = json.loads((out / "omniret.json").read_text())
    assert meta["family"] == "gme" and meta["recipe"]["positions"] == "sequential"
    again = load_encoder(out)  # the path alone reloads family + recipe
    items = mixed_items()
    assert np.abs(gme.encode_queries(items, instruction="x") - again.encode_queries(items, instruction="x")).max() \
        == 0.0
    assert again.recipe_hash == gme.recipe_hash


def test_lora_adapter_directory_is_merged(qwen2, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(qwen2)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(tmp_path / "adapter")
    acfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    acfg["base_model_name_or_path"] = str(qwen2)
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(acfg))
    enc = load_encoder(tmp_path / "adapter", family="vlm2vec")
    plain = load_encoder(qwen2, family="vlm2vec")
    items = [Item("a red dog"), Item("a cat", image=random_image(56, 56, 9))]
    lora_emb, plain_emb = enc.encode_documents(items), plain.encode_documents(items)
    assert np.abs(lora_emb - plain_emb).max() > 1e-3  # the adapter changes the weights
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(tmp_path / "merged")
    for f in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (tmp_path / "merged" / f).write_bytes((qwen2 / f).read_bytes())
    ref = load_encoder(tmp_path / "merged", family="vlm2vec").encode_documents(items)
    assert np.abs(lora_emb - ref).max() <= 1e-5


# --------------------------------------------------------------------------------------------- errors
def test_bad_options_and_inputs(qwen2, gme):
    with pytest.raises(ConfigError, match="padding_side"):
        load_encoder(qwen2, family="gme", padding_side="middle")
    with pytest.raises(ConfigError, match="unknown option"):
        load_encoder(qwen2, family="gme", colour="blue")
    short = load_encoder(qwen2, family="gme", max_length=16)
    with pytest.raises(DataError, match="max_length"):
        short.encode_documents([Item("a dog", image=random_image(112, 112, 1))])


def test_wrong_architecture_is_clear(tmp_path):
    from tiny_models import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    with pytest.raises(ConfigError, match="not a Qwen2-VL"):
        load_encoder(clip, family="gme")

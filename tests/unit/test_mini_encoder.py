"""The bundled offline encoder (conse-minilm) with its real MiniLM and EfficientNet-Lite0 weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omniret import ImagePart, Item, load_encoder
from omniret.encoders.effnet import imagenet_classes, preprocess
from omniret.encoders.mini import ConseMiniEncoder
from omniret.errors import OmniretError
from omniret.images import ImageError, load_image

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "sample-corpus"
APPLE = CORPUS / "emoji" / "red_apple.png"
CAR = CORPUS / "emoji" / "automobile.png"
CAT = CORPUS / "photos" / "chelsea_the_cat.jpg"
COFFEE = CORPUS / "photos" / "coffee.jpg"
INSTRUCTION = "Retrieve an image that matches the given caption."


@pytest.fixture(scope="module")
def enc() -> ConseMiniEncoder:
    e = load_encoder("conse-minilm")
    assert isinstance(e, ConseMiniEncoder)
    return e


def test_registered_names_shapes_and_normalisation(enc):
    assert enc.name == "conse-minilm" and enc.dim == 384 and enc.family == "mini"
    out = enc.encode_documents(["a red apple", Item(image=APPLE), Item("a cat", image=CAT)])
    assert out.shape == (3, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert enc.encode_documents([]).shape == (0, 384)


def test_text_matches_sentence_transformers(enc):
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(enc.text.path), device="cpu")
    sentences = ["A man is eating food.", "hi", "Über café naïve 東京", "word " * 400, "The cat sat on the mat."]
    ours = enc.encode_documents(sentences, batch_size=2)
    theirs = st.encode(sentences, normalize_embeddings=True, convert_to_numpy=True)
    assert np.abs(ours - theirs).max() <= 1e-5
    # a query without an instruction is exactly a document
    np.testing.assert_array_equal(enc.encode_queries(sentences, batch_size=2), ours)


def test_batch_composition_invariance(enc):
    items = [
        Item("a red apple"),
        Item(image=APPLE),
        Item("a much longer sentence about a small grey cat sleeping in the afternoon sun " * 3),
        Item("this cat", image=CAT),
        Item(parts=["look at", ImagePart(COFFEE), "then this", ImagePart(CAR)]),
        Item("x"),
        Item(image=CAR),
    ]
    together = enc.encode_documents(items, batch_size=16)
    alone = np.concatenate([enc.encode_documents([it], batch_size=1) for it in items])
    order = [6, 2, 0, 4, 1, 5, 3]
    shuffled = enc.encode_documents([items[i] for i in order], batch_size=3)[np.argsort(order)]
    assert np.abs(together - alone).max() <= 1e-5
    assert np.abs(together - shuffled).max() <= 1e-5


def _manual_instruction_embedding(enc, instruction: str, text: str) -> np.ndarray:
    """Independent reference: HF pair encoding [CLS] inst [SEP] text [SEP], mean over non-instruction tokens."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(enc.text.path))
    model = AutoModel.from_pretrained(str(enc.text.path)).eval()
    b = tok(instruction, text, return_tensors="pt", return_token_type_ids=False)
    with torch.inference_mode():
        h = model(**b).last_hidden_state[0]  # (L, 384)
    n_inst = len(tok(instruction, add_special_tokens=False)["input_ids"])
    keep = torch.ones(h.shape[0], dtype=torch.bool)
    keep[1 : 2 + n_inst] = False  # instruction tokens and the [SEP] after them
    v = h[keep].mean(0)
    return torch.nn.functional.normalize(v, dim=0).numpy()


def test_instruction_conditions_but_is_not_pooled(enc):
    text = "a red apple on a table"
    plain = enc.encode_queries([text])[0]
    inst = enc.encode_queries([text], instruction=INSTRUCTION)[0]
    assert np.abs(inst - plain).max() > 1e-2  # the instruction changes the embedding ...
    ref = _manual_instruction_embedding(enc, INSTRUCTION, text)
    assert np.abs(inst - ref).max() <= 1e-5  # ... only through attention: pooling skips its tokens
    # an item's own instruction wins over the call's default
    own = enc.encode_queries([Item(text, instruction=INSTRUCTION)], instruction="something else")[0]
    np.testing.assert_allclose(own, inst, atol=1e-6)


def test_documents_ignore_instructions_and_image_queries_ignore_them(enc):
    doc_plain = enc.encode_documents(["a red apple"])
    doc_inst = enc.encode_documents([Item("a red apple", instruction=INSTRUCTION)])
    np.testing.assert_array_equal(doc_inst, doc_plain)
    img_doc = enc.encode_documents([Item(image=APPLE)])
    img_q = enc.encode_queries([Item(image=APPLE)], instruction=INSTRUCTION)
    assert np.abs(img_q - img_doc).max() <= 1e-6
    # documents keep every part: text and image both count
    both = enc.encode_documents([Item("a red apple", image=APPLE)])
    assert np.abs(both - doc_plain).max() > 1e-2 and np.abs(both - img_doc).max() > 1e-2


def test_interleaved_fusion_is_normalised_sum(enc):
    t, i, both = enc.encode_documents(["a tabby cat", Item(image=CAT), Item("a tabby cat", image=CAT)])
    expected = (t + i) / np.linalg.norm(t + i)
    assert np.abs(both - expected).max() <= 1e-5


def test_conse_image_embedding_by_hand(enc):
    """The image embedding equals the top-k probability-weighted mix of class prompt embeddings."""
    pixels = torch.from_numpy(preprocess(load_image(CAT)))[None]
    with torch.inference_mode():
        logits = enc._vision_tower().logits(pixels)[0]
        table = enc.class_prompt_embeddings()
    p = torch.softmax(logits / enc.temperature, -1)
    w, idx = p.topk(enc.top_k)
    v = (w[:, None] * table[idx]).sum(0)
    expected = (v / v.norm()).numpy()
    got = enc.encode_documents([Item(image=CAT)])[0]
    assert np.abs(got - expected).max() <= 1e-5
    assert "tabby cat" in [imagenet_classes()[j] for j in idx[:3].tolist()]


def test_semantic_sanity_with_real_weights(enc):
    imgs = enc.encode_documents([Item(image=APPLE), Item(image=CAT), Item(image=COFFEE), Item(image=CAR)])
    caps = enc.encode_documents(["a red apple", "a cat", "a cup of coffee", "a car"])
    sims = imgs @ caps.T
    assert sims[0, 0] > sims[0, 3]  # apple emoji: "a red apple" beats "a car"
    assert sims[1].argmax() == 1 and sims[2].argmax() == 2  # real photos: the right caption wins


def test_recipe_save_and_reload(enc, tmp_path):
    assert {"top_k", "temperature", "templates", "text", "image", "fusion"} <= set(enc.recipe())
    other = ConseMiniEncoder(top_k=3, prompt_cache=False)
    assert other.recipe_hash != enc.recipe_hash
    saved = other.save_pretrained(tmp_path / "mini")
    again = load_encoder(saved)
    assert isinstance(again, ConseMiniEncoder) and again.top_k == 3
    assert again.recipe_hash == other.recipe_hash


def test_bad_options_and_bad_images_are_clear_errors(enc, tmp_path):
    bads = ({"top_k": 0}, {"temperature": 0}, {"templates": ["no slot"]}, {"precision": "int3"}, {"device": "gpu0"})
    for bad in bads:
        with pytest.raises(OmniretError):
            ConseMiniEncoder(**bad)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg"):
        enc.encode_documents(["fine", Item(image=broken)])


def test_bf16_drift_is_small(enc):
    texts = ["a red apple", "The domestic cat is a small carnivorous mammal.", "rocket launch at dawn"]
    fp32 = enc.encode_documents(texts)
    enc.precision = "bf16"
    try:
        bf16 = enc.encode_documents(texts)
    finally:
        enc.precision = "fp32"
    cos = (fp32 * bf16).sum(1)
    assert cos.min() > 0.99 and np.abs(fp32 - bf16).max() < 0.05

"""VLM2Vec's reference semantics, computed without omniret's encoder code and compared with the ``vlm2vec`` family.

The reference (TIGER-AI-Lab/VLM2Vec ``src/data/eval_dataset/image_*``, ``src/model/processor.py``, its own
Qwen2-VL copy): MMEB strings written by hand with the eval code's newlines, images bounded to 3,136..1,003,520
pixels, left padding, and positions from its ``get_rope_index``, which looks for images only after
``<|vision_start|>`` — absent from VLM2Vec prompts, so every token gets 0..n-1.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from omniret import load_encoder
from omniret.data.mmeb import dataset_files, read_eval
from tiny_models import build_tiny_qwen2vl, random_image

MIN_PIXELS, MAX_PIXELS = 4 * 28 * 28, 1280 * 28 * 28
CLS_INST = "Represent the given image for classification"
T2I_INST = "Represent the given dialogue about an image, which is used for image retrieval:"
I2I_INST = "Find a day-to-day image that looks similar to the provided image."
TGT_INST = "Represent the given image."
CAP_INST = "Represent the given image with related text information:"


@pytest.fixture(scope="module")
def qwen2(tmp_path_factory):
    """A tiny Qwen2-VL made position-sensitive (rope_theta 10000 -> 2, so rotations differ at small positions):
    with the default theta, M-RoPE and sequential positions land within 1e-4 of each other."""
    path = build_tiny_qwen2vl(tmp_path_factory.mktemp("q2"))
    cfg = json.loads((path / "config.json").read_text())
    cfg["text_config"]["rope_parameters"]["rope_theta"] = 2.0
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def vlm2vec(qwen2):
    return load_encoder(qwen2, family="vlm2vec")


@pytest.fixture(scope="module")
def mmeb(tmp_path_factory):
    """Four MMEB-v2-style data sets, one row each, one per eval parser (cls, t2i, i2i, t2i with captions)."""
    root = tmp_path_factory.mktemp("mmeb")
    for i, (w, h) in enumerate([(28, 28), (84, 56), (56, 70), (60, 40), (112, 84)]):
        random_image(w, h, 30 + i).save(root / f"im{i}.png")
    rows = {
        "ImageNet-1K": {"qry_inst": f"<|image_1|>\n{CLS_INST}", "qry_text": "", "qry_img_path": "im0.png",
                        "tgt_inst": "", "tgt_text": ["tench", "goldfish"], "tgt_img_path": ["", ""]},
        "VisDial": {"qry_inst": T2I_INST, "qry_text": "Q: what is it A: a dog", "qry_img_path": "",
                    "tgt_inst": f"<|image_1|>\n{TGT_INST}", "tgt_text": [""], "tgt_img_path": ["im1.png", "im2.png"]},
        "NIGHTS": {"qry_inst": f"<|image_1|>\n{I2I_INST}", "qry_text": "", "qry_img_path": "im4.png",
                   "tgt_inst": f"<|image_1|>\n{TGT_INST}", "tgt_text": [""], "tgt_img_path": ["im1.png", "im4.png"]},
        "WebQA": {"qry_inst": "Find a Wikipedia image that answers this question:", "qry_text": "where is it?",
                  "qry_img_path": "", "tgt_inst": f"<|image_1|>\n{CAP_INST}", "tgt_text": ["a red car", "a dog"],
                  "tgt_img_path": ["im2.png", "im4.png"]},
    }
    for name, row in rows.items():
        (root / f"{name}.jsonl").write_text(json.dumps(row) + "\n")
    return root


# strings as VLM2Vec's eval code builds them for Qwen2-VL (process_input_text, replace(" \n", "\n"), + "\n")
EXPECTED = {
    "ImageNet-1K": ([f"<|image_pad|>\n{CLS_INST}\n"], ["tench", "goldfish"]),
    "VisDial": ([f"{T2I_INST} Q: what is it A: a dog\n\n"], [f"<|image_pad|>\n{TGT_INST}\n"] * 2),
    "NIGHTS": ([f"<|image_pad|>\n{I2I_INST}\n"], [f"<|image_pad|>\n{TGT_INST}"] * 2),
    "WebQA": (["Find a Wikipedia image that answers this question: where is it?\n"],
              [f"<|image_pad|>\n{CAP_INST} a red car\n", f"<|image_pad|>\n{CAP_INST} a dog\n"]),
}


def _smart_resize(h: int, w: int, factor: int = 28) -> tuple[int, int]:
    """Qwen2-VL's smart_resize with VLM2Vec's eval bounds, written out."""
    hb, wb = max(factor, round(h / factor) * factor), max(factor, round(w / factor) * factor)
    if hb * wb > MAX_PIXELS:
        beta = math.sqrt(h * w / MAX_PIXELS)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < MIN_PIXELS:
        beta = math.sqrt(MIN_PIXELS / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def _reference_rope_index(input_ids: torch.Tensor, mask: torch.Tensor, vision_start: int) -> torch.Tensor:
    """VLM2Vec's Qwen2-VL ``get_rope_index`` for prompts without ``<|vision_start|>``: it counts images only
    after that token, finds none, and gives the unmasked tokens of each row 0..n-1 (pads keep 1)."""
    pos = torch.ones(3, *input_ids.shape, dtype=torch.long)
    for i in range(input_ids.shape[0]):
        keep = mask[i] == 1
        assert not (input_ids[i][keep] == vision_start).any()
        pos[:, i, keep] = torch.arange(int(keep.sum()))
    return pos


def _reference(path, texts: list[str], images: list) -> np.ndarray:
    """Tokenise the hand-written strings, expand each <|image_pad|> by its grid, left-pad, run the HF model with
    the reference's positions, take the last position of the last hidden layer, L2-normalise."""
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    proc = AutoImageProcessor.from_pretrained(path, backend="pil", min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    feats = proc(images=images, return_tensors="pt") if images else {}
    expanded, k = [], 0
    for t in texts:
        for _ in range(t.count("<|image_pad|>")):
            t = t.replace("<|image_pad|>", "<|IMG|>" * (int(feats["image_grid_thw"][k].prod()) // 4), 1)
            k += 1
        expanded.append(t.replace("<|IMG|>", "<|image_pad|>"))
    tok.padding_side = "left"
    enc = tok(expanded, padding=True, return_tensors="pt")
    pos = _reference_rope_index(enc.input_ids, enc.attention_mask, model.config.vision_start_token_id)
    kwargs = {k: feats[k] for k in ("pixel_values", "image_grid_thw")} if images else {}
    with torch.no_grad():
        out = model(**enc, position_ids=pos, **kwargs, output_hidden_states=True,
                    mm_token_type_ids=(enc.input_ids == model.config.image_token_id).int())
    return torch.nn.functional.normalize(out.hidden_states[-1][:, -1], dim=-1).numpy()


def test_mmeb_strings_follow_the_eval_code(mmeb, vlm2vec):
    files = dataset_files(mmeb)
    for name, (queries, cands) in EXPECTED.items():
        (row,) = read_eval(files[name], mmeb, name)
        assert [vlm2vec.render(row.query, True)] == queries, name
        assert [vlm2vec.render(c, False) for c in row.candidates] == cands, name


def test_embeddings_match_the_reference(mmeb, qwen2, vlm2vec):
    files = dataset_files(mmeb)
    for name, (queries, cands) in EXPECTED.items():
        (row,) = read_eval(files[name], mmeb, name)
        q_imgs = [p.load() for p in row.query.images]
        ours = vlm2vec.encode_queries([row.query])
        assert np.abs(ours - _reference(qwen2, queries, q_imgs)).max() <= 1e-5, name
        c_imgs = [p.load() for c in row.candidates for p in c.images]
        docs = vlm2vec.encode_documents(row.candidates, batch_size=len(row.candidates))
        assert np.abs(docs - _reference(qwen2, cands, c_imgs)).max() <= 1e-5, name


def test_old_behaviours_are_named_options_and_differ(mmeb, qwen2, vlm2vec):
    (row,) = read_eval(dataset_files(mmeb)["NIGHTS"], mmeb, "NIGHTS")
    ref = _reference(qwen2, EXPECTED["NIGHTS"][0], [p.load() for p in row.query.images])
    old = load_encoder(qwen2, family="vlm2vec", positions="mrope", mmeb_newlines=False, min_pixels=None,
                       max_pixels=None)
    assert old.render(row.query, True) == f"<|image_pad|>\n{I2I_INST}"
    assert np.abs(old.encode_queries([row.query]) - ref).max() > 1e-3  # the test can tell them apart
    mrope = load_encoder(qwen2, family="vlm2vec", positions="mrope")
    assert np.abs(mrope.encode_queries([row.query]) - ref).max() > 1e-4  # positions alone matter (10x the match tolerance)


def test_pixel_bounds(vlm2vec):
    from omniret import Item

    for w, h in [(20, 20), (1400, 1000), (2000, 40)]:
        batch = vlm2vec.prepare([Item(image=random_image(w, h, 1))], is_query=False)
        t, gh, gw = batch["image_grid_thw"][0].tolist()
        assert (gh * 14, gw * 14) == _smart_resize(h, w), (w, h)
        assert MIN_PIXELS <= gh * gw * 196 <= MAX_PIXELS

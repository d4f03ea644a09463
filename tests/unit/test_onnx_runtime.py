"""conse-minilm on ONNX Runtime: fp32 equals PyTorch, int8 drifts a little (and really is quantised), the
tokeniser needs no transformers, exports are cached atomically, and a missing runtime is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from omniret import Item
from omniret.encoders import mini, onnx_runtime
from omniret.encoders.effnet import preprocess
from omniret.encoders.mini import ConseMiniEncoder
from omniret.encoders.minilm import MiniLMTextTower, default_minilm_path
from omniret.encoders.minilm_tokenizer import MiniLMTokenizer
from omniret.errors import OmniretError
from omniret.eval.cache import precision_tag
from omniret.images import load_image

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "sample-corpus"
TEXTS = [
    "A man is eating food.",
    "hi",
    "Über café naïve 東京",
    "word " * 300,
    "The domestic cat is a small carnivorous mammal with soft fur.",
]
INSTRUCTIONS = [None, "Retrieve an image that matches the given caption.", None, "Find it.", "Find it."]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A fresh ONNX cache for this module, so the export path itself is exercised."""
    d = tmp_path_factory.mktemp("onnx-cache")
    mp = pytest.MonkeyPatch()
    mp.setattr(onnx_runtime, "cache_dir", lambda: d)
    yield d
    mp.undo()


@pytest.fixture(scope="module")
def torch_tower() -> MiniLMTextTower:
    return MiniLMTextTower()


def test_tokenizer_without_transformers_matches_the_torch_tower(torch_tower):
    fast = MiniLMTokenizer.from_dir(default_minilm_path(), torch_tower.max_length)
    a, b = fast.tokenize(TEXTS, INSTRUCTIONS), torch_tower.tokenize(TEXTS, INSTRUCTIONS)
    for name in ("input_ids", "attention_mask", "pool_mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert a.input_ids.shape[1] == 256  # truncated to MiniLM's max length
    assert [fast.length(t) for t in TEXTS] == [torch_tower.length(t) for t in TEXTS]


def test_onnx_fp32_text_equals_torch_and_int8_drifts_little(cache, torch_tower):
    ref = ConseMiniEncoder(runtime="torch")
    fast = ConseMiniEncoder(runtime="onnx")
    q8 = ConseMiniEncoder(precision="int8")
    assert not ref.uses_onnx() and fast.uses_onnx() and q8.uses_onnx()
    items = [Item(t, instruction=i) if i else Item(t) for t, i in zip(TEXTS, INSTRUCTIONS, strict=True)]
    e_ref, e_fast, e_q8 = (e.encode_queries(items, batch_size=2) for e in (ref, fast, q8))
    assert np.abs(e_fast - e_ref).max() < 1e-5
    cos = (e_q8 * e_ref).sum(1)
    # int8 really changes the numbers (so the quantised graph ran) but stays close (docs/results.md: mean 0.995)
    assert np.abs(e_q8 - e_ref).max() > 1e-4 and cos.min() > 0.97, cos
    assert ref.recipe_hash == fast.recipe_hash == q8.recipe_hash  # numerics only: an fp32 index stays usable
    names = sorted(p.name for p in cache.iterdir())
    # the plain and padding-free fp32 graphs and int8; no temporary files left behind
    assert [n.split("-", 2)[-1] for n in names] == ["fp32-packed.onnx", "fp32.onnx", "int8.onnx"]
    stamp = [p.stat().st_mtime_ns for p in sorted(cache.iterdir())]
    ConseMiniEncoder(precision="int8").encode_documents(["again"])
    assert [p.stat().st_mtime_ns for p in sorted(cache.iterdir())] == stamp  # reused, not exported again


def test_padded_batches_run_the_padding_free_graph_equal_to_the_plain_one(cache):
    enc = ConseMiniEncoder(runtime="onnx")
    alone = np.concatenate([enc.encode_queries([Item(t)]) for t in TEXTS])
    tower = enc._text_tower()
    assert tower._packed is None  # one text per batch has no padding: the plain graph ran
    together = enc.encode_queries([Item(t) for t in TEXTS], batch_size=len(TEXTS))
    assert tower._packed is not None
    assert np.abs(together - alone).max() < 1e-5
    # both graphs on one padded batch: equal at the real tokens, zeros at the padding
    batch = tower.tokenize(TEXTS)
    feeds = {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()}
    plain, packed = (s.run(None, feeds)[0] for s in (tower._session, tower._packed))
    real = batch.attention_mask.numpy().astype(bool)
    assert (~real).sum() > 500 and np.abs(plain[real] - packed[real]).max() < 1e-4
    assert not packed[~real].any()
    # idle intra-op threads sleep: spinning burns CPU that a server's other work (or other processes) need
    for sess in (tower._session, tower._packed):
        assert sess.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_onnx_image_logits_equal_torch(cache):
    enc = ConseMiniEncoder(runtime="onnx")
    pix = torch.from_numpy(
        np.stack([preprocess(load_image(CORPUS / "emoji" / "red_apple.png")), preprocess(load_image(CORPUS / "photos" / "coffee.jpg"))])
    )
    fast = enc.image_logits(pix)
    with torch.inference_mode():
        ref = enc._vision_tower().logits(pix)
    assert fast.shape == (2, 1000) and fast.dtype == torch.float32
    assert (fast - ref).abs().max() < 1e-3 * ref.abs().max()
    assert torch.equal(fast.argmax(1), ref.argmax(1))


def test_runtime_choice_and_clear_errors(monkeypatch):
    with pytest.raises(OmniretError, match="runtime"):
        ConseMiniEncoder(runtime="tensorrt")
    enc = ConseMiniEncoder(runtime="torch")
    enc.precision = "bf16"
    assert not enc.uses_onnx()  # autocast precisions always run on torch
    monkeypatch.setattr(onnx_runtime, "onnx_available", lambda: False)
    monkeypatch.setattr(mini, "onnx_available", lambda: False)
    assert not ConseMiniEncoder().uses_onnx()  # auto falls back to torch when ONNX Runtime is missing
    for opts in ({"precision": "int8"}, {"runtime": "onnx"}):
        with pytest.raises(OmniretError, match="onnxruntime"):
            ConseMiniEncoder(**opts)


def test_eval_caches_are_kept_apart_by_precision():
    class Enc:
        precision = "fp32"

    e = Enc()
    assert precision_tag(e) == ""
    e.precision = "int8"
    assert precision_tag(e) == "-int8"

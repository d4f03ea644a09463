"""Every trainable family through the one Encoder contract: a few AdamW steps on a fixed batch lower the loss
and change the embeddings; GradCache gives plain backprop's gradients; save -> load_encoder reproduces the
embeddings with LoRA kept as adapters and merged; Retriever.open reopens what load_encoder loaded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omniret import Item
from omniret.encoders import load_encoder, open_reference
from omniret.encoders.lora import ADAPTER_FILE
from omniret.losses import InfoNCE
from omniret.training.config import LoraConfig, ModelConfig
from omniret.training.gradcache import chunked, grad_cache_step
from omniret.training.lora import apply_policy
from tiny_models import make_tiny, random_image

FAMILIES = ["gme", "vlm2vec", "rematch", "mmembed", "clip", "siglip", "omni-mini"]
IMG = [random_image(40, 40, seed=s) for s in range(4)]
QUERIES = [Item("red dog", instruction="Find the picture."), Item(image=IMG[0]),
           Item("a small cat", image=IMG[1], instruction="Find it."), Item("old house")]
DOCS = [Item(image=IMG[2]), Item("a bird near the river"), Item("tree", image=IMG[3]), Item("the blue car")]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = make_tiny(family, root / family)
        return cache[family]

    return get


def _policy(family: str) -> ModelConfig:
    # CLIP/SigLIP: full fine-tuning of both towers (UniIR); the MLLMs and omni-mini: LoRA + projector
    if family in ("clip", "siglip"):
        return ModelConfig(freeze_vision=False)
    return ModelConfig(lora=LoraConfig(r=4, alpha=8))


def _loss(enc, loss_fn) -> torch.Tensor:
    return loss_fn(enc.embed(enc.prepare(QUERIES, is_query=True)), enc.embed(enc.prepare(DOCS, is_query=False)))


@pytest.mark.parametrize("family", FAMILIES)
def test_a_few_steps_lower_the_loss_and_move_the_embeddings(family, tiny_dirs):
    torch.manual_seed(0)
    enc = load_encoder(tiny_dirs(family))
    before = enc.encode_queries(QUERIES)
    apply_policy(enc, _policy(family))
    params = [p for p in enc.trainable_module().parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-3)
    loss_fn = InfoNCE(temperature=0.1)
    enc.train()
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = _loss(enc, loss_fn)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    enc.train(False)
    with torch.no_grad():
        losses.append(float(_loss(enc, loss_fn)))
    assert losses[-1] < losses[0] - 1e-3, losses
    assert not np.allclose(enc.encode_queries(QUERIES), before, atol=1e-4)
    frozen = enc.param_roles()["vision"]
    if frozen and family not in ("clip", "siglip"):  # the vision tower never trains by default
        from fnmatch import fnmatch

        vis = [p for n, p in enc.trainable_module().named_parameters() if any(fnmatch(n, g) for g in frozen)
               and not any(fnmatch(n, g) for g in enc.param_roles()["projector"])]
        assert vis and not any(p.requires_grad for p in vis)


@pytest.mark.parametrize("family", ["gme", "mmembed"])
def test_gradcache_gradients_equal_plain_backprop(family, tiny_dirs):
    enc = load_encoder(tiny_dirs(family))
    apply_policy(enc, ModelConfig(lora=LoraConfig(r=4, alpha=8)))
    with torch.no_grad():  # non-zero LoRA B so the adapters' own gradients are non-trivial
        for n, p in enc.trainable_module().named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    params = [(n, p) for n, p in enc.trainable_module().named_parameters() if p.requires_grad]
    loss_fn = InfoNCE(temperature=0.1, symmetric=True)
    enc.train()
    _loss(enc, loss_fn).backward()
    plain = {n: p.grad.clone() for n, p in params if p.grad is not None}
    enc.trainable_module().zero_grad(set_to_none=True)
    groups = [[enc.prepare(list(c), is_query=True) for c in chunked(QUERIES, 3)],
              [enc.prepare(list(c), is_query=False) for c in chunked(DOCS, 3)]]
    grad_cache_step(enc.embed, groups, loss_fn)
    cached = {n: p.grad.clone() for n, p in params if p.grad is not None}
    assert plain.keys() == cached.keys() and len(plain) > 4
    for n in plain:
        torch.testing.assert_close(cached[n], plain[n], atol=1e-5, rtol=1e-4, msg=n)


@pytest.mark.parametrize("family", ["gme", "mmembed", "clip", "rematch"])
def test_save_reload_identical_with_adapters_kept_and_merged(family, tiny_dirs, tmp_path):
    enc = load_encoder(tiny_dirs(family))
    apply_policy(enc, ModelConfig(lora=LoraConfig(r=4, alpha=8)))
    with torch.no_grad():
        for p in enc.trainable_module().parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)  # adapters, projector and heads all differ from the base
    want_q, want_d = enc.encode_queries(QUERIES), enc.encode_documents(DOCS)

    enc.save(tmp_path / "kept")
    assert (tmp_path / "kept" / ADAPTER_FILE).is_file()
    kept = load_encoder(tmp_path / "kept")
    np.testing.assert_array_equal(kept.encode_queries(QUERIES), want_q)
    np.testing.assert_array_equal(kept.encode_documents(DOCS), want_d)

    enc.save(tmp_path / "merged", merge_lora=True)
    assert not (tmp_path / "merged" / ADAPTER_FILE).exists()
    merged = load_encoder(tmp_path / "merged")
    assert not any(".lora_" in n for n, _ in merged.trainable_module().named_parameters())
    np.testing.assert_allclose(merged.encode_queries(QUERIES), want_q, atol=2e-6)
    np.testing.assert_allclose(merged.encode_documents(DOCS), want_d, atol=2e-6)
    # saving did not disturb the live model (the merge is undone exactly)
    np.testing.assert_array_equal(enc.encode_queries(QUERIES), want_q)


def test_retriever_reopens_an_encoder_object(tiny_dirs, tmp_path):
    from omniret.retriever import Retriever

    enc = load_encoder(tiny_dirs("clip"), fusion="sum_normalized")  # not the default: the reference must keep it
    ix = tmp_path / "ix"
    r = Retriever.create(ix, enc)
    r.index_corpus([Item("a red dog", id="a"), Item(image=IMG[0], id="b")])
    again = Retriever.open(ix)  # reopens from the reference load_encoder recorded, option included
    assert again.encoder.recipe_hash == enc.recipe_hash
    assert [h.id for h in again.search("a red dog", k=2)] == [h.id for h in r.search("a red dog", k=2)]
    assert open_reference(enc.source).recipe()["fusion"] == "sum_normalized"


@pytest.mark.parametrize("family", ["gme", "mmembed"])
def test_gradient_checkpointing_keeps_the_gradients(family, tiny_dirs):
    enc = load_encoder(tiny_dirs(family))
    apply_policy(enc, ModelConfig(lora=LoraConfig(r=4, alpha=8)))
    params = [(n, p) for n, p in enc.trainable_module().named_parameters() if p.requires_grad]
    loss_fn = InfoNCE(temperature=0.1)
    enc.train()
    _loss(enc, loss_fn).backward()
    plain = {n: p.grad.clone() for n, p in params if p.grad is not None}
    enc.trainable_module().zero_grad(set_to_none=True)
    enc.enable_gradient_checkpointing()
    _loss(enc, loss_fn).backward()
    for n, p in params:
        if n in plain:
            torch.testing.assert_close(p.grad, plain[n], atol=1e-6, rtol=1e-5, msg=n)


def test_make_tiny_cli_writes_a_loadable_model(tmp_path):
    from typer.testing import CliRunner

    from omniret.cli.app import app

    res = CliRunner().invoke(app, ["models", "make-tiny", "clip", str(tmp_path / "c")])
    assert res.exit_code == 0, res.output
    assert load_encoder(tmp_path / "c").family == "clip"
    bad = CliRunner().invoke(app, ["models", "make-tiny", "nope", str(tmp_path / "n")])
    assert bad.exit_code != 0 and "no tiny builder for family 'nope'" in (bad.output + str(bad.exception))


def test_device_and_precision_are_checked_once_in_the_base(tiny_dirs):
    from omniret.errors import ConfigError

    for family in ("clip", "gme", "mmembed"):
        with pytest.raises(ConfigError, match="precision='fp64' is not valid"):
            load_encoder(tiny_dirs(family), precision="fp64")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            load_encoder(tiny_dirs("clip"), device="cuda")

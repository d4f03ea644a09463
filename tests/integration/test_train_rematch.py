"""ReMatch's objective through the trainer: ``orth`` + ``match`` loss terms by config, GradCache with them equal
to plain backprop, the recipe configs, and the shipped smoke config end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from omniret import Item, load_encoder
from omniret.training.config import ConfigError, load_config
from omniret.training.data import Batch
from omniret.training.stages import run_training
from omniret.training.trainer import Trainer

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "rematch" / "smoke.yaml"
TERMS = ("contrastive", "orth", "match")


def smoke_config(tmp: Path, **optim):
    cfg = load_config(SMOKE)
    cfg.output_dir = str(tmp)
    for k, v in optim.items():
        setattr(cfg.optim, k, v)
    return cfg


def fixed_batch() -> Batch:
    emoji = SMOKE.parents[2] / "examples" / "sample-corpus" / "emoji"
    names = ["cat", "dog", "bicycle", "banana"]
    q = [Item(f"Find the emoji that shows: {n}") for n in names]
    p = [Item(image=str(emoji / f"{n}.png")) for n in names]
    n = [Item(image=str(emoji / f"{m}.png")) for m in ["crab", "cow", "bus", "bagel"]]
    return Batch(q, p, n)


def grads_after_one_step(tmp: Path, chunk: int, terms: list[dict]) -> dict[str, torch.Tensor]:
    cfg = smoke_config(tmp, gradcache_chunk=chunk)
    cfg.loss.terms = terms
    st = cfg.validate().resolved_stages()[0]
    from omniret.training.stages import build_encoder

    enc = build_encoder(cfg, st, None)  # the first call builds tiny-base, which draws random numbers
    torch.manual_seed(0)  # the matching projector's initialisation
    trainer = Trainer(cfg, st, enc, st.data, tmp / "stage", log=lambda s: None)
    trainer.module.train()
    logged = trainer._step(fixed_batch())
    assert {"loss_contrastive", "loss_orth"} <= set(logged), logged
    model = {n: p.grad.clone() for n, p in trainer.module.named_parameters() if p.grad is not None}
    loss = {n: p.grad.clone() for n, p in trainer.loss_fn.named_parameters() if p.grad is not None}
    return model, loss


@pytest.mark.parametrize("with_match", [False, True])
def test_gradcache_with_orth_and_match_equals_plain_backprop(tmp_path, with_match):
    """GradCache caches the token states beside the embeddings (orth) and the gradient the matching pass sends
    into the embeddings (match); the matching pass's direct gradients land as in plain backprop."""
    terms = [{"name": "contrastive", "temperature": 0.02}, {"name": "orth", "weight": 0.5}]
    if with_match:
        terms.append({"name": "match", "weight": 0.1})
    plain, plain_proj = grads_after_one_step(tmp_path, 0, terms)
    cached, cached_proj = grads_after_one_step(tmp_path, 3, terms)
    assert plain.keys() == cached.keys() and any(n.startswith("banks.") for n in plain)
    assert plain_proj.keys() == cached_proj.keys() and (len(plain_proj) > 0) == with_match
    for n in [*plain, *plain_proj]:
        want, got = (plain[n], cached[n]) if n in plain else (plain_proj[n], cached_proj[n])
        # chunks pad differently, so float32 sums differ in the last bits: compare to the gradient's scale
        assert float((got - want).abs().max()) <= 2e-5 * max(1.0, float(want.abs().max())), n


def test_a_term_that_needs_the_prepared_batch_is_refused_with_gradcache(tmp_path):
    from omniret.losses import LOSS_TERMS, LossTerm

    @LOSS_TERMS.register("test-prepared-forward")
    class PreparedForward(LossTerm):
        needs = "forward"

    cfg = smoke_config(tmp_path, gradcache_chunk=4)
    cfg.loss.terms = [{"name": "contrastive"}, {"name": "test-prepared-forward"}]
    with pytest.raises(ConfigError, match=r"test-prepared-forward.*GradCache.*gradcache_chunk: 0"):
        cfg.validate()


def test_orth_with_a_single_token_family_is_a_clear_error(tmp_path):
    cfg = smoke_config(tmp_path)
    cfg.model.family, cfg.model.init, cfg.model.trainable = "gme", "tiny:gme", []
    cfg.loss.terms = [{"name": "contrastive"}, {"name": "orth"}]
    st = cfg.validate().resolved_stages()[0]
    from omniret.training.stages import build_encoder

    trainer = Trainer(cfg, st, build_encoder(cfg, st, None), st.data, tmp_path / "s", log=lambda s: None)
    with pytest.raises(Exception, match="no per-token embedding states.*rematch"):
        trainer._step(fixed_batch())


@pytest.mark.slow
def test_smoke_config_trains_all_three_terms_down_and_reloads(tmp_path):
    cfg = smoke_config(tmp_path / "run")
    final = run_training(cfg, log=lambda s: None)
    rows = [json.loads(line) for line in (tmp_path / "run" / "main" / "train_log.jsonl").read_text().splitlines()]
    assert len(rows) == cfg.optim.max_steps // cfg.optim.log_every
    for term in TERMS:
        values = [r[f"loss_{term}"] for r in rows]
        third = len(values) // 3
        # per-batch values are noisy: compare the first and the last third of the run
        assert np.mean(values[-third:]) < 0.8 * np.mean(values[:third]), (term, values)
    enc = load_encoder(final)
    assert type(enc).__name__ == "ReMatchEncoder" and enc.recipe_.num_tokens == 4
    saved = load_encoder(tmp_path / "run" / "main" / "final")
    q = [Item("Find the emoji that shows: cat")]
    np.testing.assert_array_equal(enc.encode_queries(q), saved.encode_queries(q))
    base = load_encoder(tmp_path / "run" / "tiny-base")
    assert not torch.equal(enc.banks["query"], base.banks["query"])  # the token banks trained
    # rerunning the finished config resumes nothing and returns the same model
    assert run_training(cfg, log=lambda s: None) == final


@pytest.mark.parametrize("name", ["mmeb-qwen25vl-3b", "mmeb-qwen2vl-2b"])
def test_recipe_configs_carry_the_papers_objective(name):
    """ReMatch (arXiv 2511.19278 §3): LoRA r=32, alpha=64, lr 1e-4 cosine, 2,500 steps, global batch 1024,
    K=16, one hard negative, L = L_cl(tau=0.02) + 0.5 L_orth + 0.1 L_qdm over all 8 views, no GradCache."""
    cfg = load_config(SMOKE.parent / f"{name}.yaml")
    (st,) = cfg.resolved_stages()
    m, o = cfg.model, st.optim
    assert (m.family, m.lora.r, m.lora.alpha, m.options["num_tokens"]) == ("rematch", 32, 64, 16)
    assert (o.lr, o.schedule, o.max_steps, o.batch_size, o.gradcache_chunk) == (1e-4, "cosine", 2500, 1024, 0)
    assert st.loss.hard_negatives == 1
    terms = {t["name"]: t for t in st.loss.term_specs()}
    assert {n: t["weight"] for n, t in terms.items()} == {"contrastive": 1.0, "orth": 0.5, "match": 0.1}
    assert terms["contrastive"]["temperature"] == 0.02 and terms["match"]["views"] == "all"
    assert [s.kind for s in st.data.sources] == ["mmeb"]


def test_resume_after_a_checkpoint_ends_with_the_uninterrupted_weights(tmp_path):
    """Run 8 steps (checkpoints at 4 and 8), then undo everything after step 4 as a kill would and rerun: the
    projector, the slot-draw counter, the banks and the weights all resume, so the result is bit-identical."""
    import shutil

    from safetensors.torch import load_file

    cfg = smoke_config(tmp_path / "run", max_steps=8, checkpoint_every=4, log_every=4)
    run = tmp_path / "run"
    final = run_training(cfg, log=lambda s: None)
    want = {f: load_file(str(final / f)) for f in ("model.safetensors", "rematch_tokens.safetensors")}
    ckpts = run / "main" / "checkpoints"
    assert int(load_file(str(ckpts / "step-00000008" / "loss.safetensors"))["terms.match.calls"]) == 8
    for d in (run / "final", run / "main" / "final", ckpts / "step-00000008"):
        shutil.rmtree(d)
    logs = []
    again = run_training(cfg, log=logs.append)
    assert any("resumed" in m and "step 4" in m for m in logs), logs
    for f, tensors in want.items():
        got = load_file(str(again / f))
        assert got.keys() == tensors.keys()
        for k in tensors:
            assert torch.equal(got[k], tensors[k]), (f, k)

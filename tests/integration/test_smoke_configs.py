"""Every shipped smoke config trains from a fresh clone on one CPU: each stage's loss falls in its
train_log.jsonl and the run's final model reloads with load_encoder by path alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omniret import Item
from omniret.encoders import load_encoder
from omniret.training.config import load_config
from omniret.training.stages import run_training

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SMOKE = ["mm-embed", "gme", "vlm2vec", "clip"]


@pytest.mark.slow
@pytest.mark.parametrize("family_dir", SMOKE)
def test_smoke_config_trains_and_reloads(family_dir, tmp_path):
    cfg = load_config(CONFIGS / family_dir / "smoke.yaml")
    cfg.output_dir = str(tmp_path / "run")
    final = run_training(cfg, log=lambda s: None)
    for st in cfg.resolved_stages():
        rows = [json.loads(line) for line in (tmp_path / "run" / st.name / "train_log.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(st.optim.log_every, st.optim.max_steps + 1, st.optim.log_every))
        assert all({"loss", "loss_contrastive", "lr", "pairs_per_s"} <= set(r) for r in rows)
        assert rows[-1]["loss"] < rows[0]["loss"], (st.name, [r["loss"] for r in rows])
    enc = load_encoder(final)
    assert enc.family == cfg.model.family
    emb = enc.encode_queries([Item("a red apple", instruction="Find the emoji.")])
    assert emb.shape == (1, enc.dim)


def test_mm_embed_config_carries_the_papers_recipe():
    """configs/mm-embed/mbeir.yaml = METHODS.md §2.4: three stages, stage 2 re-initialised from the base with
    mined modality-aware negatives (top-50, right modality below rank 45), continual stage at lr 2e-5 with text
    retrieval data; LoRA r=8, alpha=64 on the LLM, projector trained, vision frozen."""
    cfg = load_config(CONFIGS / "mm-embed" / "mbeir.yaml")
    rand, hard, cont = cfg.resolved_stages()
    m = cfg.model
    assert (m.family, m.lora.r, m.lora.alpha, m.freeze_vision, m.train_projector) == ("mmembed", 8, 64, True, True)
    assert (rand.init, rand.optim.lr, rand.optim.batch_size, rand.loss.hard_negatives) == ("base", 1e-4, 1024, 0)
    assert (hard.init, hard.optim.lr, hard.optim.batch_size, hard.loss.hard_negatives) == ("base", 1e-4, 512, 1)
    assert (hard.mine.model, hard.mine.top_n, hard.mine.min_rank) == ("stage:rand", 50, 45)
    assert (cont.init, cont.optim.lr, cont.optim.max_steps) == ("previous", 2e-5, 4500)
    assert sorted(s.kind for s in cont.data.sources) == ["mbeir", "pairs"]
    assert all(s.queries.endswith("mbeir_union_up_train.jsonl") for s in rand.data.sources)

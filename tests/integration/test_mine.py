"""`omniret mine` on a handmade M-BEIR-layout directory with the real default encoder: C1/C2 rules exactly; the
trainer's mining before a stage, reused when an earlier stage ran the identical job."""

import json

import numpy as np
import pytest
from _train_data import make_tiny_bert
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from omniret.cli.app import app
from omniret.data import mbeir
from omniret.encoders import load_encoder
from omniret.errors import OmniretError
from omniret.training.config import MineConfig, config_from_dict
from omniret.training.mining import choose, modality_aware_sets
from omniret.training.stages import run_training

COLORS = {"red": (220, 20, 20), "blue": (20, 40, 220), "green": (20, 160, 40), "yellow": (240, 220, 20),
          "black": (10, 10, 10), "white": (245, 245, 245)}
INSTR = "query_modality\tcand_modality\tdataset\tdataset_id\tprompt_1\n" \
        "text\timage\ttoy\t7\tFind an image that matches the description.\n" \
        "image\ttext\ttoy\t7\tFind a caption for this image.\n"


def _write(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("mbeir")
    (r / "images").mkdir()
    pool = []
    for i, (name, rgb) in enumerate(COLORS.items()):
        img = Image.new("RGB", (96, 96), (128, 128, 128))
        ImageDraw.Draw(img).ellipse((12, 12, 84, 84), fill=rgb)
        img.save(r / "images" / f"{name}.png")
        pool.append({"did": f"7:{i}", "txt": None, "img_path": f"images/{name}.png", "modality": "image"})
        pool.append({"did": f"7:{100 + i}", "txt": f"a {name} ball", "img_path": None, "modality": "text"})
    _write(r / "cand_pool" / "global" / "mbeir_union_train_cand_pool.jsonl", pool)
    t2i = [{"qid": f"7:{i}", "query_txt": f"a {n} circle", "query_img_path": None, "query_modality": "text",
            "pos_cand_list": [f"7:{i}"], "neg_cand_list": [], "task_id": 0} for i, n in enumerate(COLORS)]
    i2t = [{"qid": f"7:{50 + i}", "query_txt": None, "query_img_path": f"images/{n}.png", "query_modality": "image",
            "pos_cand_list": [f"7:{100 + i}"], "neg_cand_list": [], "task_id": 3} for i, n in enumerate(COLORS)]
    _write(r / "query" / "train" / "mbeir_toy_task0_train.jsonl", t2i)
    _write(r / "query" / "train" / "mbeir_toy_task3_train.jsonl", i2t)
    (r / "instructions").mkdir()
    (r / "instructions" / "query_instructions.tsv").write_text(INSTR)
    return r


def test_sets_and_mix_rules():
    mod = {"a": "image", "b": "text", "c": "image", "d": "text", "e": "image", "p": "image"}
    ranked = ["p", "b", "a", "d", "c", "e"]  # ranks 1..6
    c1, c2 = modality_aware_sets(ranked, {"p"}, "image", mod, top_n=5, min_rank=3)
    assert (c1, c2) == (["b", "d"], ["c"])  # e is outside the top 5; a is right-modality but rank 3 <= M
    rng = np.random.default_rng(0)
    assert choose(c1, c2, 2, "wrong_modality", rng) == ["b", "d"]
    assert choose(c1, c2, 2, "right_modality", rng) == ["c", "b"]
    assert set(choose(c1, c2, 2, "union", rng)) <= {"b", "c", "d"}
    assert sorted(choose(c1, c2, 5, "union", rng)) == ["b", "c", "d"]


def test_mine_cli_follows_the_rules(root, tmp_path):
    out = tmp_path / "mined"
    res = CliRunner().invoke(app, ["mine", str(root), "--out", str(out), "--top-n", "6", "--min-rank", "3",
                                   "--count", "3", "--mix", "wrong_modality"])
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output[res.output.rindex('{"out"'):].splitlines()[0])
    assert stats["queries"] == 12

    enc = load_encoder("default")
    pool = mbeir.read_pool(root / "cand_pool" / "global" / "mbeir_union_train_cand_pool.jsonl")
    p_emb = enc.encode_documents([r.to_item(root) for r in pool])
    mod = {r.id: r.modality for r in pool}
    prompts = mbeir.read_instructions(root / "instructions" / "query_instructions.tsv")
    cfg = MineConfig(top_n=6, min_rank=3, count=3, mix="wrong_modality")
    n_c1 = 0
    for name in ("mbeir_toy_task0_train.jsonl", "mbeir_toy_task3_train.jsonl"):
        recs = mbeir.read_queries(root / "query" / "train" / name)
        mined = [json.loads(line) for line in (out / name).read_text().splitlines()]
        assert [m["qid"] for m in mined] == [r.id for r in recs]
        items = [r.to_item(root, prompts[(r.dataset_id, r.modality, mod[r.pos[0]])][0]) for r in recs]
        q_emb = enc.encode_queries(items)
        for qe, rec, row in zip(q_emb, recs, mined, strict=True):
            scores = p_emb @ qe
            order = sorted(range(len(pool)), key=lambda j: (-scores[j], j))[: cfg.top_n]
            want = mod[rec.pos[0]]
            c1 = [pool[j].id for j in order if pool[j].id not in rec.pos and mod[pool[j].id] != want]
            c2 = [pool[j].id for r, j in enumerate(order, 1)
                  if r > cfg.min_rank and pool[j].id not in rec.pos and mod[pool[j].id] == want]
            expected = (c1 + c2)[: cfg.count]
            n_c1 += bool(c1)
            if expected:
                assert row["neg_cand_list"] == expected, rec.id
            else:  # fall-back: random right-modality non-positives
                assert len(row["neg_cand_list"]) == 3
                assert all(mod[d] == want and d not in rec.pos for d in row["neg_cand_list"])
            assert row["pos_cand_list"] == list(rec.pos)  # everything else unchanged
    assert stats["with_c1"] == n_c1


def test_mine_cli_rejects_bad_ranks(root, tmp_path):
    res = CliRunner().invoke(app, ["mine", str(root), "--out", str(tmp_path), "--top-n", "5", "--min-rank", "5"])
    assert res.exit_code != 0
    assert "min-rank" in str(res.exception) or "min-rank" in res.output


def test_trainer_reuses_an_identical_mining_job(root, tmp_path):
    bert = make_tiny_bert(tmp_path / "bert")
    mine = {"top_n": 6, "min_rank": 3, "count": 2, "mix": "wrong_modality"}
    raw = {
        "name": "reuse", "output_dir": "run", "seed": 1,
        "model": {"family": "omni-mini", "options": {"text_model": str(bert), "max_length": 32, "grid": 1}},
        "data": {"batching": "homogeneous", "sources": [{"kind": "mbeir", "path": str(root), "split": "train"}]},
        "loss": {"temperature": 0.1, "hard_negatives": 1},
        "optim": {"lr": 1e-3, "max_steps": 1, "batch_size": 4, "checkpoint_every": 10, "log_every": 1},
        "stages": [{"name": "rand", "init": "base", "loss": {"temperature": 0.1, "hard_negatives": 0}},
                   {"name": "hard", "init": "base", "mine": {"model": "previous", **mine}},
                   {"name": "again", "init": "previous", "mine": {"model": "stage:rand", **mine}},
                   {"name": "other", "init": "previous", "mine": {"model": "stage:rand", **mine, "count": 1}}],
    }
    logs: list[str] = []
    run_training(config_from_dict(raw, tmp_path), log=logs.append)
    run = tmp_path / "run"
    mined = {s: run / s / "mined" / "source0" for s in ("hard", "again", "other")}
    assert any(f"reusing hard negatives mined in {mined['hard']}" in m for m in logs)
    assert sum("stage other: mined" in m for m in logs) == 1  # different settings: mined anew
    for f in sorted(mined["hard"].glob("*.jsonl")):
        assert (mined["again"] / f.name).read_text() == f.read_text()

    bad = {**raw, "output_dir": "bad", "stages": [raw["stages"][0],
                                                  {"name": "x", "init": "base", "mine": {"model": "stage:nope", **mine}}]}
    with pytest.raises(OmniretError, match="stage:nope.*names no completed earlier stage"):
        run_training(config_from_dict(bad, tmp_path), log=logs.append)

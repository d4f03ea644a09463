"""`evaluate_mbeir` / `omniret eval mbeir --rerank`: both stages reported, each recomputable from its TREC run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import run
from _eval_helpers import ColourEncoder, build_colour_mbeir

from omniret.data.mbeir import read_pool, read_queries
from omniret.data.qrels import read_qrels
from omniret.eval.metrics import average_precision_at_k, mean_hit_at_k
from omniret.eval.report import write_mbeir_report
from omniret.eval.rerank_stage import TAIL_SHIFT, RerankStage
from omniret.eval.runner import MBeirOptions, evaluate_mbeir
from omniret.eval.trec import read_trec
from omniret.rerank import load_reranker
from tiny_rerank import build_tiny_qwen2vl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = build_colour_mbeir(tmp_path_factory.mktemp("mbeir"))
    mllm = build_tiny_qwen2vl(tmp_path_factory.mktemp("mllm") / "qwen")
    out = tmp_path_factory.mktemp("out")
    stage = RerankStage(load_reranker(mllm), k=3)
    opts = MBeirOptions(pools=("local", "global"), cache_dir=None)
    res = write_mbeir_report(out, evaluate_mbeir(root, ColourEncoder(), opts, out=out, rerank=stage))
    return root, mllm, out, res


def test_both_stages_recompute_from_their_trec_runs(setup):
    root, _, out, res = setup
    rr = res["rerank"]
    assert rr["k"] == 3 and rr["model"].endswith("qwen") and len(rr["tasks"]) == len(res["tasks"]) == 4
    for e in res["tasks"] + rr["tasks"]:
        ranked = {q: [d for d, _ in r] for q, r in read_trec(out / e["run"]).items()}
        qrels = read_qrels(root / f"qrels/test/mbeir_{e['name']}_test_qrels.txt").rel
        for k in (1, 5, 10):
            assert round(mean_hit_at_k(ranked, qrels, k), 4) == e[f"recall@{k}"], (e["run"], k)
    assert {e["run"] for e in rr["tasks"]} == {e["run"].replace(".trec", ".rerank.trec") for e in res["tasks"]}


def test_reranked_run_is_top_k_by_p_true_then_the_retrieval_tail(setup):
    root, mllm, out, _ = setup
    first = read_trec(out / "runs/colour_task0.global.trec")
    second = read_trec(out / "runs/colour_task0.global.rerank.trec")
    queries = {q.id: q for q in read_queries(root / "query/test/mbeir_colour_task0_test.jsonl")}
    pool = {r.id: r for r in read_pool(root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl")}
    rr = load_reranker(mllm)
    for qid, ranked in first.items():
        top = [d for d, _ in ranked[:3]]
        docs = [pool[d].to_item(root) for d in top]
        query = queries[qid].to_item(root, "Find the image of this colour")
        p = rr.score(query, docs, task="colour_task0")
        want = [top[i] for i in np.argsort(-p, kind="stable")]
        assert [d for d, _ in second[qid][:3]] == want
        np.testing.assert_allclose([s for _, s in second[qid][:3]], np.sort(p)[::-1], atol=1e-6)
        assert second[qid][3:] == [(d, pytest.approx(s - TAIL_SHIFT, abs=1e-6)) for d, s in ranked[3:]]


def test_report_shows_stages_side_by_side(setup):
    _, _, out, res = setup
    md = (out / "results.md").read_text()
    assert "## reranked stage: top 3" in md and "R@1 retr → rerank" in md
    e = next(e for e in res["rerank"]["tasks"] if e["name"] == "colour_task0" and e["pool"] == "local")
    base = next(b for b in res["tasks"] if b["name"] == "colour_task0" and b["pool"] == "local")
    assert f"| colour_task0 | {100 * base['recall@1']:.1f} → {100 * e['recall@1']:.1f} |" in md
    assert "rerank.png" in res["charts"] and (out / "rerank.png").stat().st_size > 1000
    assert json.loads((out / "results.json").read_text())["rerank"]["tasks"] == res["rerank"]["tasks"]


def test_map_at_k_for_several_positives():
    # CIRCO AP@5 with 3 positives at ranks 1, 3, 6: (1/1 + 2/3) / min(5, 3)
    assert average_precision_at_k({"a", "b", "c"}, ["a", "x", "b", "y", "z", "c"], 5) == pytest.approx((1 + 2 / 3) / 3)
    assert average_precision_at_k({"a"}, ["x", "a"], 5) == 0.5
    assert average_precision_at_k(set(), ["a"], 5) == 0.0


def test_eval_cli_rerank(setup, tmp_path, monkeypatch, capsys):
    root, mllm, _, _ = setup
    # the colour encoder is not registered: the CLI runs with the bundled default encoder instead
    code, out, err = run(monkeypatch, capsys, "eval", "mbeir", "--root", str(root), "--out", str(tmp_path / "o"),
                         "--tasks", "colour_task3", "--no-cache", "--rerank", str(mllm), "--rerank-k", "3")
    assert code == 0, err
    assert "reranked top 3" in out
    res = json.loads((tmp_path / "o/results.json").read_text())
    assert [e["name"] for e in res["rerank"]["tasks"]] == ["colour_task3"]
    code, _, err = run(monkeypatch, capsys, "eval", "mbeir", "--root", str(root), "--out", str(tmp_path / "o2"),
                       "--tasks", "colour_task3", "--no-cache", "--rerank", str(mllm), "--rerank-k", "9")
    assert code == 1 and "rerank k=9 but only 4 hit(s)" in err


def test_mmeb_rerank_stage_recomputes_from_its_run(setup, tmp_path):
    import ir_measures
    from _eval_helpers import PALETTE
    from ir_measures import Success
    from PIL import Image

    from omniret.eval.mmeb_runner import evaluate_mmeb

    _, mllm, _, _ = setup
    root = tmp_path / "mmeb"
    root.mkdir()
    for c, rgb in PALETTE.items():
        Image.new("RGB", (28, 28), rgb).save(root / f"{c}.png")
    rows = [{"qry_inst": "Find the image of this news.", "qry_text": c, "qry_img_path": "", "tgt_inst": "",
             "tgt_text": ["", "", ""], "tgt_img_path": [f"{c}.png", "yellow.png", other]}
            for c, other in (("red", "blue.png"), ("green", "blue.png"), ("blue", "red.png"))]
    (root / "VisualNews_t2i.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stage = RerankStage(load_reranker(mllm), k=2)
    res = evaluate_mmeb(root, ColourEncoder(), out=tmp_path / "o", rerank=stage)
    (d,) = res["rerank"]["datasets"]
    assert res["rerank"]["k"] == 2 and res["rerank"]["overall"] == d["hit@1"]
    qrels = {f"VisualNews_t2i:{i}": {"c0": 1} for i in range(3)}
    run_ = ir_measures.read_trec_run(str(tmp_path / "o/runs/VisualNews_t2i.rerank.trec"))
    assert ir_measures.calc_aggregate([Success @ 1], qrels, run_)[Success @ 1] == pytest.approx(d["hit@1"], abs=1e-4)
    first = read_trec(tmp_path / "o/runs/VisualNews_t2i.trec")
    second = read_trec(tmp_path / "o/runs/VisualNews_t2i.rerank.trec")
    assert all(sorted(d for d, _ in first[q][:2]) == sorted(d for d, _ in second[q][:2]) for q in first)
    assert all(first[q][2][0] == second[q][2][0] for q in first)

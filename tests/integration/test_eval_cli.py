"""`omniret eval ...` and `omniret data build ...` in-process with the real default encoder: exit codes,
files written, and TREC runs from which anyone recomputes results.json."""

from __future__ import annotations

import json

import ir_measures
import pytest
from _eval_helpers import build_colour_mbeir
from ir_measures import nDCG

from _cli import run
from omniret.data.mbeir import read_pool
from omniret.data.qrels import read_qrels
from omniret.eval.metrics import mean_hit_at_k
from omniret.eval.trec import read_trec


@pytest.fixture(scope="module")
def mbeir_root(tmp_path_factory):
    return build_colour_mbeir(tmp_path_factory.mktemp("mbeir"))


def test_eval_mbeir_default_model_both_pools(mbeir_root, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    code, stdout, err = run(monkeypatch, capsys, "eval", "mbeir", "--root", str(mbeir_root), "--model", "default",
                            "--pool", "both", "--out", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert code == 0, err
    res = json.loads((out / "results.json").read_text())
    assert [(e["name"], e["pool"]) for e in res["tasks"]] == [
        ("colour_task0", "local"), ("colour_task3", "local"), ("colour_task0", "global"), ("colour_task3", "global")]
    assert res["model"]["name"] == "omniret-bridge" and set(res["average"]) == {"local", "global"}
    # anyone can recompute the recalls and modality accuracy from the TREC runs, the qrels and the pool
    modality = {r.id: r.modality for r in read_pool(mbeir_root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl")}
    for e in res["tasks"]:
        ranked = {q: [d for d, _ in r] for q, r in read_trec(out / e["run"]).items()}
        qrels = read_qrels(mbeir_root / f"qrels/test/mbeir_{e['name']}_test_qrels.txt").rel
        assert all(round(mean_hit_at_k(ranked, qrels, k), 4) == e[f"recall@{k}"] for k in (1, 5, 10))
        want = "image" if e["name"].endswith("task0") else "text"
        top1 = [modality[docs[0]] == want for docs in ranked.values()]
        assert e["modality_accuracy@1"] == round(sum(top1) / len(top1), 4)
    assert (out / "results.md").is_file() and (out / "modality_accuracy.png").is_file()
    assert "colour_task0" in stdout and list((tmp_path / "cache").rglob("*.npy"))


def test_eval_mbeir_errors_are_one_line(tmp_path, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "eval", "mbeir", "--root", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 1 and err.strip().splitlines()[-1].startswith("error: ") and "not an M-BEIR root" in err and "Traceback" not in err
    code, _, err = run(monkeypatch, capsys, "eval", "mbeir", "--root", str(tmp_path), "--pool", "all",
                       "--out", str(tmp_path / "o"))
    assert code == 1 and "pool must be one of" in err


def test_eval_beir_and_mmeb(tmp_path, monkeypatch, capsys):
    beir = tmp_path / "tiny"
    (beir / "qrels").mkdir(parents=True)
    docs = ["Cats are small furry pets.", "The stock market fell today.", "Rain is expected tomorrow.",
            "A bicycle has two wheels.", "Paris is the capital of France."]
    (beir / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n"
                                               for i, t in enumerate(docs)))
    qs = ["which pet purrs", "weather forecast", "French capital city"]
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{i}", "text": t}) + "\n" for i, t in enumerate(qs)))
    (beir / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td2\t1\nq2\td4\t1\n")
    out = tmp_path / "beir-out"
    code, _, err = run(monkeypatch, capsys, "eval", "beir", "--root", str(beir), "--out", str(out), "--no-cache")
    assert code == 0, err
    (row,) = json.loads((out / "results.json").read_text())["tasks"]
    run_ = ir_measures.read_trec_run(str(out / "runs/tiny.trec"))
    qrels = [ir_measures.Qrel(f"q{i}", f"d{d}", 1) for i, d in enumerate((0, 2, 4))]
    assert row["ndcg@10"] == pytest.approx(ir_measures.calc_aggregate([nDCG @ 10], qrels, run_)[nDCG @ 10], abs=1e-4)
    assert row["ndcg@10"] > 0.8  # MiniLM gets these easy ones
    mmeb = tmp_path / "mmeb"
    mmeb.mkdir()
    (mmeb / "N24News.jsonl").write_text(json.dumps(
        {"qry_inst": "Classify the news headline.", "qry_text": "Team wins the championship final",
         "qry_img_path": "", "tgt_inst": "", "tgt_text": ["sports", "politics", "weather"], "tgt_img_path": []}) + "\n")
    code, _, err = run(monkeypatch, capsys, "eval", "mmeb", "--root", str(mmeb), "--out", str(tmp_path / "mm"))
    assert code == 0, err
    res = json.loads((tmp_path / "mm/results.json").read_text())
    assert res["datasets"][0]["meta_task"] == "classification" and res["overall"] in (0.0, 1.0)

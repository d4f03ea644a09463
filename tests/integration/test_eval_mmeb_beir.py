"""MMEB and BEIR runners: exact values on hand-checkable data, and agreement with ir-measures on the runs."""

from __future__ import annotations

import json

import ir_measures
import pytest
from _eval_helpers import PALETTE, ColourEncoder
from ir_measures import RR, Success, nDCG
from ir_measures import R as Rec
from PIL import Image

from omniret.errors import DataError
from omniret.eval.beir_runner import evaluate_beir
from omniret.eval.mmeb_runner import evaluate_mmeb


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def mmeb_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmeb")
    for c, rgb in PALETTE.items():
        Image.new("RGB", (8, 8), rgb).save(root / f"{c}.png")
    # v1 classification rows: instruction inside qry_text, label candidates, target first
    _jsonl(root / "ImageNet-1K.jsonl", [
        {"qry_text": "<|image_1|>\nRepresent the given image for classification", "qry_img_path": "red.png",
         "tgt_text": ["red", "green", "blue"], "tgt_img_path": ["", "", ""]},
        {"qry_text": "<|image_1|>\nRepresent the given image for classification", "qry_img_path": "blue.png",
         "tgt_text": ["blue", "red", "green"], "tgt_img_path": ["", "", ""]},
        {"qry_text": "<|image_1|>\nRepresent the given image for classification", "qry_img_path": "red.png",
         "tgt_text": ["purple", "red"], "tgt_img_path": ["", ""]},  # the listed target is wrong: a miss
    ])
    # v2 retrieval rows (text -> image) with separate instructions
    _jsonl(root / "VisualNews_t2i.jsonl", [
        {"qry_inst": "Find the image of this news.", "qry_text": "green", "qry_img_path": "", "tgt_inst": "",
         "tgt_text": ["", ""], "tgt_img_path": ["green.png", "yellow.png"]},
    ])
    _jsonl(root / "RefCOCO.jsonl", [
        {"qry_inst": "Select the region.", "qry_text": "yellow", "qry_img_path": "", "tgt_inst": "",
         "tgt_text": [""], "tgt_img_path": ["red.png", "yellow.png"]},  # yellow is second: a miss
    ])
    return root


def test_mmeb_exact_values_and_aggregates(mmeb_root, tmp_path):
    res = evaluate_mmeb(mmeb_root, ColourEncoder(), out=tmp_path)
    per = {d["name"]: d for d in res["datasets"]}
    assert per["ImageNet-1K"]["hit@1"] == pytest.approx(2 / 3, abs=1e-4)
    assert per["ImageNet-1K"]["meta_task"] == "classification" and per["ImageNet-1K"]["split"] == "IND"
    assert per["VisualNews_t2i"]["hit@1"] == 1.0 and per["RefCOCO"]["hit@1"] == 0.0
    assert per["RefCOCO"]["split"] == "OOD"
    assert res["meta_tasks"] == {"classification": 0.6667, "grounding": 0.0, "retrieval": 1.0}
    assert res["ind"] == pytest.approx((0.6667 + 1.0) / 2, abs=1e-4) and res["ood"] == 0.0
    assert res["overall"] == pytest.approx((0.6667 + 1.0 + 0.0) / 3, abs=1e-4)
    # the written run re-scores to the same hit@1 with an independent library
    for name, d in per.items():
        run = ir_measures.read_trec_run(str(tmp_path / "runs" / f"{name}.trec"))
        qrels = {f"{name}:{i}": {"c0": 1} for i in range(d["n_queries"])}
        got = ir_measures.calc_aggregate([Success @ 1], qrels, run)[Success @ 1]
        assert got == pytest.approx(d["hit@1"], abs=1e-4)


def test_mmeb_missing_image(mmeb_root, tmp_path):
    _jsonl(tmp_path / "NIGHTS.jsonl", [
        {"qry_inst": "", "qry_text": "", "qry_img_path": "nope.png", "tgt_inst": "", "tgt_text": [""],
         "tgt_img_path": ["red.png"]},
        {"qry_inst": "", "qry_text": "", "qry_img_path": "red.png", "tgt_inst": "", "tgt_text": [""],
         "tgt_img_path": ["red.png", "blue.png"]},
    ])
    with pytest.raises(DataError, match="nope.png"):
        evaluate_mmeb(tmp_path, ColourEncoder(), image_root=mmeb_root)
    res = evaluate_mmeb(tmp_path, ColourEncoder(), image_root=mmeb_root, skip_missing_images=True)
    assert res["skipped_rows_missing_image"] == 1 and res["datasets"][0]["n_queries"] == 1


@pytest.fixture(scope="module")
def beir_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("beir")
    docs = {"d1": "red", "d2": "red green", "d3": "green", "d4": "blue", "d5": "yellow blue", "d6": "yellow"}
    _jsonl(root / "corpus.jsonl", [{"_id": k, "title": "", "text": v} for k, v in docs.items()])
    queries = {"q1": "red", "q2": "green", "q3": "blue", "q4": "yellow yellow blue"}
    _jsonl(root / "queries.jsonl", [{"_id": k, "text": v} for k, v in queries.items()])
    (root / "qrels").mkdir()
    (root / "qrels/test.tsv").write_text(
        "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t1\nq2\td2\t2\nq3\td5\t1\nq4\td6\t1\nq4\td5\t1\n"
    )
    return root


def test_beir_agrees_with_ir_measures(beir_root, tmp_path):
    res = evaluate_beir(beir_root, ColourEncoder(), out=tmp_path)
    (row,) = res["tasks"]
    assert row["n_queries"] == 4 and row["n_docs"] == 6
    lines = (beir_root / "qrels/test.tsv").read_text().splitlines()[1:]
    qrels = [ir_measures.Qrel(q, d, int(r)) for q, d, r in (ln.split("\t") for ln in lines)]
    run = ir_measures.read_trec_run(str(tmp_path / "runs" / f"{beir_root.name}.trec"))
    ref = ir_measures.calc_aggregate([nDCG @ 10, Rec @ 100, RR @ 10], qrels, run)
    assert row["ndcg@10"] == pytest.approx(ref[nDCG @ 10], abs=1e-4)
    assert row["recall@100"] == pytest.approx(ref[Rec @ 100], abs=1e-4) == 1.0
    assert row["mrr@10"] == pytest.approx(ref[RR @ 10], abs=1e-4)
    # by hand: q1 ranks d1 (red) then d2; q2 ranks d3 then d2 (grade 2 second); q3: d4 first (irrelevant)
    assert row["mrr@10"] == pytest.approx((1 + 1 + 0.5 + 1) / 4, abs=1e-4)

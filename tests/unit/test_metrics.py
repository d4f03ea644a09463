"""Metrics: hand-computed cases, then agreement with ir-measures and pytrec_eval on the same random run."""

from __future__ import annotations

import math

import ir_measures
import numpy as np
import pytest
import pytrec_eval
from ir_measures import RR, Success, nDCG
from ir_measures import R as Rec

from omniret.eval.metrics import (
    hit_at_1_first_is_target,
    hit_at_k,
    mean_hit_at_k,
    mean_metric,
    modality_accuracy_at_k,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
)


def test_hit_at_k_is_uniir_recall():
    assert hit_at_k({"a", "b"}, ["x", "b", "a"], 1) == 0.0
    assert hit_at_k({"a", "b"}, ["x", "b", "a"], 2) == 1.0  # one positive is enough: a hit, not 1/2
    assert hit_at_k(set(), ["x"], 5) == 0.0
    assert hit_at_k({"a": 0, "b": 1}, ["a"], 1) == 0.0  # grade 0 is not relevant


def test_recall_mrr_ndcg_by_hand():
    qrel = {"a": 3, "b": 2, "c": 1}
    ranked = ["b", "x", "a", "y", "c"]
    assert recall_at_k(qrel, ranked, 3) == pytest.approx(2 / 3)
    assert mrr_at_k(qrel, ["x", "y", "c"], 10) == pytest.approx(1 / 3)
    assert mrr_at_k(qrel, ["x", "y", "c"], 2) == 0.0
    dcg = 2 / 1 + 3 / 2  # b at rank 1, a at rank 3
    idcg = 3 / 1 + 2 / math.log2(3) + 1 / 2
    assert ndcg_at_k(qrel, ranked, 3) == pytest.approx(dcg / idcg)
    assert ndcg_at_k({"a": 1}, ["a"], 10) == 1.0
    assert ndcg_at_k({}, ["a"], 10) == 0.0


def test_modality_accuracy():
    mods = ["image", "text", "image", "image,text"]
    assert modality_accuracy_at_k(mods, "image", 1) == 1.0
    assert modality_accuracy_at_k(mods, "image", 4) == 0.5
    assert modality_accuracy_at_k(mods[:2], "image", 10) == 0.5  # divides by what came back
    assert modality_accuracy_at_k([], "image", 5) == 0.0


def test_mmeb_hit_at_1_ties_count_against_target():
    assert hit_at_1_first_is_target(np.array([0.9, 0.1, 0.3])) == 1.0
    assert hit_at_1_first_is_target(np.array([0.3, 0.9])) == 0.0
    assert hit_at_1_first_is_target(np.array([0.5, 0.5])) == 0.0
    with pytest.raises(ValueError):
        hit_at_1_first_is_target(np.array([]))


def test_mean_hit_counts_missing_queries_as_zero():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1}}
    assert mean_hit_at_k({"q1": ["a"]}, qrels, 1) == 0.5


def test_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        hit_at_k({"a"}, ["a"], 0)
    with pytest.raises(ValueError, match="unknown metric"):
        mean_metric("map", {}, {}, 10)


@pytest.fixture(scope="module")
def random_run():
    rng = np.random.default_rng(7)
    run, qrels = {}, {}
    for q in range(40):
        scores = rng.permutation(150) / 150.0  # distinct scores: no tie-breaking ambiguity
        run[f"q{q}"] = {f"d{d}": float(s) for d, s in enumerate(scores)}
        rel = rng.choice(150, size=int(rng.integers(1, 6)), replace=False)
        qrels[f"q{q}"] = {f"d{d}": int(rng.integers(1, 4)) for d in rel}
    ranked = {q: sorted(r, key=lambda d: -r[d]) for q, r in run.items()}
    return run, qrels, ranked


def test_agrees_with_ir_measures(random_run):
    run, qrels, ranked = random_run
    ref = ir_measures.calc_aggregate([nDCG @ 10, Rec @ 100, RR @ 10, Success @ 1, Success @ 5], qrels, run)
    assert mean_metric("ndcg", ranked, qrels, 10) == pytest.approx(ref[nDCG @ 10], abs=1e-9)
    assert mean_metric("recall", ranked, qrels, 100) == pytest.approx(ref[Rec @ 100], abs=1e-9)
    assert mean_metric("mrr", ranked, qrels, 10) == pytest.approx(ref[RR @ 10], abs=1e-9)
    assert mean_hit_at_k(ranked, qrels, 1) == pytest.approx(ref[Success @ 1], abs=1e-9)
    assert mean_hit_at_k(ranked, qrels, 5) == pytest.approx(ref[Success @ 5], abs=1e-9)


def test_agrees_with_pytrec_eval_per_query(random_run):
    run, qrels, ranked = random_run
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100", "success.1"})
    per_q = ev.evaluate(run)
    for q in qrels:
        assert ndcg_at_k(qrels[q], ranked[q], 10) == pytest.approx(per_q[q]["ndcg_cut_10"], abs=1e-9)
        assert recall_at_k(qrels[q], ranked[q], 100) == pytest.approx(per_q[q]["recall_100"], abs=1e-9)
        assert hit_at_k(qrels[q], ranked[q], 1) == per_q[q]["success_1"]


def test_mmeb_hit_at_1_agrees_with_success_at_1():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(50, 20))
    scores[::3, 0] += 2.0  # make some targets win
    run = {f"q{i}": {f"c{j}": float(s) for j, s in enumerate(row)} for i, row in enumerate(scores)}
    qrels = {f"q{i}": {"c0": 1} for i in range(50)}
    ref = ir_measures.calc_aggregate([Success @ 1], qrels, run)[Success @ 1]
    mine = float(np.mean([hit_at_1_first_is_target(r) for r in scores]))
    assert mine == pytest.approx(ref) and 0 < mine < 1

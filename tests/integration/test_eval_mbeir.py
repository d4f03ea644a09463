"""M-BEIR runner end to end on a hand-checkable colour benchmark: exact hit@k, modality accuracy, TREC
runs that re-score to the same numbers, embedding cache reuse, missing-image handling."""

from __future__ import annotations

import json
import shutil

import ir_measures
import pytest
from _eval_helpers import ColourEncoder, build_colour_mbeir
from ir_measures import Success

from omniret.data.qrels import read_qrels
from omniret.errors import DataError
from omniret.eval.metrics import mean_hit_at_k
from omniret.eval.report import write_mbeir_report
from omniret.eval.runner import MBeirOptions, evaluate_mbeir
from omniret.eval.trec import read_trec


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_colour_mbeir(tmp_path_factory.mktemp("mbeir"))


@pytest.fixture(scope="module")
def both(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    opts = MBeirOptions(pools=("local", "global"), cache_dir=out / "cache")
    res = write_mbeir_report(out, evaluate_mbeir(root, ColourEncoder(), opts, out=out))
    return out, res


def _entry(res, name, pool):
    (e,) = [e for e in res["tasks"] if e["name"] == name and e["pool"] == pool]
    return e


def test_local_pool_exact_values(both):
    _, res = both
    e = _entry(res, "colour_task0", "local")
    # red/green/blue hit at rank 1; "purple" ties over the 4 images and its yellow positive is 4th
    assert (e["recall@1"], e["recall@5"], e["recall@10"]) == (0.75, 1.0, 1.0)
    assert e["n_queries"] == 4 and e["task_id"] == 0 and e["headline"] == "recall@5"
    assert e["modality_accuracy@1"] == 1.0 and e["pool_size"] == 4
    e3 = _entry(res, "colour_task3", "local")
    assert (e3["recall@1"], e3["n_queries"], e3["modality_accuracy@5"]) == (1.0, 3, 1.0)


def test_global_pool_modality_accuracy_with_instructions(both):
    _, res = both
    e = _entry(res, "colour_task0", "global")
    # instructed queries put the 4 images first: top-5 holds 4 images + 1 caption, top-8 4 + 4
    assert (e["modality_accuracy@1"], e["modality_accuracy@5"], e["modality_accuracy@10"]) == (1.0, 0.8, 0.5)
    assert (e["recall@1"], e["recall@5"]) == (0.75, 1.0)
    assert e["pool_size"] == 8
    assert res["average"]["global"]["n_tasks"] == 2


def test_without_instructions_modality_bias_shows(root, tmp_path):
    opts = MBeirOptions(pools=("global",), instruction_mode="none", cache_dir=None, tasks=["colour_task0"])
    res = evaluate_mbeir(root, ColourEncoder(), opts)
    (e,) = res["tasks"]
    # text queries now rank the matching caption first: no hit at 1 and no image at 1
    assert (e["recall@1"], e["modality_accuracy@1"]) == (0.0, 0.0)
    assert (e["recall@5"], e["recall@10"]) == (0.75, 1.0)


def test_trec_runs_rescore_to_results(both, root):
    out, res = both
    for e in res["tasks"]:
        run = read_trec(out / e["run"])
        qrels = read_qrels(root / f"qrels/test/mbeir_{e['name']}_test_qrels.txt").rel
        ranked = {q: [d for d, _ in r] for q, r in run.items()}
        for k in (1, 5, 10):
            assert round(mean_hit_at_k(ranked, qrels, k), 4) == e[f"recall@{k}"]
    # and an independent library agrees where scores are untied (the instructed global task3 run)
    e = _entry(res, "colour_task3", "global")
    qrels = read_qrels(root / "qrels/test/mbeir_colour_task3_test_qrels.txt").rel
    got = ir_measures.calc_aggregate([Success @ 1, Success @ 5], qrels, ir_measures.read_trec_run(str(out / e["run"])))
    assert got[Success @ 1] == pytest.approx(e["recall@1"]) and got[Success @ 5] == pytest.approx(e["recall@5"])


def test_trec_format(both):
    out, _ = both
    line = (out / "runs/colour_task0.local.trec").read_text().splitlines()[0].split()
    assert line[0] == "7:1" and line[1] == "Q0" and line[2] == "7:1" and line[3] == "1" and line[5] == "omniret"


def test_report_files(both):
    out, res = both
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"] == res["tasks"]
    assert {"recall.png", "modality_accuracy.png"} <= set(saved["charts"])
    assert (out / "recall.png").stat().st_size > 1000
    assert "| colour_task0 | 4 | 75.0 | 100.0 | 100.0 |" in (out / "results.md").read_text()


def test_cache_is_reused(root, tmp_path):
    class Counting(ColourEncoder):
        docs = 0

        def encode_documents(self, items, **kw):
            Counting.docs += len(items)
            return super().encode_documents(items, **kw)

    opts = MBeirOptions(pools=("global",), cache_dir=tmp_path)
    first = evaluate_mbeir(root, Counting(), opts)
    assert Counting.docs == 8
    second = evaluate_mbeir(root, Counting(), opts)
    assert Counting.docs == 8 and second["tasks"] == first["tasks"]


def test_random_instructions_are_seeded(root):
    a = evaluate_mbeir(root, ColourEncoder(), MBeirOptions(instruction_mode="random", seed=3, cache_dir=None))
    b = evaluate_mbeir(root, ColourEncoder(), MBeirOptions(instruction_mode="random", seed=3, cache_dir=None))
    assert a["tasks"] == b["tasks"]


def test_missing_image_error_and_skip(root, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / "images/green.png").unlink()
    with pytest.raises(DataError, match="green.png"):
        evaluate_mbeir(broken, ColourEncoder(), MBeirOptions(cache_dir=None))
    res = evaluate_mbeir(broken, ColourEncoder(), MBeirOptions(cache_dir=None, skip_missing_images=True))
    assert res["skipped"]["candidates_missing_image"] == 1 and res["skipped"]["queries_missing_image"] == 1
    # the green text query still counts, its positive is gone: 2 of 4 hit at 1
    assert _entry(res, "colour_task0", "local")["recall@1"] == 0.5


def test_bad_options(root):
    with pytest.raises(DataError, match="pool"):
        evaluate_mbeir(root, ColourEncoder(), MBeirOptions(pools=("nope",)))
    with pytest.raises(DataError, match="unknown task"):
        evaluate_mbeir(root, ColourEncoder(), MBeirOptions(tasks=["x_task9"]))

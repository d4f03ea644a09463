"""Leave-one-domain-out: domains are built in the M-BEIR layout with concept-level splits, each fold trains
without its domain (a tiny omni-mini, a few steps), and is scored on it beside the baseline."""

from __future__ import annotations

import json

import pytest
from _train_data import build_shape_domains, make_tiny_bert

from omniret.data.builders import domains
from omniret.errors import DataError
from omniret.training.config import config_from_dict
from omniret.training.lodo import lodo_config, run_lodo


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    return root, build_shape_domains(root)


def test_domains_share_concept_splits_and_the_mbeir_layout(built):
    root, manifests = built
    assert manifests["squares"]["test"] == manifests["circles"]["test"] > 0
    tests = {}
    for n in ("squares", "circles"):
        rows = [json.loads(x) for x in (root / n / "query" / "test" / f"mbeir_{n}_task0_test.jsonl").read_text().splitlines()]
        tests[n] = {r["query_txt"].split()[1] for r in rows}  # the colour
        assert (root / n / "cand_pool" / "global" / "mbeir_union_test_cand_pool.jsonl").is_file()
        tsv = (root / n / "instructions" / "query_instructions.tsv").read_text().splitlines()
        assert len(tsv) == 3 and all(len(line.split("\t")) == 8 for line in tsv[1:])  # 4 prompts per task
    assert tests["squares"] == tests["circles"]  # a test concept is test in every style
    with pytest.raises(DataError, match="unknown domain"):
        domains.build_domain("no-such-domain", root / "x")


def test_each_fold_trains_without_its_domain_and_is_scored(built, tmp_path):
    root, manifests = built
    bert = make_tiny_bert(tmp_path / "bert", dropout=0.0)
    raw = {
        "name": "lodo-test", "output_dir": str(tmp_path / "unused"), "seed": 0,
        "model": {"family": "omni-mini", "options": {"text_model": str(bert), "max_length": 32, "grid": 1},
                  "lora": {"r": 4, "alpha": 8, "target_modules": ["query", "value"]}, "trainable": ["projector.*"]},
        "data": {"batching": "homogeneous",
                 "sources": [{"kind": "mbeir", "path": str(root / "squares"), "split": "train"}]},
        "optim": {"lr": 1e-3, "max_steps": 2, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2,
                  "log_every": 1, "gradcache_chunk": 4},
        "stages": [{"name": "rand", "init": "base"}],
    }
    base = config_from_dict(raw)
    roots = {"squares": root / "squares", "circles": root / "circles"}
    fold = lodo_config(base, "squares", roots, tmp_path / "out", max_steps=None)
    assert [s.path for s in fold.data.sources] == [str(root / "circles")]
    with pytest.raises(DataError, match="two domains"):
        lodo_config(base, "squares", {"squares": roots["squares"]}, tmp_path / "out", None)

    res = run_lodo(base, roots, tmp_path / "out", log=lambda _: None)
    assert [f["domain"] for f in res["folds"]] == ["squares", "circles"]
    for f in res["folds"]:
        for who in ("trained", "baseline"):
            assert set(f[who]) == {"R@10 t2i", "R@10 i2t", "MA@1 t2i", "MA@1 i2t"}
            # each metric is a fraction of the domain's test queries (one per test concept and direction)
            n = manifests[f["domain"]]["test"]
            assert all(abs(v * n - round(v * n)) < 1e-3 for v in f[who].values()), (n, f[who])
        # 6 test concepts, a local pool of 6: every positive is within the top 10 whatever the model
        assert f["trained"]["R@10 t2i"] == f["baseline"]["R@10 i2t"] == 1.0
    md = (tmp_path / "out" / "lodo.md").read_text().splitlines()
    assert len(md) == 2 + 4 and md[2].startswith("| squares | trained")
    assert json.loads((tmp_path / "out" / "lodo.json").read_text()) == res

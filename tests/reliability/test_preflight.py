"""Training and evaluation check everything before any expensive step: configs (device, model options),
data paths and every task's query/qrels/pool file; a failed start leaves the run folder reusable; a fixed
temperature is never clamped; positives missing from a pool are an error unless explicitly counted."""

from __future__ import annotations

import sys

import pytest
from _helpers import ROOT, HashEncoder

from omniret.errors import DataError
from omniret.eval.runner import MBeirOptions, evaluate_mbeir
from omniret.losses.contrastive import InfoNCE
from omniret.training.config import ConfigError, config_from_dict
from omniret.training.stages import build_encoder, check_run_dir, run_training

sys.path.insert(0, str(ROOT / "tests" / "integration"))
from _eval_helpers import build_colour_mbeir  # noqa: E402


def _config(tmp_path, **over):
    pairs = tmp_path / "pairs"
    (pairs / "qrels").mkdir(parents=True, exist_ok=True)
    raw = {"output_dir": str(tmp_path / "run"), "model": {"family": "omni-mini"},
           "data": {"sources": [{"kind": "pairs", "path": str(pairs)}]}}
    raw.update(over)
    return raw


def test_device_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="device must be cpu, cuda, cuda:N or mps, got 'tpu'"):
        config_from_dict(_config(tmp_path, device="tpu"), tmp_path)


@pytest.mark.parametrize("key,value,message", [
    ("path", "missing-dir", "data.sources\\[0\\].path: .*missing-dir: no such file or folder"),
    ("pool", "nope.jsonl", "data.sources\\[0\\].pool: .*nope.jsonl: no such file or folder"),
    ("queries", "q.jsonl", "data.sources\\[0\\].queries: .*q.jsonl: no such file or folder"),
])
def test_missing_data_fails_before_the_run_folder_is_stamped(tmp_path, key, value, message):
    raw = _config(tmp_path)
    raw["data"]["sources"][0][key] = str(tmp_path / value)
    cfg = config_from_dict(raw, tmp_path)
    with pytest.raises(ConfigError, match=message):
        run_training(cfg, log=lambda s: None)
    assert not (tmp_path / "run").exists()


def test_model_option_typo_is_a_config_error(tmp_path):
    cfg = config_from_dict(_config(tmp_path, model={"family": "omni-mini", "options": {"gird": 2}}), tmp_path)
    with pytest.raises(ConfigError, match="model.options \\['gird'\\] for family 'omni-mini'.*gird"):
        build_encoder(cfg, cfg.resolved_stages()[0], None)
    with pytest.raises(ConfigError, match="model.family: unknown family 'nope'"):
        config_from_dict(_config(tmp_path, model={"family": "nope"}), tmp_path).check_inputs()


def test_failed_start_leaves_the_folder_reusable(tmp_path):
    first = config_from_dict(_config(tmp_path, seed=1), tmp_path)
    check_run_dir(first, tmp_path / "run")  # stamped, then the start "failed"
    second = config_from_dict(_config(tmp_path, seed=2), tmp_path)
    check_run_dir(second, tmp_path / "run")  # nothing trained yet: the folder is reused
    assert (tmp_path / "run" / "config_digest").read_text().strip() == second.digest()
    (tmp_path / "run" / "main").mkdir()
    (tmp_path / "run" / "main" / "step-00000004").mkdir()  # now a run has produced output
    with pytest.raises(Exception, match="holds a run with a different config"):
        check_run_dir(first, tmp_path / "run")


def test_fixed_temperature_is_not_clamped():
    assert float(InfoNCE(temperature=2.0).temperature) == pytest.approx(2.0)
    assert float(InfoNCE(temperature=0.0005).temperature) == pytest.approx(0.0005)
    learnable = InfoNCE(temperature=2.0, learnable_temperature=True)
    assert float(learnable.temperature.detach()) == pytest.approx(1.0)  # the learnable range is [min, 1]


class CountingEncoder(HashEncoder):
    calls = 0

    def prepare(self, items, *, is_query):
        CountingEncoder.calls += 1
        return super().prepare(items, is_query=is_query)


@pytest.mark.parametrize("breakage,message", [
    (lambda r: (r / "qrels/test/mbeir_colour_task3_test_qrels.txt").unlink(), "task3_test_qrels.txt: no such qrels"),
    (lambda r: (r / "query/test/mbeir_colour_task3_test.jsonl").write_text(""), "task3_test.jsonl: no queries"),
    (lambda r: (r / "cand_pool/local/mbeir_colour_task3_cand_pool.jsonl").unlink(), "colour_task3: no local pool"),
    (lambda r: (r / "qrels/test/mbeir_colour_task3_test_qrels.txt").write_text("7:101 0 7:11 1 3\n"),
     "query '7:102' from mbeir_colour_task3_test.jsonl has no qrels line"),
    (lambda r: (r / "instructions/query_instructions.tsv").unlink(), "no instructions file"),
    # the last task's pool is read (and checked) before the first task is encoded
    (lambda r: (r / "cand_pool/local/mbeir_colour_task3_cand_pool.jsonl").write_text("{oops\n"),
     "task3_cand_pool.jsonl:1: invalid JSON"),
    (lambda r: (r / "cand_pool/local/mbeir_colour_task3_cand_pool.jsonl").write_text(""),
     "task3_cand_pool.jsonl: candidate pool is empty"),
    (lambda r: _drop_line(r / "cand_pool/local/mbeir_colour_task3_cand_pool.jsonl", '"7:12"'),
     "1 positive\\(s\\) of colour_task3 are not in this local pool \\(first: query '7:102' -> '7:12'\\)"),
    (lambda r: (r / "query/test/mbeir_colour_task3_test.jsonl").write_bytes(b"\xff\n"),
     "task3_test.jsonl:1: not UTF-8"),
])
def test_eval_checks_every_task_before_encoding(tmp_path, breakage, message):
    root = build_colour_mbeir(tmp_path / "mbeir")
    breakage(root)
    CountingEncoder.calls = 0
    with pytest.raises(DataError, match=message):
        evaluate_mbeir(root, CountingEncoder(), MBeirOptions(cache_dir=None))
    assert CountingEncoder.calls == 0


def _drop_line(path, needle):
    path.write_text("".join(line + "\n" for line in path.read_text().splitlines() if needle not in line))


def test_eval_global_pool_missing(tmp_path):
    root = build_colour_mbeir(tmp_path / "mbeir")
    (root / "cand_pool/global/mbeir_union_test_cand_pool.jsonl").unlink()
    with pytest.raises(DataError, match="global: expected one global pool file for split .test."):
        evaluate_mbeir(root, CountingEncoder(), MBeirOptions(cache_dir=None, pools=("local", "global")))


def test_positive_missing_from_pool(tmp_path):
    root = build_colour_mbeir(tmp_path / "mbeir")
    pool = root / "cand_pool/local/mbeir_colour_task0_cand_pool.jsonl"
    pool.write_text("".join(line + "\n" for line in pool.read_text().splitlines() if '"7:4"' not in line))
    with pytest.raises(DataError, match="1 positive\\(s\\) of colour_task0 are not in this local pool "
                                        "\\(first: query '7:4' -> '7:4'\\)"):
        evaluate_mbeir(root, CountingEncoder(), MBeirOptions(cache_dir=None))
    res = evaluate_mbeir(root, CountingEncoder(), MBeirOptions(cache_dir=None, allow_missing_positives=True))
    entry = next(e for e in res["tasks"] if e["name"] == "colour_task0")
    assert entry["missing_positives"] == 1

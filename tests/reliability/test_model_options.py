"""A training config's ``model.options`` are checked against the family's declared options before the run
folder is stamped or a model loads: a typo is a one-line error and a non-zero exit through ``omniret train``,
with nothing written; every option the shipped configs use (ReMatch's recipe fields included) is accepted."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from _helpers import ROOT

from _cli import run as run_cli
from omniret.encoders import FAMILIES, load_builtins
from omniret.encoders.mllm import MLLMRecipe
from omniret.encoders.options import accepted_options, declare_options, keyword_options
from omniret.training.config import load_config
from omniret.training.preflight import check_model_options

load_builtins()
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


def _write_config(tmp_path: Path, family: str, options: dict) -> Path:
    pairs = tmp_path / "pairs"
    (pairs / "qrels").mkdir(parents=True, exist_ok=True)
    raw = {"output_dir": str(tmp_path / "run"), "model": {"family": family, "options": options},
           "data": {"sources": [{"kind": "pairs", "path": str(pairs)}]}}
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(raw))  # JSON is YAML
    return path


def _refused(tmp_path, monkeypatch, capsys, family, options, pattern):
    code, _, err = run_cli(monkeypatch, capsys, "train", str(_write_config(tmp_path, family, options)))
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err
    assert not (tmp_path / "run").exists()  # no fingerprint, no tiny base, no checkpoint: the folder stays free


@pytest.mark.parametrize("family", FAMILIES.names())
def test_option_typo_refused_for_every_family(tmp_path, monkeypatch, capsys, family):
    _refused(tmp_path, monkeypatch, capsys, family, {"max_lenght": 64},
             f"model.options: unknown option\\(s\\) max_lenght for family '{family}'; allowed: .*max_length")


@pytest.mark.parametrize("family,options,pattern", [
    ("rematch", {"num_token": 8}, "unknown option\\(s\\) num_token for family 'rematch'; allowed: .*num_tokens"),
    ("rematch", {"init_tokens": True, "seeds": 1}, "unknown option\\(s\\) seeds .*init_tokens.*seed"),
    ("omni-mini", {"grid": 2, "gird": 2}, "unknown option\\(s\\) gird for family 'omni-mini'; allowed: "
                                          "bridge_prior, feature_cache_size, grid, max_length, name, precision, text_model$"),
    ("mmembed", {"latent_head": 8}, "unknown option\\(s\\) latent_head for family 'mmembed'.*latent_heads"),
    ("clip", {"device": "cuda"}, "model.options: device is set by the config's top-level 'device' key"),
])
def test_recipe_and_loader_options(tmp_path, monkeypatch, capsys, family, options, pattern):
    _refused(tmp_path, monkeypatch, capsys, family, options, pattern)


@pytest.mark.parametrize("config", SHIPPED, ids=[p.relative_to(ROOT / "configs").as_posix() for p in SHIPPED])
def test_shipped_configs_pass(config):
    """No false rejection: every option the shipped configs set is one their family accepts."""
    check_model_options(load_config(config))


def test_declared_sets_come_from_the_loaders_sources():
    """The early check uses the same sources as each loader's own check, so they cannot disagree."""
    recipe = {"num_tokens", "template", "pooling", "doc_instruction"}
    assert recipe <= {f for f in MLLMRecipe.__dataclass_fields__}
    rematch = accepted_options(FAMILIES.get("rematch"))
    assert recipe | {"init_tokens", "seed", "device"} <= rematch
    assert "init_tokens" not in accepted_options(FAMILIES.get("gme"))  # only ReMatch learns tokens
    from omniret.encoders.omni_mini import OmniMiniEncoder

    assert accepted_options(FAMILIES.get("omni-mini")) == keyword_options(OmniMiniEncoder.__init__)


def test_undeclared_loader_falls_back_to_its_signature():
    def explicit(path, *, alpha: int = 1, beta: str = "b"):
        return path

    def forwarding(path, **options):
        return path

    assert accepted_options(explicit) == {"alpha", "beta"}
    assert accepted_options(forwarding) is None  # it refuses unknown options itself, when built
    assert accepted_options(declare_options({"gamma"})(forwarding)) == {"gamma"}

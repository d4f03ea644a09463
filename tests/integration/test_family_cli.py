"""`omniret index / search / eval mbeir` end to end with tiny family models saved by omniret (path-only reload)."""

from __future__ import annotations

import json

import pytest
from _cli import run
from _eval_helpers import build_colour_mbeir
from PIL import Image

from omniret import load_encoder
from tiny_models import build_tiny_clip, build_tiny_qwen2vl, build_tiny_qwen25vl


@pytest.fixture(scope="module", params=["gme", "rematch", "clip"])
def saved_model(request, tmp_path_factory):
    """A tiny model of the family, loaded from an HF directory and re-saved by omniret (omniret.json)."""
    tmp = tmp_path_factory.mktemp(request.param)
    if request.param == "gme":
        enc = load_encoder(build_tiny_qwen2vl(tmp / "hf"), family="gme", min_pixels=28 * 28,
                           max_pixels=56 * 56, name="tiny-gme")
    elif request.param == "rematch":
        enc = load_encoder(build_tiny_qwen25vl(tmp / "hf"), family="rematch", init_tokens=True, num_tokens=4,
                           max_pixels=56 * 56, name="tiny-rematch")
    else:
        enc = load_encoder(build_tiny_clip(tmp / "hf"), family="clip", name="tiny-clip")
    return request.param, enc.save(tmp / "saved")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    Image.new("RGB", (40, 40), (210, 30, 30)).save(root / "red.png")
    Image.new("RGB", (40, 40), (30, 30, 210)).save(root / "blue.png")
    (root / "tea.txt").write_text("green tea is brewed from leaves")
    (root / "bikes.txt").write_text("a bicycle has two wheels")
    return root


def test_index_search_eval_with_family_model(saved_model, corpus, tmp_path, monkeypatch, capsys):
    family, model = saved_model
    ix = tmp_path / "ix"
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "--index", str(ix), "--model", str(model), "-q")
    assert code == 0, err
    assert "4" in out
    code, out, err = run(monkeypatch, capsys, "search", "a red square", "--index", str(ix), "-k", "3", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 3 and all(-1.0001 <= h["score"] <= 1.0001 for h in hits)
    code, out, err = run(monkeypatch, capsys, "search", "--image", str(corpus / "blue.png"), "--index", str(ix),
                         "-k", "1", "--json")
    assert code == 0, err
    top = json.loads(out)[0]
    if family != "rematch":  # symmetric recipes: an indexed image is its own nearest neighbour
        assert top["img_path"].endswith("blue.png") and top["score"] == pytest.approx(1.0, abs=1e-4)

    root = build_colour_mbeir(tmp_path / "mbeir")
    code, out, err = run(monkeypatch, capsys, "eval", "mbeir", "--root", str(root), "--model", str(model),
                         "--out", str(tmp_path / "res"), "--no-cache", "--pool", "both")
    assert code == 0, err
    res = json.loads((tmp_path / "res" / "results.json").read_text())
    assert res["model"]["name"] == f"tiny-{family}"
    assert {t["name"] for t in res["tasks"]} >= {"colour_task0", "colour_task3"}
    for t in res["tasks"]:
        assert 0.0 <= t["recall@5"] <= 1.0

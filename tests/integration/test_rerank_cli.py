"""`omniret search --rerank MODEL_DIR --rerank-k K --json` end to end: real default encoder + tiny random MLLM."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _cli import run
from PIL import Image

from omniret import Item
from omniret.rerank import hit_item, load_reranker
from omniret.types import Hit
from tiny_rerank import build_tiny_qwen2vl


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from omniret.retriever import Retriever

    root = tmp_path_factory.mktemp("rrcli")
    corpus = root / "corpus"
    corpus.mkdir()
    Image.new("RGB", (64, 64), (210, 30, 30)).save(corpus / "red.png")
    Image.new("RGB", (56, 84), (30, 30, 210)).save(corpus / "blue.png")
    (corpus / "tea.txt").write_text("Green tea is brewed from the leaves of Camellia sinensis.")
    (corpus / "bikes.md").write_text("Bicycles have two wheels and pedals.")
    (corpus / "car.txt").write_text("A red car parked near the river.")
    Retriever.create(root / "ix", "default").index_corpus(corpus)
    return root / "ix", build_tiny_qwen2vl(root / "mllm")


def test_search_rerank_json(setup, monkeypatch, capsys):
    ix, mllm = setup
    code, out, err = run(monkeypatch, capsys, "search", "--index", str(ix), "a red car", "-k", "3", "--json")
    assert code == 0, err
    plain = json.loads(out)
    code, out, err = run(monkeypatch, capsys, "search", "--index", str(ix), "a red car", "--rerank", str(mllm),
                         "--rerank-k", "4", "-k", "3", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 3 and all(h["rerank_score"] is not None for h in hits)
    rs = [h["rerank_score"] for h in hits]
    assert rs == sorted(rs, reverse=True)
    # independent recomputation: the plain top 4, scored by the same model through the library
    code, out, _ = run(monkeypatch, capsys, "search", "--index", str(ix), "a red car", "-k", "4", "--json")
    top4 = [Hit(**{k: v for k, v in h.items() if k != "rerank_score"}) for h in json.loads(out)]
    p = load_reranker(mllm).score(Item("a red car"), [hit_item(h) for h in top4])
    want = sorted(zip(p.tolist(), [h.id for h in top4], strict=True), key=lambda t: -t[0])[:3]
    assert [h["id"] for h in hits] == [i for _, i in want]
    np.testing.assert_allclose(rs, [s for s, _ in want], atol=1e-6)
    by_id = {h.id: h.score for h in top4}
    assert all(h["score"] == pytest.approx(by_id[h["id"]], abs=1e-6) for h in hits)
    assert plain[0]["rerank_score"] is None

    code, out, err = run(monkeypatch, capsys, "search", "--index", str(ix), "a red car", "--rerank", str(mllm),
                         "--rerank-k", "2", "--rerank-template", "7")
    assert code == 0, err
    assert "rerank" in out


def test_search_rerank_errors(setup, monkeypatch, capsys):
    ix, mllm = setup
    code, _, err = run(monkeypatch, capsys, "search", "--index", str(ix), "tea", "--rerank", str(mllm),
                       "--rerank-k", "9")
    assert code == 1 and "rerank k=9 but only 5 hit(s)" in err
    code, _, err = run(monkeypatch, capsys, "search", "--index", str(ix), "tea", "--rerank", str(mllm),
                       "--rerank-template", "nope")
    assert code == 1 and "no rerank template for task 'nope'" in err
    (mllm.parent / "empty").mkdir(exist_ok=True)
    code, _, err = run(monkeypatch, capsys, "search", "--index", str(ix), "tea", "--rerank", str(mllm.parent / "empty"))
    assert code == 1 and "error:" in err and "empty" in err

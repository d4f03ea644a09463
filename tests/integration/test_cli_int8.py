"""`omniret search --precision int8` on an index built in fp32: same encoder recipe, near-identical scores."""

from __future__ import annotations

import json

import pytest
from _cli import run


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from omniret import Item
    from omniret.retriever import Retriever

    ix = tmp_path_factory.mktemp("int8") / "ix"
    docs = ["Green tea is brewed from the leaves of Camellia sinensis.", "Bicycles have two wheels and pedals.",
            "A violin is a wooden string instrument.", "Espresso is coffee brewed under pressure."]
    Retriever.create(ix, "default").index_corpus([Item(t, id=f"d{i}") for i, t in enumerate(docs)])
    return ix


def test_int8_search_ranks_like_fp32(index, monkeypatch, capsys):
    runs = {}
    for precision in ("fp32", "int8"):
        code, out, err = run(monkeypatch, capsys, "search", "-i", str(index), "a cup of coffee", "--json",
                             "--precision", precision)
        assert code == 0, err
        runs[precision] = json.loads(out)
    assert [h["id"] for h in runs["int8"]] == [h["id"] for h in runs["fp32"]] and runs["fp32"][0]["id"] == "d3"
    for a, b in zip(runs["int8"], runs["fp32"], strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=0.03) and a["score"] != b["score"]


def test_int8_is_refused_where_it_does_not_exist(index, monkeypatch, capsys):
    code, _, err = run(monkeypatch, capsys, "search", "-i", str(index), "tea", "--precision", "int4")
    assert code == 1 and err.count("\n") == 1 and "precision 'int4'" in err

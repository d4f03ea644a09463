"""`omniret index/search/info --backend local|pgvector|qdrant` and `omniret export/import` end to end:
the same corpus gives the same top-k in every backend, and an index moves between backends unchanged."""

from __future__ import annotations

import json

import pytest
from _cli import run

from index_backends import pg_url  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cb") / "corpus"
    root.mkdir()
    for name, text in {
        "tea.txt": "Green tea is brewed from the leaves of Camellia sinensis.",
        "bikes.md": "Bicycles have two wheels and pedals.",
        "sea.txt": "The ocean covers most of the planet's surface.",
        "bread.txt": "Bread is baked from flour, water and yeast.",
    }.items():
        (root / name).write_text(text)
    return root


def _search(monkeypatch, capsys, where: str) -> list[tuple[str, float]]:
    code, out, err = run(monkeypatch, capsys, "search", "-i", where, "a cup of green tea", "-k", "4", "--json")
    assert code == 0, err
    return [(h["id"], h["score"]) for h in json.loads(out)]


def test_same_topk_in_every_backend_and_export_import(corpus, tmp_path, monkeypatch, capsys, pg_url):  # noqa: F811
    pytest.importorskip("qdrant_client")
    local, qdir = str(tmp_path / "local"), str(tmp_path / "qd")
    pg_base = pg_url.partition("#")[0]
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", local, "-q")
    assert code == 0 and "added 4" in out and "local" in out, err
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", qdir, "--backend", "qdrant", "-q")
    assert code == 0 and "added 4" in out and "[hnsw," in out and "qdrant" in out, err
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", "docs", "--backend", "pgvector", "--url", pg_base, "-q")
    assert code == 0 and "added 4" in out and "pgvector" in out, err
    pg_loc = f"{pg_base}#docs"
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", pg_loc, "-q")  # again: nothing new
    assert code == 0 and "added 0, updated 0, removed 0, unchanged 4" in out, err

    want = _search(monkeypatch, capsys, local)
    assert want[0][0] == "tea.txt"
    for where in (qdir, pg_loc):
        got = _search(monkeypatch, capsys, where)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)

    code, out, err = run(monkeypatch, capsys, "info", "-i", pg_loc, "--json")
    facts = json.loads(out)
    assert code == 0 and facts["backend"] == "pgvector" and facts["count"] == 4 and facts["kind"] == "hnsw"
    assert facts["modalities"] == {"text": 4}

    dump = tmp_path / "dump"
    code, out, err = run(monkeypatch, capsys, "export", str(dump), "-i", pg_loc, "--page-size", "3")
    assert code == 0 and "exported 4 documents" in out, err
    assert sorted(p.name for p in dump.iterdir()) == [
        "part-00000.jsonl", "part-00000.npy", "part-00001.jsonl", "part-00001.npy", "shards.json"]
    for args in (["-i", str(tmp_path / "back")], ["-i", str(tmp_path / "q2"), "--backend", "qdrant"],
                 ["-i", "docs2", "--backend", "pgvector", "--url", pg_base]):
        code, out, err = run(monkeypatch, capsys, "import", str(dump), *args)
        assert code == 0 and "imported 4 documents" in out, err
    for where in (str(tmp_path / "back"), str(tmp_path / "q2"), f"{pg_base}#docs2"):
        got = _search(monkeypatch, capsys, where)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)

    code, out, err = run(monkeypatch, capsys, "import", str(dump), "-i", str(tmp_path / "back"))
    assert code == 1 and "already exists" in err
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", "x", "--backend", "pgvector")
    assert code == 1 and "needs --url" in err
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", "x", "--backend", "milvus")
    assert code == 1 and "--backend must be one of local, pgvector, qdrant" in err


def test_cli_quantised_local_index(corpus, tmp_path, monkeypatch, capsys):
    ix = str(tmp_path / "q")
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", ix, "--kind", "hnsw", "--storage", "int8", "-q")
    assert code == 0 and "[hnsw," in out, err
    code, out, err = run(monkeypatch, capsys, "info", "-i", ix, "--json")
    assert json.loads(out)["hnsw"]["storage"] == "int8"
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", ix, "--storage", "fp16", "-q")
    assert code == 1 and "apply to a new index only" in err
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", ix, "--kind", "ivfpq", "-q")
    assert code == 0 and "[ivfpq," in out and "unchanged 4" in out, err
    assert _search(monkeypatch, capsys, ix)[0][0] == "tea.txt"
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "-i", ix, "--kind", "lsh")
    assert code == 1 and "--kind must be one of flat, hnsw, ivfpq" in err

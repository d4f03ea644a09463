"""`omniret index / search / info` end to end on a temp folder with the real default encoder (in-process)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from _cli import run


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "corpus"
    (root / "photos").mkdir(parents=True)
    Image.new("RGB", (64, 64), (210, 30, 30)).save(root / "photos" / "red.png")
    Image.new("RGB", (64, 64), (30, 30, 210)).save(root / "photos" / "blue.png")
    (root / "photos" / "blue.txt").write_text("a plain blue square")
    (root / "tea.txt").write_text("Green tea is brewed from the leaves of Camellia sinensis.")
    (root / "bikes.md").write_text("Bicycles have two wheels and pedals.")
    return root


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    """An index of the photos, built once through the library, for the error-case tests."""
    from omniret.retriever import Retriever

    ix = tmp_path_factory.mktemp("cli") / "ix"
    Retriever.create(ix, "default").index_corpus(corpus / "photos")
    return ix


def test_index_search_info(corpus, tmp_path, monkeypatch, capsys):
    ix = str(tmp_path / "ix")
    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "--index", ix, "-q")
    assert code == 0, err
    assert "added 4, updated 0, removed 0, unchanged 0; 4 documents in the index" in out
    assert "encoder omniret-bridge" in out  # the default

    code, out, err = run(monkeypatch, capsys, "index", str(corpus), "--index", ix, "--kind", "hnsw", "-q")
    assert code == 0 and "added 0, updated 0, removed 0, unchanged 4" in out and "[hnsw," in out

    code, out, err = run(monkeypatch, capsys, "search", "--index", ix, "green tea leaves", "-k", "2", "--json")
    assert code == 0, err
    hits = json.loads(out)
    assert len(hits) == 2 and hits[0]["id"] == "tea.txt" and hits[0]["modality"] == "text"
    assert set(hits[0]) >= {"id", "score", "modality", "txt", "img_path"} and hits[0]["score"] >= hits[1]["score"]

    img = str(corpus / "photos" / "red.png")
    code, out, err = run(monkeypatch, capsys, "search", "-i", ix, "--image", img, "--modality", "image", "--json")
    hits = json.loads(out)
    assert code == 0 and [h["id"] for h in hits] == ["photos/red.png"]
    # the default's documents carry a modality part of norm 1 that a query without instruction lacks: an
    # item against itself scores 1 / sqrt(2) (omniret.encoders.bridge)
    assert hits[0]["img_path"] == img and hits[0]["score"] == pytest.approx(2 ** -0.5, abs=1e-4)

    code, out, err = run(
        monkeypatch, capsys, "search", "-i", ix, "square", "--image", img, "--modality", "image",
        "--modality", "image,text", "--instruction", "Find a similar picture.",
    )
    assert code == 0 and "photos/red.png" in out and "photos/blue.png" in out and "tea.txt" not in out

    code, out, err = run(monkeypatch, capsys, "info", "--index", ix, "--json")
    facts = json.loads(out)
    assert code == 0 and facts["count"] == 4 and facts["kind"] == "hnsw" and facts["dim"] == 393
    assert facts["modalities"] == {"text": 2, "image": 1, "image,text": 1}
    code, out, err = run(monkeypatch, capsys, "info", "--index", ix)
    assert code == 0 and "omniret-bridge" in out and "recipe_hash" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["search", "--index", "{ix}"], "nothing to search for"),
        (["search", "x"], "Missing option '--index'"),
        (["search", "--index", "{ix}", "x", "-k", "0"], "Invalid value for '-k'"),
        (["search", "--index", "{ix}", "--image", "nope.png"], "--image nope.png: no such file"),
        (["search", "--index", "{ix}", "x", "--modality", "video"], "unknown modality filter"),
        (["info", "--index", "{missing}"], "not an omniret index"),
        (["index", "{missing}", "--index", "{ix}"], "no such folder or file"),
        (["index", "{corpus}", "--index", "{ix}", "--model", "nonexistent-model"], "unknown model 'nonexistent-model'"),
        (["nosuchcommand"], "No such command"),
    ],
)
def test_errors_are_one_line(corpus, built, tmp_path, monkeypatch, capsys, args, message):
    fill = {"ix": str(built), "missing": str(tmp_path / "missing"), "corpus": str(corpus)}
    code, out, err = run(monkeypatch, capsys, *[a.format(**fill) for a in args])
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], err

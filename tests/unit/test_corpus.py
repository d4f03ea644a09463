"""Corpus ingestion (folder rules, candidate JSONL errors) and incremental indexing with the real encoder."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from omniret.data.corpus import load_corpus, load_folder, load_jsonl
from omniret.errors import DataError, IndexMismatchError
from omniret.index import FlatIndex
from omniret.retriever import Retriever
from omniret.types import Item


@pytest.fixture(scope="session")
def encoder():
    from omniret import load_encoder

    return load_encoder("default")


def img(path, color=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 48), color).save(path)


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "corpus"
    img(root / "apple.png")
    img(root / "pets" / "cat.jpg", (90, 90, 90))
    write(root / "pets" / "cat.txt", "a grey cat on a sofa")
    write(root / "notes" / "coffee.md", "# Coffee\nBrewed from roasted beans.")
    write(root / "cars.txt", "Cars drive on roads.")
    write(root / "empty.txt", "   \n")
    write(root / ".hidden.txt", "never indexed")
    write(root / ".git" / "HEAD.txt", "never indexed")
    write(root / "data.csv", "not a document")
    return root


def test_folder_rules(folder):
    items = load_folder(folder)
    assert [it.id for it in items] == ["apple.png", "cars.txt", "notes/coffee.md", "pets/cat.jpg"]
    by_id = {it.id: it for it in items}
    assert by_id["apple.png"].modality == "image"
    assert by_id["cars.txt"].modality == "text" and by_id["cars.txt"].text == "Cars drive on roads."
    assert by_id["notes/coffee.md"].text == "# Coffee\nBrewed from roasted beans."
    cat = by_id["pets/cat.jpg"]
    assert cat.modality == "image,text" and cat.text == "a grey cat on a sofa"
    assert cat.images[0].path == str(folder.resolve() / "pets" / "cat.jpg")
    assert cat.metadata == {"source": str(folder.resolve()), "path": "pets/cat.jpg", "sidecar": "pets/cat.txt"}
    assert load_corpus(folder)[1] == str(folder.resolve())
    # exclude globs match the relative path or the name; an excluded sidecar no longer attaches
    kept = load_folder(folder, exclude=["notes/*", "cat.txt", "*.csv"])
    assert [(it.id, it.modality) for it in kept] == [("apple.png", "image"), ("cars.txt", "text"), ("pets/cat.jpg", "image")]


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        load_folder(tmp_path / "missing")
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(DataError, match=r"bad.txt: not UTF-8"):
        load_folder(tmp_path)
    with pytest.raises(DataError, match="no id"):
        load_corpus([Item("x")])


def test_jsonl_candidates(tmp_path):
    img(tmp_path / "imgs" / "a.png")
    rows = [
        {"did": "1:1", "txt": "a red square", "img_path": None, "modality": "text"},
        {"did": "1:2", "txt": None, "img_path": "imgs/a.png", "modality": "image"},
        {"did": "1:3", "txt": "caption", "img_path": "imgs/a.png", "modality": "image,text", "src_content": "{}"},
    ]
    path = tmp_path / "pool.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    items = load_jsonl(path)
    assert [(it.id, it.modality) for it in items] == [("1:1", "text"), ("1:2", "image"), ("1:3", "image,text")]
    assert items[1].images[0].path == str(tmp_path / "imgs" / "a.png")
    assert items[2].metadata == {"source": str(path), "line": 3, "src_content": "{}"}
    other = tmp_path / "elsewhere"
    img(other / "imgs" / "a.png")
    assert load_jsonl(path, image_root=other)[1].images[0].path == str(other / "imgs" / "a.png")


@pytest.mark.parametrize(
    "line,message",
    [
        ('{"did": "1", "txt": "x", "modality": "text"', "bad.jsonl:2: invalid JSON"),
        ('{"txt": "x", "modality": "text"}', "bad.jsonl:2: missing required field 'did'"),
        ('{"did": "1", "txt": "x"}', "bad.jsonl:2: missing required field 'modality'"),
        ('{"did": "1", "txt": "x", "img_path": null, "modality": "image"}', "modality is 'image' but the record lacks its image"),
        ('{"did": "1", "txt": "x", "img_path": "no.png", "modality": "image,text"}', "bad.jsonl:2: image not found"),
        ('{"did": "1", "txt": "x", "modality": "video"}', "bad.jsonl:2: modality must be one of"),
        ('{"did": "0", "txt": "dup", "modality": "text"}', "bad.jsonl:2: duplicate did '0'"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"did": "0", "txt": "fine", "img_path": null, "modality": "text"}\n' + line + "\n")
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_jsonl(path)


def _count_prepared(monkeypatch, encoder) -> list[str]:
    """Record the ids of every document the encoder prepares (a counter hook on the real encoder)."""
    seen: list[str] = []
    real = encoder.prepare

    def prepare(items, *, is_query):
        seen.extend(it.id for it in items)
        return real(items, is_query=is_query)

    monkeypatch.setattr(encoder, "prepare", prepare)
    return seen


def test_incremental_reindexing(folder, tmp_path, encoder, monkeypatch):
    seen = _count_prepared(monkeypatch, encoder)
    r = Retriever.create(tmp_path / "ix", encoder)
    rep = r.index_corpus(folder)
    assert (rep.added, rep.updated, rep.removed, rep.unchanged, rep.total) == (4, 0, 0, 0, 4)
    assert sorted(seen) == ["apple.png", "cars.txt", "notes/coffee.md", "pets/cat.jpg"]
    vec_before = FlatIndex.open(tmp_path / "ix").vectors.copy()

    seen.clear()
    rep = Retriever.open(tmp_path / "ix", encoder).index_corpus(folder)
    assert (rep.added, rep.updated, rep.removed, rep.unchanged) == (0, 0, 0, 4) and seen == []

    write(folder / "pets" / "cat.txt", "a black cat asleep")  # sidecar edit -> the image doc changes
    img(folder / "apple.png", (30, 200, 30))
    os.utime(folder / "apple.png", ns=(1, 1))  # a new mtime even on coarse clocks
    (folder / "cars.txt").unlink()
    write(folder / "new" / "tea.txt", "Green tea leaves.")
    r = Retriever.open(tmp_path / "ix")  # the encoder named in the manifest, loaded by name
    monkeypatch.setattr(r, "encoder", encoder)
    rep = r.index_corpus(folder)
    assert (rep.added, rep.updated, rep.removed, rep.unchanged, rep.total) == (1, 2, 1, 1, 4)
    assert sorted(seen) == ["apple.png", "new/tea.txt", "pets/cat.jpg"]

    ix = FlatIndex.open(tmp_path / "ix")
    assert sorted(ix.ids()) == ["apple.png", "new/tea.txt", "notes/coffee.md", "pets/cat.jpg"]
    assert ix.get("pets/cat.jpg").txt == "a black cat asleep"
    # the unchanged document kept its vector bit for bit
    old_row = ["apple.png", "cars.txt", "notes/coffee.md", "pets/cat.jpg"].index("notes/coffee.md")
    np.testing.assert_array_equal(ix.vectors[ix.ids().index("notes/coffee.md")], vec_before[old_row])
    hits = r.search("a black cat", k=1, modality="image,text")
    assert hits[0].id == "pets/cat.jpg"


def test_retriever_search_and_mismatch(folder, tmp_path, encoder):
    r = Retriever.create(None, encoder)
    r.index_corpus(folder)
    hits = r.search(["coffee beans", Item(image=str(folder / "apple.png"))], k=2)
    assert hits[0][0].id == "notes/coffee.md" and hits[1][0].id == "apple.png"
    assert all(h.modality == "text" for h in r.search("coffee", k=5, modality="text"))
    want = [h.id for h in r.search("coffee", k=5)]

    class Reverse:  # the reranker hook (omniret.rerank.Reranker): whatever it returns is what search returns
        def rerank(self, query, hits, k=None, task=None):
            assert query.text == "coffee" and k is None and task is None
            return hits[::-1]

    r.reranker = Reverse()
    assert [h.id for h in r.search("coffee", k=5)] == want[::-1]
    r.index.save(tmp_path / "ix")

    class Other(type(encoder)):
        def recipe(self):
            return {**super().recipe(), "templates": ["changed"]}

    other = Other.__new__(Other)
    other.__dict__.update(encoder.__dict__)
    with pytest.raises(IndexMismatchError, match=f"recipe {encoder.recipe_hash}"):
        Retriever.open(tmp_path / "ix", other)

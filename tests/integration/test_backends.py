"""One suite over every index backend (local faiss, pgvector on a real PostgreSQL, embedded Qdrant):
search equals brute force, modality filter, paging, incremental re-indexing, encoder mismatch, restart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from index_backends import BACKEND_NAMES, location, pg_url  # noqa: F401  (pg_url is a fixture)
from omniret.errors import DataError, IndexMismatchError, OmniretError
from omniret.index import Manifest, Record, create_index, find_backend, open_index
from omniret.types import MODALITIES, Item

DIM = 16


def unit(seed: int, n: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def recs(n: int, start: int = 0) -> list[Record]:
    return [
        Record(id=f"d{i}", modality=MODALITIES[i % 3], txt=f"doc {i}", metadata={"i": i}, fingerprint=f"f{i}")
        for i in range(start, start + n)
    ]


def brute(q: np.ndarray, v: np.ndarray, k: int, allowed: np.ndarray | None = None):
    s = (q.astype(np.float64) @ v.T.astype(np.float64)).astype(np.float32)
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.fixture(params=BACKEND_NAMES)
def loc(request, tmp_path) -> tuple[str, str]:
    """``(backend, a fresh location)``; the PostgreSQL server starts only for pgvector."""
    pg = request.getfixturevalue("pg_url") if request.param == "pgvector" else None
    if request.param == "qdrant":
        pytest.importorskip("qdrant_client", reason="the qdrant extra is not installed")
    return request.param, location(request.param, tmp_path, pg)


def manifest(kind: str | None = None, backend: str = "local", name: str = "enc-a") -> Manifest:
    from omniret.index.backends import backend_class

    return Manifest(encoder_name=name, recipe_hash="hash-a", dim=DIM, kind=kind or backend_class(backend).default_kind)


def filled(backend: str, where: str, n: int = 300):
    ix = create_index(where, manifest(backend=backend), backend)
    v = unit(0, n)
    ix.add(v, recs(n))
    return ix, v


def test_search_equals_brute_force_and_filter(loc):
    backend, where = loc
    ix, v = filled(backend, where)
    q = unit(1, 8)
    for modality, want in [(None, set(MODALITIES)), ("image", {"image"}), (["text", "image,text"], {"text", "image,text"})]:
        allowed = np.array([MODALITIES[i % 3] in want for i in range(len(v))])
        bs, br = brute(q, v, 7, allowed)
        hits = ix.search(q, k=7, modality=modality)
        assert [[h.id for h in hs] for hs in hits] == [[f"d{r}" for r in row] for row in br]
        np.testing.assert_allclose([[h.score for h in hs] for hs in hits], bs, rtol=0, atol=1e-5)
        assert all(h.modality in want for hs in hits for h in hs)
    top = ix.search(v[5], k=1)[0][0]
    assert top.id == "d5" and top.txt == "doc 5" and top.metadata == {"i": 5}
    assert len(ix.search(q, k=500, modality="image")[0]) == 100  # fewer only when fewer pass the filter
    ix.close()


def test_paging_get_remove_upsert_and_errors(loc):
    backend, where = loc
    ix, v = filled(backend, where, 50)
    pages = list(ix.iter_pages(page_size=7, vectors=True))
    assert [len(r) for r, _ in pages] == [7] * 7 + [1]
    got = {r.id: vec for rs, vs in pages for r, vec in zip(rs, vs, strict=True)}
    assert set(got) == {f"d{i}" for i in range(50)}
    np.testing.assert_allclose(np.stack([got[f"d{i}"] for i in range(50)]), v, atol=1e-7)
    assert len(ix) == 50 and ix.modality_counts() == {"text": 17, "image": 17, "image,text": 16}
    assert ix.get("d3").metadata == {"i": 3} and ix.get("nope") is None

    with pytest.raises(DataError, match="already in the index"):
        ix.add(v[:1], recs(1))
    with pytest.raises(IndexMismatchError, match="do not fit index dim"):
        ix.add(np.zeros((1, DIM + 1), np.float32), recs(1, 90))
    with pytest.raises(DataError, match="NaN"):
        ix.upsert(np.full((1, DIM), np.nan, np.float32), recs(1, 91))
    with pytest.raises(OmniretError, match="unknown modality filter"):
        ix.search(v[:1], modality="video")

    assert ix.remove(["d0", "d1", "zzz"]) == 2 and len(ix) == 48 and ix.get("d0") is None
    new = Record(id="d2", modality="image", img_paths=["a.png", "b.png"], fingerprint="g2",
                 parts=[{"image": "a.png"}, {"text": "between"}, {"image": "b.png"}])
    ix.upsert(-v[2:3], [new])
    assert len(ix) == 48 and ix.get("d2").img_paths == ["a.png", "b.png"] and ix.get("d2").parts == new.parts
    hit = ix.search(-v[2], k=1)[0][0]
    assert hit.id == "d2" and hit.img_paths == ["a.png", "b.png"] and hit.score == pytest.approx(1.0, abs=1e-5)
    ix.close()


def test_reopen_after_restart_and_encoder_check(loc):
    backend, where = loc
    ix, v = filled(backend, where, 120)
    q = unit(2, 4)
    before = [[(h.id, h.score) for h in hs] for hs in ix.search(q, k=5)]
    ix.save()
    ix.close()
    assert find_backend(where) == backend

    class Enc:
        name, recipe_hash = "enc-a", "hash-a"

    again = open_index(where, encoder=Enc())
    assert len(again) == 120 and again.manifest.count == 120 and again.info()["backend"] == backend
    after = [[(h.id, h.score) for h in hs] for hs in again.search(q, k=5)]
    assert [[i for i, _ in r] for r in after] == [[i for i, _ in r] for r in before]
    np.testing.assert_allclose([[s for _, s in r] for r in after], [[s for _, s in r] for r in before], atol=1e-6)
    again.close()

    Enc.recipe_hash = "other"
    with pytest.raises(IndexMismatchError, match="built with encoder 'enc-a'"):
        open_index(where, encoder=Enc())
    with pytest.raises(OmniretError, match="already exists"):
        create_index(where, manifest(backend=backend), backend)


def test_unsaved_changes_are_not_published(loc):
    """A crash before save(): pgvector rolls the transaction back; every backend's manifest stays old."""
    backend, where = loc
    ix, v = filled(backend, where, 30)
    ix.save()
    ix.upsert(unit(5, 3), recs(3, 100))
    ix.close()  # no save
    again = open_index(where)
    assert again.manifest.count == 30
    if backend in ("pgvector", "local"):  # transactional (pgvector) / generation-based (local)
        assert len(again) == 30 and again.get("d100") is None
    again.close()


@pytest.fixture(scope="module")
def encoder():
    from omniret.encoders import load_encoder

    return load_encoder("default")


def _write_corpus(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    texts = {
        "tea.txt": "Green tea is brewed from the leaves of Camellia sinensis.",
        "bikes.md": "Bicycles have two wheels and pedals.",
        "sea.txt": "The ocean covers most of the planet's surface.",
        "bread.txt": "Bread is baked from flour, water and yeast.",
        "moon.txt": "The moon orbits the earth once a month.",
    }
    for name, text in texts.items():
        (root / name).write_text(text)


def test_incremental_reindex_same_topk_across_backends(loc, encoder, tmp_path):
    """New, changed and deleted files; the top-k equals the local exact index built from the same corpus."""
    from omniret.retriever import Retriever

    backend, where = loc
    corpus = tmp_path / "corpus"
    _write_corpus(corpus)
    r = Retriever.create(where, encoder, backend=backend)
    rep = r.index_corpus(corpus)
    assert (rep.added, rep.total) == (5, 5)

    (corpus / "moon.txt").unlink()
    (corpus / "tea.txt").write_text("Black coffee is brewed from roasted beans.")
    (corpus / "cats.txt").write_text("Cats purr when they are content.")
    rep = r.index_corpus(corpus)
    assert (rep.added, rep.updated, rep.removed, rep.unchanged, rep.total) == (1, 1, 1, 3, 5)
    r.index.close()

    r = Retriever.open(where, encoder)
    assert r.index.backend == backend
    rep = r.index_corpus(corpus)
    assert (rep.added, rep.updated, rep.removed, rep.unchanged) == (0, 0, 0, 5)
    queries = ["a hot drink made from beans", "pets that purr", "baking"]
    hits = r.search(queries, k=5)

    ref = Retriever.create(None, encoder)  # the local exact index, in memory
    ref.index_corpus(corpus)
    want = ref.search(queries, k=5)
    assert [[h.id for h in hs] for hs in hits] == [[h.id for h in hs] for hs in want]
    np.testing.assert_allclose([[h.score for h in hs] for hs in hits], [[h.score for h in hs] for hs in want], atol=1e-5)
    assert hits[0][0].id == "tea.txt" and hits[0][0].txt.startswith("Black coffee")
    r.index.close()


def test_interleaved_document_keeps_every_part(tmp_path):
    from omniret.types import ImagePart

    it = Item(parts=["look", ImagePart(str(tmp_path / "a.png")), "then", ImagePart(str(tmp_path / "b.png"))], id="y")
    rec = Record.from_item(it)
    assert rec.img_paths == [str(tmp_path / "a.png"), str(tmp_path / "b.png")] and rec.img_path.endswith("a.png")
    assert rec.parts == [{"text": "look"}, {"image": rec.img_paths[0]}, {"text": "then"}, {"image": rec.img_paths[1]}]
    assert Record.from_dict(rec.to_dict()) == rec
    assert Record.from_dict({"id": "z", "modality": "image", "img_path": "old.png"}).img_paths == ["old.png"]


@pytest.mark.parametrize("backend", ["local", "pgvector"])
def test_graph_search_path_has_high_recall_and_fills_filtered_k(backend, tmp_path, request):
    """With the exact fallback switched off, HNSW (faiss / pgvector) still finds the true neighbours, and a
    filtered search still returns k documents of the wanted modality (pgvector: iterative scan)."""
    pg = request.getfixturevalue("pg_url") if backend == "pgvector" else None
    ix = create_index(location(backend, tmp_path, pg), manifest("hnsw"), backend)
    v = unit(0, 600)
    ix.add(v, recs(600))
    ix.exact_below = 0
    q = unit(3, 20)
    _, br = brute(q, v, 10)
    hits = ix.search(q, k=10)
    recall = np.mean([len({h.id for h in hs} & {f"d{r}" for r in row}) / 10 for hs, row in zip(hits, br, strict=True)])
    assert recall >= 0.95
    hits = ix.search(q, k=10, modality="image,text")
    assert all(len(hs) == 10 and {h.modality for h in hs} == {"image,text"} for hs in hits)
    if backend == "pgvector":  # the statement really walks the HNSW index (not a sequential scan)
        sql_q, settings = ix.search_plan(False, "", 10, False)
        for key, val in settings.items():
            ix._conn.execute("SELECT set_config(%s, %s, true)", (key, val))
        plan = " ".join(r[0] for r in ix._conn.execute(b"EXPLAIN " + sql_q.as_bytes(ix._conn), (q[0], q[0], 10)))
        assert "Index Scan using" in plan and "_hnsw" in plan
    ix.close()

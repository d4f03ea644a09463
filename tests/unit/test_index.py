"""The embedded index on raw vectors: exactness, filters, HNSW recall, persistence, atomicity, mutation."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from omniret.errors import DataError, IndexMismatchError, OmniretError
from omniret.index import FlatIndex, Manifest, Record
from omniret.index import storage as storage_mod
from omniret.types import MODALITIES

DIM = 16


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def recs(n: int, start: int = 0) -> list[Record]:
    return [
        Record(id=f"d{i}", modality=MODALITIES[i % 3], txt=f"doc {i}", metadata={"i": i}, fingerprint=f"f{i}")
        for i in range(start, start + n)
    ]


def make(n: int = 200, kind: str = "flat", path=None, seed: int = 0, **hnsw) -> tuple[FlatIndex, np.ndarray]:
    v = unit(np.random.default_rng(seed), n)
    ix = FlatIndex(DIM, encoder_name="enc-a", recipe_hash="hash-a", kind=kind, hnsw=hnsw, path=path)
    ix.add(v, recs(n))
    return ix, v


def brute(q: np.ndarray, v: np.ndarray, k: int, allowed: np.ndarray | None = None):
    s = q @ v.T
    if allowed is not None:
        s[:, ~allowed] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


def test_exact_search_equals_brute_force():
    ix, v = make(500)
    q = unit(np.random.default_rng(1), 20)
    scores, rows = ix.search_rows(q, k=7)
    bs, br = brute(q, v, 7)
    np.testing.assert_array_equal(rows, br)
    np.testing.assert_allclose(scores, bs, rtol=0, atol=1e-5)
    hits = ix.search(q, k=7)
    assert [h.id for h in hits[3]] == [f"d{r}" for r in br[3]]
    assert hits[3][0].txt == f"doc {br[3][0]}" and hits[3][0].metadata == {"i": int(br[3][0])}


def test_single_vector_query_and_k_larger_than_index():
    ix, v = make(5)
    hits = ix.search(v[2], k=50)
    assert len(hits) == 1 and len(hits[0]) == 5
    assert hits[0][0].id == "d2" and hits[0][0].score == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "modality,want",
    [("image", {"image"}), ("image,text", {"image,text"}), (["text", "image"], {"text", "image"})],
)
def test_modality_filter_is_exact(modality, want):
    ix, v = make(300)
    q = unit(np.random.default_rng(2), 10)
    allowed = np.array([MODALITIES[i % 3] in want for i in range(300)])
    scores, rows = ix.search_rows(q, k=12, modality=modality)
    bs, br = brute(q, v, 12, allowed)
    np.testing.assert_array_equal(rows, br)
    np.testing.assert_allclose(scores, bs, atol=1e-5)
    assert all(h.modality in want for hs in ix.search(q, k=12, modality=modality) for h in hs)


def test_filter_returns_fewer_only_when_fewer_exist():
    ix, v = make(7)  # modalities cycle text, image, image,text -> 2 image,text docs
    hits = ix.search(v[:2], k=10, modality="image,text")
    assert [len(h) for h in hits] == [2, 2]
    with pytest.raises(OmniretError, match="unknown modality"):
        ix.search(v[:1], modality="video")


def test_hnsw_recall_and_filter():
    ix, v = make(3000, kind="hnsw", m=16, ef_search=64)
    q = unit(np.random.default_rng(3), 50)
    _, exact = brute(q, v, 10)
    _, rows = ix.search_rows(q, k=10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(rows, exact, strict=True)])
    assert recall >= 0.9, recall
    # filtered HNSW never returns a filtered-out row and always fills k (2000 image/text docs pass)
    _, rows = ix.search_rows(q, k=10, modality=["image", "text"])
    assert (rows >= 0).all() and all(MODALITIES[r % 3] != "image,text" for r in rows.ravel())
    # a very selective filter (3 docs) still returns exactly those 3
    ix.upsert(v[:3], [Record(id=f"d{i}", modality="image,text") for i in range(3)])
    ix.remove([f"d{i}" for i in range(3, 3000) if i % 3 == 2])
    hits = ix.search(q[:2], k=10, modality="image,text")
    assert [sorted(h.id for h in hs) for hs in hits] == [["d0", "d1", "d2"]] * 2
    ix.exact_below = 0  # force the graph walk: it strands, and the exact fallback fills in
    _, rows = ix._ensure_graph().search(q[:2], 3, ix._allowed("image,text"))
    assert (rows < 0).any()  # the raw graph search really does come back short here
    hits = ix.search(q[:2], k=10, modality="image,text")
    assert [sorted(h.id for h in hs) for hs in hits] == [["d0", "d1", "d2"]] * 2


def test_round_trip_same_results(tmp_path):
    for kind in ("flat", "hnsw"):
        ix, v = make(1500, kind=kind, path=tmp_path / kind)
        q = unit(np.random.default_rng(4), 8)
        before = ix.search(q, k=5, modality=["text", "image"])
        ix.save()
        again = FlatIndex.open(tmp_path / kind)
        assert again.kind == kind and len(again) == 1500 and again.dim == DIM
        assert again.search(q, k=5, modality=["text", "image"]) == before
        np.testing.assert_array_equal(again.vectors, v)
        m = json.loads((tmp_path / kind / "manifest.json").read_text())
        assert m["count"] == 1500 and m["encoder_name"] == "enc-a" and m["recipe_hash"] == "hash-a"
        assert m["dim"] == DIM and m["metric"] == "ip" and m["kind"] == kind and m["format_version"] == 1


class _Enc:
    def __init__(self, name: str, recipe_hash: str) -> None:
        self.name, self.recipe_hash = name, recipe_hash


def test_manifest_mismatch_and_dim_errors(tmp_path):
    ix, v = make(10, path=tmp_path / "ix")
    ix.save()
    FlatIndex.open(tmp_path / "ix", encoder=_Enc("enc-a", "hash-a"))  # the right one opens
    with pytest.raises(IndexMismatchError, match=r"'enc-a' \(recipe hash-a\).*'enc-b' \(recipe hash-a\)"):
        FlatIndex.open(tmp_path / "ix", encoder=_Enc("enc-b", "hash-a"))
    with pytest.raises(IndexMismatchError, match="hash-x"):
        ix.check_encoder(_Enc("enc-a", "hash-x"))
    with pytest.raises(IndexMismatchError, match=r"shape \(2, 8\) do not fit index dim 16"):
        ix.search(np.zeros((2, 8), np.float32))
    with pytest.raises(IndexMismatchError, match="dim 16"):
        ix.add(np.zeros((1, 4), np.float32), recs(1, start=99))
    with pytest.raises(OmniretError, match="not an omniret index"):
        FlatIndex.open(tmp_path)
    with pytest.raises(OmniretError, match=r"unknown index parameter\(s\) \['M'\]"):
        FlatIndex(DIM, encoder_name="e", recipe_hash="h", kind="hnsw", hnsw={"M": 8})
    with pytest.raises(OmniretError, match="unknown index kind 'ivf'"):
        FlatIndex(DIM, encoder_name="e", recipe_hash="h", kind="ivf")


def test_atomic_save_survives_crash(tmp_path, monkeypatch):
    path = tmp_path / "ix"
    ix, v = make(50, path=path)
    ix.save()
    q = unit(np.random.default_rng(5), 3)
    expected = ix.search(q, k=5)
    ix.remove(["d0", "d1"])
    ix.add(unit(np.random.default_rng(6), 5), recs(5, start=100))

    def crash(p, data):  # the records write dies half-way: bytes on disk, then the process "crashes"
        with open(p, "wb") as f:
            f.write(data[: len(data) // 2])
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(storage_mod, "write_durable", crash)
    with pytest.raises(KeyboardInterrupt):
        ix.save()
    # simulate a hard kill too: a stray partial generation the cleanup never saw
    stray = path / "gen-000001-deadbeef"
    stray.mkdir()
    (stray / ".omniret-generation").write_text(Manifest.read(path).index_id)  # its owner marker comes first
    (stray / "vectors.npy").write_bytes(b"garbage")
    monkeypatch.undo()
    reopened = FlatIndex.open(path)
    assert len(reopened) == 50 and reopened.search(q, k=5) == expected
    ix.save()  # the next good save publishes and removes every stale generation
    gens = sorted(p.name for p in path.iterdir() if p.name.startswith("gen-"))
    assert gens == [Manifest.read(path).generation] and len(FlatIndex.open(path)) == 53


def test_upsert_remove_and_duplicates():
    ix, v = make(20)
    with pytest.raises(DataError, match="duplicate id 'x'"):
        ix.add(v[:2], [Record(id="x", modality="text"), Record(id="x", modality="text")])
    with pytest.raises(DataError, match="already in the index"):
        ix.add(v[:1], [Record(id="d3", modality="text")])
    assert len(ix) == 20  # failed adds change nothing
    new = unit(np.random.default_rng(7), 2)
    ix.upsert(new, [Record(id="d3", modality="image", txt="new"), Record(id="fresh", modality="text")])
    assert len(ix) == 21 and ix.get("d3").txt == "new" and ix.get("d3").modality == "image"
    assert ix.search(new[0], k=1)[0][0].id == "d3"
    assert ix.ids()[3] == "d3"  # replaced in place
    assert ix.remove(["d3", "nope", "fresh"]) == 2
    assert len(ix) == 19 and ix.get("d3") is None
    hits = ix.search(v[4], k=1)[0]
    assert hits[0].id == "d4"
    with pytest.raises(DataError, match="NaN"):
        ix.add(np.full((1, DIM), np.nan, np.float32), recs(1, start=500))


def test_corrupt_generation_is_a_clear_error(tmp_path):
    ix, _ = make(4, path=tmp_path / "ix")
    ix.save()
    gen = tmp_path / "ix" / ix.manifest.generation
    lines = (gen / "records.jsonl").read_text().splitlines()
    (gen / "records.jsonl").write_text("\n".join(lines[:2] + ["{oops"] + lines[3:]) + "\n")
    with pytest.raises(DataError, match=r"records.jsonl: checksum mismatch"):
        FlatIndex.open(tmp_path / "ix")
    # an index written before checksums existed still gets its records parsed line by line
    mpath = tmp_path / "ix" / "manifest.json"
    mpath.write_text(json.dumps({**json.loads(mpath.read_text()), "checksums": {}}))
    with pytest.raises(DataError, match=r"records.jsonl:3: malformed record"):
        FlatIndex.open(tmp_path / "ix")
    assert os.path.isfile(tmp_path / "ix" / "manifest.json")

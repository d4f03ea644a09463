"""Corrupted index files: flipped bytes and truncation of the vectors and records are detected (a clear
error naming the file, never a silently shorter or wrong index); the HNSW graph — derived data — is rebuilt
from the vectors, so search results and scores stay exact; a save after the repair writes a sound graph."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _helpers import make_index, unit

from omniret.errors import DataError
from omniret.index import FlatIndex
from omniret.index.storage import GRAPH, RECORDS, VECTORS, encode_vectors, sha256

N = 300  # tests set exact_below = 0 so searches go through the graph


def _damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "flip-head":
        data[10] ^= 0xFF
    elif how == "flip-middle":
        data[len(data) // 2] ^= 0x01
    elif how == "flip-last":
        data[-1] ^= 0x80
    elif how == "truncate-half":
        data = data[: len(data) // 2]
    elif how == "truncate-1":
        data = data[:-1]
    elif how == "empty":
        data = bytearray()
    elif how == "append":
        data += b"\x00" * 16
    if how == "delete":
        path.unlink()
    else:
        path.write_bytes(bytes(data))


HOWS = ["flip-head", "flip-middle", "flip-last", "truncate-half", "truncate-1", "empty", "append", "delete"]


@pytest.fixture
def hnsw_index(tmp_path):
    path = tmp_path / "ix"
    make_index(path, n=N, kind="hnsw")
    return path


@pytest.mark.parametrize("how", HOWS)
@pytest.mark.parametrize("name", [VECTORS, RECORDS])
def test_source_files_damage_is_detected(hnsw_index, name, how):
    gen = hnsw_index / json.loads((hnsw_index / "manifest.json").read_text())["generation"]
    _damage(gen / name, how)
    with pytest.raises(DataError, match=f"{gen / name}"):
        FlatIndex.open(hnsw_index)


@pytest.mark.parametrize("how", HOWS)
def test_damaged_graph_is_rebuilt_and_results_stay_exact(hnsw_index, how, caplog):
    intact = FlatIndex.open(hnsw_index)
    gen = hnsw_index / intact.manifest.generation
    _damage(gen / GRAPH, how)
    ix = FlatIndex.open(hnsw_index)
    assert ix._graph is None and "rebuilding the ANN structure" in caplog.text
    ix.exact_below = 0  # search through the (rebuilt) graph
    q = unit(np.random.default_rng(3), 20)
    scores, rows = ix.search_rows(q, k=5)
    exact = q @ ix.vectors.T
    np.testing.assert_allclose(scores, np.take_along_axis(exact, rows, 1), rtol=1e-5, atol=1e-6)
    top1 = exact.argmax(1)
    assert (rows[:, 0] == top1).mean() >= 0.95
    ix.add(unit(np.random.default_rng(4), 1), [type(ix.records()[0])(id="new", modality="text")])
    ix.save()  # the repaired graph is written with a fresh checksum
    again = FlatIndex.open(hnsw_index)
    assert again._graph is not None and len(again._graph) == N + 1


def test_graph_of_other_vectors_cannot_fake_scores(hnsw_index):
    """A graph that passes its checksum but was built from other vectors (a writer bug) only proposes
    candidates: every reported score is the exact inner product with the stored vector."""
    m = json.loads((hnsw_index / "manifest.json").read_text())
    gen = hnsw_index / m["generation"]
    other = make_index(None, n=N, kind="hnsw", seed=99)
    other._ensure_graph()
    data = other._graph.serialize()
    (gen / GRAPH).write_bytes(data)
    m["checksums"][GRAPH] = sha256(data)
    (hnsw_index / "manifest.json").write_text(json.dumps(m))
    ix = FlatIndex.open(hnsw_index)
    ix.exact_below = 0
    q = unit(np.random.default_rng(5), 10)
    scores, rows = ix.search_rows(q, k=5)
    np.testing.assert_allclose(scores, np.take_along_axis(q @ ix.vectors.T, rows, 1), rtol=1e-5, atol=1e-6)
    assert (scores <= 1.0 + 1e-5).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_vector_on_disk_is_detected(hnsw_index, bad):
    """Even with a matching checksum (an index written by a buggy tool), NaN/inf rows are refused at open."""
    m = json.loads((hnsw_index / "manifest.json").read_text())
    gen = hnsw_index / m["generation"]
    v = np.load(gen / VECTORS)
    v[17, 3] = bad
    data = encode_vectors(v)
    (gen / VECTORS).write_bytes(data)
    m["checksums"][VECTORS] = sha256(data)
    (hnsw_index / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DataError, match=r"vectors.npy: 1 vector\(s\) hold NaN or infinite values \(first row 17\)"):
        FlatIndex.open(hnsw_index)


def test_missing_generation_and_manifest(hnsw_index):
    m = json.loads((hnsw_index / "manifest.json").read_text())
    import shutil

    shutil.rmtree(hnsw_index / m["generation"])
    with pytest.raises(DataError, match="the index generation directory is missing"):
        FlatIndex.open(hnsw_index)
    (hnsw_index / "manifest.json").unlink()
    with pytest.raises(Exception, match="not an omniret index"):
        FlatIndex.open(hnsw_index)

"""Quantised ANN kinds of the local index (HNSW fp16/int8, IVF-PQ): recall against exact search, exact
scores after reranking, filters, persistence and rebuild after deletes."""

from __future__ import annotations

import numpy as np
import pytest

from omniret.errors import OmniretError
from omniret.index import FlatIndex, Record
from omniret.index.ann import ANNParams
from omniret.index.flat import rescore
from omniret.types import MODALITIES

DIM = 32
KINDS = [("hnsw", {"storage": "fp16"}), ("hnsw", {"storage": "int8"}), ("ivfpq", {"nprobe": 16, "rerank": 8})]


def clustered(n: int, seed: int = 0, centres: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, DIM)).astype(np.float32)
    v = c[rng.integers(0, centres, n)] + 0.5 * rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def build(kind: str, params: dict, n: int = 4000, path=None) -> tuple[FlatIndex, np.ndarray]:
    v = clustered(n)
    ix = FlatIndex(DIM, encoder_name="e", recipe_hash="h", kind=kind, hnsw=params, path=path)
    ix.add(v, [Record(id=f"d{i}", modality=MODALITIES[i % 3]) for i in range(n)])
    ix.exact_below = 0
    return ix, v


def recall(rows: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(r) & set(t)) / len(t) for r, t in zip(rows.tolist(), truth.tolist(), strict=True)]))


@pytest.mark.parametrize("kind,params", KINDS)
def test_quantised_kinds_recall_exact_scores_and_filter(kind, params, tmp_path):
    ix, v = build(kind, params, path=tmp_path / "ix")
    q = clustered(50, seed=1)
    exact = q @ v.T
    truth = np.argsort(-exact, axis=1, kind="stable")[:, :10]
    scores, rows = ix.search_rows(q, k=10)
    assert recall(rows, truth) >= 0.9
    np.testing.assert_allclose(scores, np.take_along_axis(exact, rows, 1), atol=1e-5)  # rescored exactly
    assert (np.diff(scores, axis=1) <= 1e-7).all()

    _, frows = ix.search_rows(q, k=10, modality="image")
    assert (frows >= 0).all() and all(MODALITIES[r % 3] == "image" for r in frows.ravel())
    ix.save()
    again = FlatIndex.open(tmp_path / "ix")
    assert again.kind == kind and again.hnsw_params.storage == ix.hnsw_params.storage
    again.exact_below = 0
    np.testing.assert_array_equal(again.search_rows(q, k=10)[1], rows)
    again.remove([f"d{i}" for i in range(0, 4000, 2)])  # forces a rebuild over the remaining rows
    assert len(again) == 2000
    assert {h.id for h in again.search(q[0], k=10)[0]}.isdisjoint({f"d{i}" for i in range(0, 4000, 2)})


def test_quantised_structures_are_smaller():
    sizes = {}
    for storage in ("fp32", "fp16", "int8"):
        ix, _ = build("hnsw", {"storage": storage, "m": 16}, n=3000)
        sizes[storage] = ix._ensure_graph().nbytes()
    # same graph; vectors shrink from 4 bytes per dimension to 2 (fp16) and 1 (int8)
    assert sizes["fp32"] - sizes["fp16"] == pytest.approx(3000 * DIM * 2, rel=0.01)
    assert sizes["fp32"] - sizes["int8"] == pytest.approx(3000 * DIM * 3, rel=0.01)
    ix, _ = build("ivfpq", {}, n=3000)
    assert ix._ensure_graph().nbytes() < sizes["int8"]


def test_rescore_and_params_validation():
    q = np.eye(3, dtype=np.float32)
    vec = np.array([[0.1, 0, 0], [0.9, 0, 0], [0, 0.5, 0]], np.float32)
    s, r = rescore(q[:1], vec, np.array([[0, 1, -1]]))
    np.testing.assert_array_equal(r, [[1, 0, -1]])
    np.testing.assert_allclose(s[0, :2], [0.9, 0.1])
    with pytest.raises(OmniretError, match="storage must be one of fp32, fp16, int8"):
        ANNParams(storage="int4")
    with pytest.raises(OmniretError, match="nprobe must be >= 1"):
        ANNParams(nprobe=0)
    with pytest.raises(OmniretError, match="unknown index kind"):
        FlatIndex(DIM, encoder_name="e", recipe_hash="h", kind="lsh")

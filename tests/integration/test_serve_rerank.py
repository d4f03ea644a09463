"""/v1/rerank and search with rerank=true go through the Reranker protocol of omniret.retriever.

The reranker here is a small deterministic scorer (query-word overlap), written for the test so the expected
order can be computed independently; any object with ``rerank(query, hits) -> hits`` plugs in the same way.
"""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from _serve import open_shared, running

from omniret import Hit, Item
from omniret.serve import ServeConfig, create_app


class OverlapReranker:
    name = "overlap-test"

    def __init__(self) -> None:
        self.calls: list[tuple[Item, int]] = []

    @staticmethod
    def score(query: Item, hit: Hit) -> float:
        words = set((query.text or "").lower().split())
        return float(len(words & set((hit.txt or "").lower().split())))

    def rerank(self, query: Item, hits: list[Hit]) -> list[Hit]:
        self.calls.append((query, len(hits)))
        rescored = [dataclasses.replace(h, score=self.score(query, h)) for h in hits]
        return sorted(rescored, key=lambda h: -h.score)


@pytest.fixture(scope="module")
def served():
    reranker = OverlapReranker()
    with running(create_app(open_shared(), ServeConfig(), reranker=reranker)) as url:
        yield url, reranker


def test_rerank_texts_and_indexed_documents(served):
    url, reranker = served
    docs = ["the moon is bright tonight", "a red apple on the table", {"text": "apple apple red"},
            {"id": "texts/apples.txt"}]
    r = httpx.post(url + "/v1/rerank", json={"query": "red apple", "documents": docs, "top_n": 4}).json()
    record = open_shared().index.get("texts/apples.txt")
    texts = [docs[0], docs[1], docs[2]["text"], record.txt]
    q = Item("red apple")
    want = sorted(range(4), key=lambda i: -OverlapReranker.score(q, Hit("x", 0, "text", txt=texts[i])))
    assert [row["index"] for row in r["results"]] == want
    assert [row["relevance_score"] for row in r["results"]] == [
        OverlapReranker.score(q, Hit("x", 0, "text", txt=texts[i])) for i in want]
    assert r["model"] == "overlap-test"
    by_index = {row["index"]: row["document"] for row in r["results"]}
    assert by_index[3] == {"id": "texts/apples.txt", "text": record.txt}
    assert by_index[1] == {"id": None, "text": docs[1]}


def test_search_with_rerank_reorders_the_first_stage(served):
    url, reranker = served
    body = {"query": "rocket launch", "k": 3, "rerank": True, "rerank_candidates": 10}
    got = httpx.post(url + "/v1/search", json=body).json()["data"]
    first = open_shared().search("rocket launch", k=10)
    want = OverlapReranker().rerank(Item("rocket launch"), first)[:3]
    assert [h["id"] for h in got] == [h.id for h in want]
    assert [h["score"] for h in got] == [h.score for h in want]
    assert reranker.calls[-1][1] == 10


def test_rerank_errors_and_models(served):
    url, _ = served
    ids = [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]]
    assert ids[1] == "overlap-test" and httpx.get(url + "/healthz").json()["reranker"] is True
    for body, status, text in [
        ({"query": "x", "documents": []}, 422, "documents: must not be empty"),
        ({"query": "x", "documents": [{"id": "nope"}]}, 422, "documents[0].id: no indexed document 'nope'"),
        ({"query": "x", "documents": [5]}, 422, "documents[0]: must be a string"),
        ({"query": "x", "documents": [""]}, 422, "documents[0]: must be non-empty text"),
        ({"query": "x", "documents": ["a"], "model": "other"}, 404, "model: 'other' is not served here"),
        ({"query": "x", "documents": ["a"], "top_n": 0}, 422, "top_n:"),
        ({"query": "x", "documents": [{"id": "texts/dogs.txt"}] * 2}, 422, "same indexed document twice"),
    ]:
        r = httpx.post(url + "/v1/rerank", json=body)
        assert r.status_code == status and text in r.json()["error"]["message"], (body, r.text)


class TopKReranker(OverlapReranker):
    """The protocol's other shape: hits keep their retrieval score and gain a ``rerank_score``."""

    name = "topk-test"

    def rerank(self, query: Item, hits: list[Hit], k: int | None = None) -> list[Hit]:
        out = []
        for h in hits:
            h2 = dataclasses.replace(h)
            h2.rerank_score = self.score(query, h)
            out.append(h2)
        return sorted(out, key=lambda h: -h.rerank_score)


def test_rerank_score_is_reported_where_the_reranker_sets_one():
    with running(create_app(open_shared(), ServeConfig(), reranker=TopKReranker())) as url:
        r = httpx.post(url + "/v1/rerank", json={"query": "red apple", "documents": ["moon", "red apple pie"]}).json()
        assert [(row["index"], row["relevance_score"]) for row in r["results"]] == [(1, 2.0), (0, 0.0)]
        hits = httpx.post(url + "/v1/search", json={"query": "rocket launch", "k": 2, "rerank": True}).json()["data"]
        first = {h.id: h.score for h in open_shared().search("rocket launch", k=20)}
        for h in hits:
            assert h["rerank_score"] == TopKReranker.score(Item("rocket launch"), Hit(h["id"], 0, "", txt=h["text"]))
            assert abs(h["score"] - first[h["id"]]) < 1e-5  # the retrieval score is kept beside it

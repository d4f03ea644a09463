"""The HTTP API against a real uvicorn server: embeddings equal the encoder's, the official openai client
works, search equals Retriever.search, metrics count what happened, concurrent requests share forward passes."""

from __future__ import annotations

import base64
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from _serve import SAMPLE, default_encoder, open_shared, running

from omniret import Item
from omniret.serve import ServeConfig, create_app

COFFEE = (SAMPLE / "photos" / "coffee.jpg").read_bytes()
CAT = (SAMPLE / "photos" / "chelsea_the_cat.jpg").read_bytes()


def data_url(data: bytes, mime: str = "image/jpeg") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_part(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(data)}}


@pytest.fixture(scope="module")
def server():
    with running(create_app(open_shared(), ServeConfig())) as url:
        yield url


def embed(url: str, **body) -> np.ndarray:
    r = httpx.post(url + "/v1/embeddings", json=body, timeout=60)
    assert r.status_code == 200, r.text
    rows = sorted(r.json()["data"], key=lambda d: d["index"])
    return np.array([d["embedding"] for d in rows], dtype=np.float32)


def test_text_embeddings_equal_the_encoder(server):
    enc = default_encoder()
    got = embed(server, input=["a red apple", "the moon at night"])
    np.testing.assert_allclose(got, enc.encode_documents(["a red apple", "the moon at night"]), atol=1e-5)
    one = embed(server, input="a red apple")
    np.testing.assert_allclose(one[0], got[0], atol=1e-5)
    # the same batch as the encoder's (one item): bit-equal, so the JSON floats lose nothing
    np.testing.assert_array_equal(one, enc.encode_documents(["a red apple"]))
    q = embed(server, input=["a red apple"], input_type="query", instruction="Find an image of this.")
    np.testing.assert_allclose(q, enc.encode_queries(["a red apple"], instruction="Find an image of this."), atol=1e-5)


def test_image_and_interleaved_embeddings_equal_the_encoder(server):
    enc = default_encoder()
    items = [
        {"content": [image_part(COFFEE)]},
        {"content": [{"type": "text", "text": "a photo of"}, image_part(CAT), {"type": "text", "text": "a cat"}]},
        "plain text among items",
    ]
    got = embed(server, input=items)
    want = enc.encode_documents([
        Item(image=COFFEE),
        Item(parts=["a photo of", CAT, "a cat"]),
        Item("plain text among items"),
    ])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_base64_encoding_format_carries_the_same_floats(server):
    r = httpx.post(server + "/v1/embeddings", json={"input": "apples", "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(r["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_array_equal(vec, embed(server, input="apples")[0])
    assert r["usage"]["prompt_tokens"] == r["usage"]["total_tokens"] > 0
    assert r["model"] == default_encoder().name


def test_official_openai_client_gets_text_image_and_interleaved_embeddings(server):
    from openai import OpenAI

    enc = default_encoder()
    client = OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0)
    text = client.embeddings.create(model=enc.name, input="a cup of coffee")
    np.testing.assert_allclose(text.data[0].embedding, enc.encode_documents(["a cup of coffee"])[0], atol=1e-5)
    image = client.embeddings.create(model=enc.name, input=[{"content": [image_part(COFFEE)]}])
    np.testing.assert_allclose(image.data[0].embedding, enc.encode_documents([Item(image=COFFEE)])[0], atol=1e-5)
    mixed = client.embeddings.create(
        model=enc.name,
        input=[{"content": [image_part(CAT), {"type": "text", "text": "sleeping on a sofa"}]}],
        encoding_format="float",
        extra_body={"input_type": "query", "instruction": "Find a matching caption."},
    )
    want = enc.encode_queries([Item("sleeping on a sofa", image=CAT)], instruction="Find a matching caption.")
    np.testing.assert_allclose(mixed.data[0].embedding, want[0], atol=1e-5)
    assert text.usage.total_tokens > 0 and [m.id for m in client.models.list()] == [enc.name]


def test_search_equals_the_retriever(server):
    r = open_shared()
    for body, query in [
        ({"query": "a cat", "k": 4, "modality": "image"}, Item("a cat")),
        ({"query": {"content": [image_part(COFFEE)]}, "k": 5, "modality": ["text", "image,text"]}, Item(image=COFFEE)),
        ({"query": "fruit", "k": 3, "instruction": "Find an image of this."}, Item("fruit")),
    ]:
        got = httpx.post(server + "/v1/search", json=body, timeout=60).json()
        want = r.search(query, k=body["k"], modality=body.get("modality"), instruction=body.get("instruction"))
        assert [h["id"] for h in got["data"]] == [h.id for h in want]
        np.testing.assert_allclose([h["score"] for h in got["data"]], [h.score for h in want], atol=1e-5)
        assert [h["rank"] for h in got["data"]] == list(range(1, len(want) + 1))
    cat = httpx.post(server + "/v1/search", json={"query": "a cat", "k": 2, "modality": "image"}).json()["data"]
    assert {h["modality"] for h in cat} == {"image"} and cat[0]["images"][0].startswith("/media/")
    coffee = httpx.post(server + "/v1/search", json={"query": {"content": [image_part(COFFEE)]}, "k": 1}).json()
    assert coffee["data"][0]["id"] == "photos/coffee.jpg" and coffee["query_modality"] == "image"


def test_models_healthz_and_prometheus_metrics(server):
    health = httpx.get(server + "/healthz").json()
    assert health == {"status": "ok", "model": default_encoder().name, "documents": 17, "reranker": False}
    before = _metric(server, 'omniret_requests_total{method="GET",route="/v1/models",status="200"}')
    for _ in range(3):
        assert httpx.get(server + "/v1/models").json()["data"][0]["dimensions"] == default_encoder().dim
    text = httpx.get(server + "/metrics").text
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+]+$')
    for line in text.splitlines():
        assert line.startswith("# ") or sample.match(line), line
    assert _metric(server, 'omniret_requests_total{method="GET",route="/v1/models",status="200"}') == before + 3


def _metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_concurrent_requests_share_forward_passes():
    """8 concurrent single-text requests, 300 ms wait budget: fewer forward groups than requests, same vectors."""
    enc = default_encoder()
    texts = [f"query number {i} about apples" for i in range(8)]
    app = create_app(open_shared(), ServeConfig(max_batch=32, max_wait_ms=300))
    with running(app) as url, ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda t: embed(url, input=t)[0], texts))
        groups = _metric(url, "omniret_batch_items_count")
        served = _metric(url, "omniret_batched_requests_total")
    assert served == 8 and groups < 8
    np.testing.assert_allclose(np.stack(got), enc.encode_documents(texts), atol=1e-5)

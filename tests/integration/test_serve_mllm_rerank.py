"""The server with the REAL reranker: `omniret serve --reranker DIR`'s loader on a tiny random Qwen2-VL.

Expected scores come from an independent ``load_reranker(DIR)`` instance scoring the same items through the
library (``score`` / ``rerank``), so the test checks that the server hands the reranker exactly the query and
documents the client sent (text, indexed documents with their image files, inline data-URL images).
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import torch
from _cdp import Browser, find_chromium
from _cli import run
from _serve import open_shared, running, shared_index
from PIL import Image

from omniret import Item
from omniret.cli.serve import load_reranker as cli_load_reranker
from omniret.rerank import hit_item, load_reranker
from omniret.serve import ServeConfig, create_app
from tiny_rerank import build_tiny_qwen2vl


def _data_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


RED = Image.new("RGB", (56, 56), (220, 20, 20))
BLUE = Image.new("RGB", (84, 56), (20, 20, 220))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    torch.set_num_threads(1)
    mllm = build_tiny_qwen2vl(tmp_path_factory.mktemp("serve-mllm") / "qwen2vl")
    reference = load_reranker(mllm)  # independent instance: the server gets its own through the CLI loader
    with running(create_app(open_shared(), ServeConfig(), reranker=cli_load_reranker(str(mllm)))) as url:
        yield url, reference, str(mllm)


def test_search_with_real_reranker_equals_the_library(served):
    url, reference, name = served
    body = {"query": "a red apple", "k": 4, "rerank": True, "rerank_candidates": 6}
    got = httpx.post(url + "/v1/search", json=body, timeout=120).json()["data"]
    first = open_shared().search("a red apple", k=6)
    want = reference.rerank(Item("a red apple"), first)[:4]
    assert [h["id"] for h in got] == [h.id for h in want]
    rs = [h["rerank_score"] for h in got]
    assert rs == sorted(rs, reverse=True)
    np.testing.assert_allclose(rs, [h.rerank_score for h in want], atol=1e-6)
    # P(True) is a probability; the retrieval score is kept beside it
    assert all(0.0 < s < 1.0 for s in rs)
    np.testing.assert_allclose([h["score"] for h in got], [h.score for h in want], atol=1e-5)
    assert httpx.get(url + "/v1/models").json()["data"][1]["id"] == name


def test_rerank_endpoint_texts_indexed_and_inline_images(served):
    url, reference, name = served
    docs = ["a red apple on the table", {"id": "emoji/red_apple.png"},
            {"content": [{"type": "image_url", "image_url": {"url": _data_url(RED)}},
                         {"type": "text", "text": "a red square"}]},
            {"content": [{"type": "image_url", "image_url": {"url": _data_url(BLUE)}}]},
            {"text": "the moon"}]
    query = {"content": [{"type": "text", "text": "something red"},
                         {"type": "image_url", "image_url": {"url": _data_url(RED)}}]}
    r = httpx.post(url + "/v1/rerank", json={"query": query, "documents": docs, "model": name}, timeout=120)
    assert r.status_code == 200, r.text
    rows = r.json()["results"]
    items = [Item(docs[0]), hit_item(open_shared().index.get("emoji/red_apple.png").hit(0.0)),
             Item(parts=[RED, "a red square"]), Item(parts=[BLUE]), Item("the moon")]
    want = reference.score(Item(parts=["something red", RED]), items)
    order = sorted(range(len(docs)), key=lambda i: -want[i])
    assert [row["index"] for row in rows] == order
    np.testing.assert_allclose([row["relevance_score"] for row in rows], want[order], atol=1e-6)
    by_index = {row["index"]: row["document"] for row in rows}
    assert by_index[1]["id"] == "emoji/red_apple.png" and by_index[2] == {"id": None, "text": "a red square"}
    assert by_index[3] == {"id": None, "text": None}

    top = httpx.post(url + "/v1/rerank", json={"query": "something red", "documents": docs[:2] + docs[4:],
                                               "top_n": 1, "return_documents": False}, timeout=120).json()
    scores = reference.score(Item("something red"), [items[0], items[1], items[4]])
    assert top["results"] == [{"index": int(np.argmax(scores)), "relevance_score": pytest.approx(
        float(scores.max()), abs=1e-6)}]


def test_rerank_inline_errors_name_the_field(served):
    url, _, _ = served
    for doc, status, text in [
        ({"content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}, 422,
         "documents[0].content[0].image_url.url: not a recognised image"),
        ({"content": []}, 422, "documents[0].content: must not be empty"),
        ({"content": "x", "id": "y"}, 422, "documents[0]: unknown field(s) 'id'"),
    ]:
        r = httpx.post(url + "/v1/rerank", json={"query": "x", "documents": [doc]}, timeout=60)
        assert r.status_code == status and text in r.json()["error"]["message"], (doc, r.text)


def test_page_rerank_checkbox_in_chromium(served, tmp_path):
    """The page offers the checkbox only when the server has a reranker; checked, its grid is the API's
    reranked order with the reranker's scores."""
    url, _, _ = served
    binary = find_chromium()
    if binary is None:
        pytest.fail("chromium not found: `make install` installs Debian's chromium package (apt-get, as root)")
    browser = Browser(binary, tmp_path / "profile")
    try:
        browser.navigate(url + "/")
        browser.wait_for("!document.getElementById('rerank-label').hidden")
        browser.type("#q", "a red apple")
        browser.eval("(() => { document.getElementById('rerank').checked = true;"
                     " document.getElementById('k').value = '5'; })()")
        browser.click("#go")
        browser.wait_for("document.body.dataset.searches === '1'")
        hits = "[...document.querySelectorAll('#results .hit')]"
        ids = browser.eval(f"{hits}.map(h => h.dataset.id)")
        shown = browser.eval(f"{hits}.map(h => h.querySelector('.score').textContent)")
    finally:
        browser.close()
    api = httpx.post(url + "/v1/search", json={"query": {"content": [{"type": "text", "text": "a red apple"}]},
                                              "k": 5, "rerank": True}, timeout=120).json()["data"]
    assert ids == [h["id"] for h in api] and len(ids) == 5
    assert shown == [f"{h['rerank_score']:.4f}" for h in api]


def test_serve_cli_refuses_a_bad_reranker_before_serving(monkeypatch, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, err = run(monkeypatch, capsys, "serve", "--index", str(shared_index()), "--reranker",
                       str(tmp_path / "empty"), "--port", "0")
    assert code == 1 and err.startswith("error: ") and "empty: not a model directory" in err

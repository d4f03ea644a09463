"""Hostile input against a real server: path traversal, symlinks, API key, caps, remote URLs, CORS, malformed
requests. Every refusal is a 4xx naming the field; the server keeps answering afterwards."""

from __future__ import annotations

import base64
import http.client
import http.server
import io
import os
import shutil
import threading

import httpx
import numpy as np
import pytest
from _serve import SAMPLE, default_encoder, open_shared, running
from PIL import Image

from omniret import Retriever
from omniret.serve import ServeConfig, create_app

COFFEE = (SAMPLE / "photos" / "coffee.jpg").read_bytes()
SECRET = b"top secret: never serve me"


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def img_input(url: str) -> dict:
    return {"input": [{"content": [{"type": "image_url", "image_url": {"url": url}}]}]}


@pytest.fixture(scope="module")
def media_server(tmp_path_factory):
    """docs/ (indexed: two images, a symlink to a sibling, a text) beside secret/ (not indexed)."""
    root = tmp_path_factory.mktemp("media")
    docs, secret = root / "docs", root / "secret"
    docs.mkdir()
    secret.mkdir()
    shutil.copy(SAMPLE / "emoji" / "cat.png", docs / "cat.png")
    shutil.copy(SAMPLE / "emoji" / "dog.png", docs / "dog.png")
    os.symlink("dog.png", docs / "alias.png")  # inside its folder: served
    (docs / "note.txt").write_text("a text document without an image")
    shutil.copy(SAMPLE / "emoji" / "rocket.png", secret / "secret.png")
    (secret / "passwd").write_bytes(SECRET)
    r = Retriever.create(root / "index", default_encoder())
    r.index_corpus(docs)
    # after indexing, an indexed file is swapped for a symlink that points out of the corpus
    (docs / "cat.png").unlink()
    os.symlink(secret / "secret.png", docs / "cat.png")
    with running(create_app(r, ServeConfig())) as url:
        yield url, root


def raw_get(base: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent byte-for-byte (no client-side normalisation of ``..`` or %-escapes)."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
    conn.endheaders()
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body


def test_media_serves_indexed_images_only(media_server):
    url, root = media_server
    ok, body = raw_get(url, "/media/dog.png")
    assert ok == 200 and Image.open(io.BytesIO(body)).format == "JPEG"
    assert raw_get(url, "/media/alias.png")[0] == 200  # a symlink to a sibling stays inside the folder
    assert raw_get(url, "/media/note.txt")[0] == 404  # indexed, but has no image
    assert raw_get(url, "/media/dog.png?part=1")[0] == 404
    attacks = [
        "/media/../secret/secret.png",
        "/media/..%2fsecret%2fsecret.png",
        "/media/%2e%2e%2fsecret%2fsecret.png",
        "/media/%252e%252e%252fsecret%252fsecret.png",
        "/media/..%5csecret%5csecret.png",
        f"/media/{root}/secret/secret.png",
        f"/media/{str(root / 'secret' / 'passwd').replace('/', '%2f')}",
        "/media//etc/passwd",
        "/media/%2fetc%2fpasswd",
        "/media/cat.png",  # indexed, but now a symlink pointing out of the corpus
        "/static/../secret/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fservice.py",
    ]
    rocket = (root / "secret" / "secret.png").read_bytes()
    for path in attacks:
        status, body = raw_get(url, path)
        assert status == 404, (path, status)
        assert SECRET not in body and rocket not in body and b"JFIF" not in body, path


def test_api_key(tmp_path):
    app = create_app(open_shared(), ServeConfig(api_key="s3cret"))
    with running(app) as url:
        for path in ("/v1/models", "/metrics", "/media/photos/coffee.jpg"):
            r = httpx.get(url + path)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
            assert "API key" in r.json()["error"]["message"]
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.post(url + "/v1/embeddings", json={"input": "x"}).status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.get(url + "/v1/models", headers=good).status_code == 200
        assert httpx.get(url + "/media/photos/coffee.jpg", headers=good).status_code == 200
        assert httpx.get(url + "/healthz").status_code == 200 and httpx.get(url + "/").status_code == 200


def test_request_upload_and_pixel_caps():
    cfg = ServeConfig(max_request_bytes=60_000, max_image_bytes=20_000, max_image_pixels=10_000)
    with running(create_app(open_shared(), cfg)) as url:
        big = httpx.post(url + "/v1/embeddings", json={"input": "x" * 70_000})
        assert big.status_code == 413 and "exceeds the limit of 60000 bytes" in big.json()["error"]["message"]
        chunks = (b'{"input": "' + b"y" * 10_000 for _ in range(8))  # chunked: no Content-Length to check
        streamed = httpx.post(url + "/v1/embeddings", content=chunks, headers={"content-type": "application/json"})
        assert streamed.status_code == 413
        upload = httpx.post(url + "/v1/embeddings", json=img_input(data_url(COFFEE, "image/jpeg")))
        msg = upload.json()["error"]["message"]
        assert upload.status_code == 413 and msg.startswith("input[0].content[0].image_url.url:") and "20000" in msg
        pixels = httpx.post(url + "/v1/embeddings", json=img_input(data_url(png(200, 200))))
        assert pixels.status_code == 413 and "200x200 image exceeds the pixel cap of 10000" in pixels.text
        assert httpx.post(url + "/v1/embeddings", json=img_input(data_url(png(90, 90)))).status_code == 200
        many = httpx.post(url + "/v1/embeddings", json={"input": ["a"] * 300})
        assert many.status_code == 413 and "limit of 256" in many.text


class _ImageHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        self.wfile.write(COFFEE)

    def log_message(self, *args):
        pass


def test_remote_urls_refused_unless_enabled():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    remote = f"http://127.0.0.1:{httpd.server_address[1]}/coffee.jpg"
    try:
        with running(create_app(open_shared(), ServeConfig())) as url:
            r = httpx.post(url + "/v1/embeddings", json=img_input(remote))
            assert r.status_code == 400 and "--allow-remote-urls" in r.json()["error"]["message"]
            assert r.json()["error"]["param"] == "input[0].content[0].image_url.url"
        with running(create_app(open_shared(), ServeConfig(allow_remote_urls=True))) as url:
            fetched = httpx.post(url + "/v1/embeddings", json=img_input(remote)).json()["data"][0]["embedding"]
            inline = httpx.post(url + "/v1/embeddings", json=img_input(data_url(COFFEE, "image/jpeg")))
            np.testing.assert_array_equal(fetched, inline.json()["data"][0]["embedding"])
    finally:
        httpd.shutdown()


def test_cors_is_off_by_default_and_on_when_configured():
    pre = {"Origin": "http://other.test", "Access-Control-Request-Method": "POST"}
    with running(create_app(open_shared(), ServeConfig())) as url:
        assert "access-control-allow-origin" not in httpx.options(url + "/v1/search", headers=pre).headers
        assert "access-control-allow-origin" not in httpx.get(url + "/healthz", headers=pre).headers
    cfg = ServeConfig(cors_origins=["http://other.test"], api_key="k")
    with running(create_app(open_shared(), cfg)) as url:
        r = httpx.options(url + "/v1/search", headers=pre)  # a preflight carries no key, and needs none
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://other.test"
        r = httpx.post(url + "/v1/search", json={"query": "x"}, headers={"Origin": "http://other.test"})
        assert r.status_code == 401


BAD = [
    ("/v1/embeddings", b"{not json", 400, "invalid JSON"),
    ("/v1/embeddings", b"[]", 400, "request body"),
    ("/v1/embeddings", {"input": 3}, 422, "input: must be a string or a list"),
    ("/v1/embeddings", {"input": []}, 422, "input: must not be empty"),
    ("/v1/embeddings", {"input": [[1, 2, 3]]}, 422, "token-id inputs are not supported"),
    ("/v1/embeddings", {"input": ""}, 422, "input: is empty"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "bin"}, 422, "encoding_format:"),
    ("/v1/embeddings", {"input": "x", "bogus": 1}, 422, "bogus: unknown field"),
    ("/v1/embeddings", {"input": "x", "dimensions": 7}, 422, "dimensions:"),
    ("/v1/embeddings", {"input": "x", "model": "gpt-4"}, 404, "model: 'gpt-4' is not served here"),
    ("/v1/embeddings", {"input": "x", "instruction": "Q", "input_type": "document"}, 422, "instruction:"),
    ("/v1/embeddings", {"input": [{"content": [{"type": "video"}]}]}, 422, "input[0].content[0].type:"),
    ("/v1/embeddings", {"input": [{"content": [{"type": "text", "text": 5}]}]}, 422, "input[0].content[0].text:"),
    ("/v1/embeddings", {"input": [{"content": 5}]}, 422, "input[0].content:"),
    ("/v1/embeddings", {"input": [{"type": "text", "text": "x"}]}, 422, "input[0]: unknown field(s) 'text', 'type'"),
    ("/v1/embeddings", {"input": ["ok", 5.5]}, 422, "input[1]: must be a string"),
    ("/v1/embeddings", img_input("data:image/png;base64,!!!!"), 422, "invalid base64"),
    ("/v1/embeddings", img_input("data:image/png," + "x"), 422, "must be base64-encoded"),
    ("/v1/embeddings", img_input(data_url(b"\x89PNG\r\n\x1a\n garbage")), 422, "not a recognised image"),
    ("/v1/embeddings", img_input(data_url(COFFEE[: len(COFFEE) // 2], "image/jpeg")), 422, "corrupt or truncated"),
    ("/v1/embeddings", img_input("file:///etc/passwd"), 422, "must be a data:image"),
    ("/v1/embeddings", img_input(""), 422, "non-empty string URL"),
    ("/v1/search", {"query": "x", "k": 0}, 422, "k:"),
    ("/v1/search", {"query": "x", "k": "5"}, 422, "k:"),
    ("/v1/search", {"query": "x", "k": 10**6}, 422, "k: must be <= 1000"),
    ("/v1/search", {"query": 5}, 422, "query: must be a string"),
    ("/v1/search", {"query": {"content": []}}, 422, "query.content: must not be empty"),
    ("/v1/search", {"query": "x", "modality": "video"}, 422, "modality: unknown modality filter 'video'"),
    ("/v1/search", {"query": "x", "rerank": True}, 501, "no reranker is configured"),
    ("/v1/search", {}, 422, "query: required field missing"),
    ("/v1/rerank", {"query": "x", "documents": ["a"]}, 501, "no reranker is configured"),
]


def test_malformed_requests_are_4xx_naming_the_field_and_the_worker_lives():
    with running(create_app(open_shared(), ServeConfig())) as url:
        for path, body, status, text in BAD:
            kw = {"content": body, "headers": {"content-type": "application/json"}} if isinstance(body, bytes) \
                else {"json": body}
            r = httpx.post(url + path, timeout=60, **kw)
            assert r.status_code == status, (body if len(str(body)) < 200 else path, r.text)
            assert text in r.json()["error"]["message"], (r.json(), text)
        assert httpx.get(url + "/v1/embeddings").status_code == 405
        assert httpx.post(url + "/v1/embeddings", content=b"input=x").status_code == 400
        assert httpx.post(url + "/v1/embeddings", json={"input": "still alive"}).status_code == 200
        assert httpx.get(url + "/healthz").json()["status"] == "ok"


def test_binds_loopback_by_default():
    import inspect

    from omniret.cli.serve import serve_cmd

    assert inspect.signature(serve_cmd).parameters["host"].default.default == "127.0.0.1"
    assert ServeConfig().cors_origins == [] and ServeConfig().allow_remote_urls is False

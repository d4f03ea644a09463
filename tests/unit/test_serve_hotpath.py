"""HotPath, the lean ASGI path of POST /v1/embeddings and /v1/search: it answers valid JSON bodies itself with
the handler's result rendered exactly, maps handler errors to the API's JSON errors, and hands everything else
(other methods, non-JSON bodies, bodies that do not validate) to the FastAPI app with the body intact."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import orjson
import pytest

pytest.importorskip("fastapi")

from omniret.serve.hotpath import HotPath, render_json  # noqa: E402
from omniret.serve.inputs import RequestError  # noqa: E402
from omniret.serve.protocol import EmbeddingsRequest  # noqa: E402

VEC = np.array([0.1, -1 / 3, 2.5e-8, 1.0], dtype=np.float32)


class Downstream:
    """Stands for the FastAPI app behind HotPath: records what reaches it and answers 299."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    async def __call__(self, scope, receive, send) -> None:
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        self.seen.append((scope["path"], body))
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b"downstream"})


async def _handler(req: EmbeddingsRequest) -> dict:
    if req.input == "bad":
        raise RequestError("input", "is bad")
    if req.input == "bug":
        raise RuntimeError("a bug")
    return {"input": req.input, "embedding": VEC.astype(np.float64)}


def call(method: str, path: str, body: bytes, content_type: bytes | None = b"application/json",
         chunks: int = 1) -> tuple[int, dict, bytes, Downstream]:
    down = Downstream()
    app = HotPath(down, {"/v1/embeddings": (EmbeddingsRequest, _handler)})
    headers = [(b"content-type", content_type)] if content_type else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    step = max(1, -(-len(body) // chunks))
    parts = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(m):
        sent.append(m)

    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return start["status"], dict(start.get("headers", [])), b"".join(m.get("body", b"") for m in sent[1:]), down


def test_valid_json_is_answered_here_with_exact_floats():
    body = json.dumps({"input": "apples", "input_type": "query"}).encode()
    status, headers, out, down = call("POST", "/v1/embeddings", body, chunks=3)
    assert status == 200 and down.seen == []
    assert headers[b"content-type"] == b"application/json" and int(headers[b"content-length"]) == len(out)
    got = json.loads(out)
    assert got["input"] == "apples"
    # float32 values sent as float64 read back bit-exact, as json.dumps(tolist()) gave them
    np.testing.assert_array_equal(np.array(got["embedding"], dtype=np.float32), VEC)
    assert got["embedding"] == json.loads(json.dumps(VEC.tolist()))
    assert render_json({"a": "é"}) == orjson.dumps({"a": "é"}) == '{"a":"é"}'.encode()


@pytest.mark.parametrize("content_type", [None, b"application/json; charset=utf-8", b"application/vnd.api+json"])
def test_json_content_types_fastapi_would_parse_take_the_hot_path(content_type):
    status, _, _, down = call("POST", "/v1/embeddings", b'{"input": "x"}', content_type)
    assert status == 200 and down.seen == []


@pytest.mark.parametrize(("method", "path", "body", "content_type"), [
    ("GET", "/v1/embeddings", b"", b"application/json"),  # other methods
    ("POST", "/v1/models", b"{}", b"application/json"),  # other paths
    ("POST", "/v1/embeddings", b'{"input": "x"}', b"text/plain"),  # not JSON: FastAPI's own answer
    ("POST", "/v1/embeddings", b'{"input": "x", "extra": 1}', b"application/json"),  # does not validate
    ("POST", "/v1/embeddings", b'{"input": ', b"application/json"),  # malformed JSON
])
def test_everything_else_reaches_fastapi_with_the_body_intact(method, path, body, content_type):
    status, _, out, down = call(method, path, body, content_type, chunks=2)
    assert status == 299 and out == b"downstream"
    assert down.seen == [(path, body)]


def test_handler_errors_become_the_api_json_errors():
    status, _, out, down = call("POST", "/v1/embeddings", b'{"input": "bad"}')
    assert status == 422 and down.seen == []
    assert json.loads(out)["error"] == {"message": "input: is bad", "type": "invalid_request_error",
                                        "param": "input", "code": 422}
    status, _, out, _ = call("POST", "/v1/embeddings", b'{"input": "bug"}')
    assert status == 500 and "RuntimeError" in json.loads(out)["error"]["message"]

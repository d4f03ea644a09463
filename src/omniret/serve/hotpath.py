"""The two hot endpoints, ``POST /v1/embeddings`` and ``POST /v1/search``, served as plain ASGI.

Why: a single-query request costs the encoder ~1-2 ms of CPU when micro-batched, and FastAPI's generic
machinery (routing over every route, dependency solving, a thread-safe body parse, ``json.dumps`` of 384
Python floats) cost about a third as much again on top (py-spy under 32 concurrent clients;
docs/results.md, "HTTP server"). Here the body is read, validated by the same pydantic models straight from
JSON (``model_validate_json``, pydantic-core's parser), handed to the same :class:`~omniret.serve.service.Service`
method, and the answer is rendered by orjson, numpy arrays included. The layer sits inside the
:class:`~omniret.serve.guard.Guard` (API key, size cap, metrics) and CORS, so they hold unchanged.

Anything unusual goes to the FastAPI app untouched: other methods or paths, a body that is not JSON, and a
body that does not validate (replayed to FastAPI, whose error names the field exactly as before).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omniret.serve.errors import exception_response
from omniret.serve.protocol import EmbeddingsRequest, SearchRequest

Handler = Callable[[Any], Awaitable[dict[str, Any]]]


def render_json(content: Any) -> bytes:
    """UTF-8 JSON; numpy arrays become lists (float64 arrays in the shortest round-trip form, so a float32
    embedding sent as float64 reads back bit-exact)."""
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def is_json(scope: Scope) -> bool:
    """Whether FastAPI would parse this body as JSON: no content type, ``application/json`` or ``*+json``."""
    for name, value in scope.get("headers") or ():
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))
    return True


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            raise HTTPException(400, "request body: the client disconnected")
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then whatever the connection sends (a disconnect)."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


class HotPath:
    """ASGI layer: ``POST`` JSON to the routes in ``routes`` is answered here, everything else by ``app``."""

    def __init__(self, app: ASGIApp, routes: dict[str, tuple[type[BaseModel], Handler]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None or not is_json(scope):
            await self.app(scope, receive, send)
            return
        model, handler = route
        try:
            body = await read_body(receive)
        except HTTPException as e:  # the Guard's size cap, raised while the body streams in
            await exception_response(e)(scope, receive, send)
            return
        try:
            request = model.model_validate_json(body)
        except ValidationError:
            await self.app(scope, replay(body, receive), send)
            return
        try:
            content = render_json(await handler(request))
        except Exception as e:  # noqa: BLE001 - mapped to the same JSON errors as FastAPI's handlers
            await exception_response(e, f"POST {scope['path']}")(scope, receive, send)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})


def hot_routes(service: Any) -> dict[str, tuple[type[BaseModel], Handler]]:
    """The routes :class:`HotPath` serves for ``service`` (a :class:`~omniret.serve.service.Service`)."""
    return {"/v1/embeddings": (EmbeddingsRequest, service.embeddings), "/v1/search": (SearchRequest, service.search)}

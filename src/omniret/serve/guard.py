"""One ASGI middleware in front of every route: Bearer-key check, request-size cap, request metrics.

The size cap holds for chunked bodies too: the body stream is counted as it arrives and reading stops with a
413 as soon as it passes the cap, so an over-size upload is never buffered whole.
"""

from __future__ import annotations

import hmac
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from omniret.serve.config import ServeConfig
from omniret.serve.errors import error_response
from omniret.serve.metrics import Metrics

#: paths that need the API key when one is set (the page and /healthz stay open: they reveal no data)
PROTECTED = ("/v1/", "/media/", "/metrics")
ROUTES = ("/", "/healthz", "/metrics", "/v1/models", "/v1/embeddings", "/v1/search", "/v1/rerank")


def route_label(path: str) -> str:
    """A bounded set of metric labels: request paths are attacker-chosen."""
    if path in ROUTES:
        return path
    for prefix in ("/media/", "/static/"):
        if path.startswith(prefix):
            return prefix.rstrip("/")
    return "other"


class Guard:
    def __init__(self, app: ASGIApp, config: ServeConfig, metrics: Metrics) -> None:
        self.app = app
        self.cfg = config
        self.metrics = metrics

    def _authorised(self, scope: Scope) -> bool:
        # CORS preflights never carry credentials, and answer with no data
        if self.cfg.api_key is None or scope["method"] == "OPTIONS" or not scope["path"].startswith(PROTECTED):
            return True
        headers = dict(scope.get("headers") or [])
        got = headers.get(b"authorization", b"").decode("latin-1")
        scheme, _, token = got.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.cfg.api_key.encode())

    def _declared_too_large(self, scope: Scope) -> bool:
        length = dict(scope.get("headers") or []).get(b"content-length")
        try:
            return length is not None and int(length) > self.cfg.max_request_bytes
        except ValueError:
            return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        cap = self.cfg.max_request_bytes
        too_large = f"request body exceeds the limit of {cap} bytes"
        if not self._authorised(scope):
            resp = error_response(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                  headers={"WWW-Authenticate": "Bearer"})
            await resp(scope, receive, send_counted)
        elif self._declared_too_large(scope):
            await error_response(413, too_large)(scope, receive, send_counted)
        else:
            seen = {"n": 0}

            async def receive_capped() -> Message:
                message = await receive()
                if message["type"] == "http.request":
                    seen["n"] += len(message.get("body", b""))
                    if seen["n"] > cap:
                        raise HTTPException(413, too_large)
                return message

            await self.app(scope, receive_capped, send_counted)
        self.metrics.request(scope["method"], route_label(scope["path"]), status["code"], time.perf_counter() - t0)

"""Every failure becomes an OpenAI-style JSON error naming the field: ``{"error": {"message", "type", "param",
"code"}}``. Bad input is a 4xx; only a bug in omniret is a 500 (logged, and the worker lives on)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from omniret.errors import OmniretError
from omniret.serve.batcher import QueueFullError
from omniret.serve.inputs import RequestError

log = logging.getLogger("omniret.serve")

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "request_too_large", 422: "invalid_request_error", 501: "not_implemented", 503: "server_busy"}


def error_response(status: int, message: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param,
                      "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field(loc: tuple[Any, ...]) -> str:
    """``("body", "input", 2, "content")`` -> ``input[2].content``."""
    out = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _validation_message(err: dict[str, Any]) -> tuple[int, str, str | None]:
    field = _field(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if kind == "json_invalid":
        return 400, f"request body: invalid JSON ({err.get('ctx', {}).get('error', 'syntax error')})", None
    if not field:
        return 400, "request body: must be a JSON object", None
    if kind == "extra_forbidden":
        return 422, f"{field}: unknown field", field
    if kind == "missing":
        return 422, f"{field}: required field missing", field
    return 422, f"{field}: {err.get('msg', 'invalid value')}", field


def exception_response(e: Exception, where: str = "") -> JSONResponse:
    """The JSON error for an exception raised while serving ``where`` (method and path, for the log). The most
    specific class wins, as with Starlette's handlers: RequestError and QueueFullError are OmniretErrors."""
    if isinstance(e, RequestError):
        return error_response(e.status, str(e), e.field)
    if isinstance(e, QueueFullError):
        return error_response(503, str(e), headers={"Retry-After": "1"})
    if isinstance(e, HTTPException):
        return error_response(e.status_code, str(e.detail), headers=getattr(e, "headers", None))
    if isinstance(e, OmniretError):
        return error_response(422, str(e))
    log.error("internal error on %s", where, exc_info=e)
    return error_response(500, f"internal error ({type(e).__name__}); see the server log")


def install_error_handlers(app: FastAPI) -> None:
    async def _mapped(request: Request, e: Exception) -> JSONResponse:
        return exception_response(e, f"{request.method} {request.url.path}")

    for kind in (RequestError, HTTPException, QueueFullError, OmniretError, Exception):
        app.add_exception_handler(kind, _mapped)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, e: RequestValidationError) -> JSONResponse:
        errs = e.errors()
        status, msg, field = _validation_message(errs[0] if errs else {})
        return error_response(status, msg, field)

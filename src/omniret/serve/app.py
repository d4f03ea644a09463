"""The FastAPI application: routes, static page, lifecycle. See :mod:`omniret.serve.service` for behaviour.

>>> from omniret import Retriever
>>> app = create_app(Retriever.open("demo-index"))      # then: uvicorn.run(app, host="127.0.0.1")
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from omniret.images import ImageError
from omniret.retriever import Reranker, Retriever
from omniret.serve.batcher import MicroBatcher
from omniret.serve.config import ServeConfig
from omniret.serve.errors import error_response, install_error_handlers
from omniret.serve.guard import Guard
from omniret.serve.hotpath import HotPath, hot_routes, render_json
from omniret.serve.media import Thumbnails
from omniret.serve.metrics import Metrics
from omniret.serve.protocol import EmbeddingsRequest, RerankRequest, SearchRequest
from omniret.serve.service import Service

STATIC = Path(__file__).parent / "static"


class FastJSON(Response):
    """JSON rendered by orjson (:func:`~omniret.serve.hotpath.render_json`): FastAPI's generic encoder walks every
    float of every embedding, which costs more than the forward pass of a short text."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return render_json(content)


def create_app(retriever: Retriever, config: ServeConfig | None = None, reranker: Reranker | None = None) -> FastAPI:
    """An ASGI app serving ``retriever`` (its encoder, index and reranker; ``reranker`` overrides the latter)."""
    cfg = config or ServeConfig()
    metrics = Metrics()
    batcher = MicroBatcher(retriever.encoder, cfg.max_batch, cfg.max_wait_ms, cfg.max_queue, on_batch=metrics.batch)
    metrics.queue_depth = batcher.depth
    svc = Service(retriever, cfg, batcher, reranker)
    thumbs = Thumbnails(retriever.index, cfg.max_image_pixels)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        # SIGTERM: uvicorn stops accepting and lets in-flight requests finish; then the queue drains here
        await run_in_threadpool(batcher.close)

    app = FastAPI(title="omniret", version=_version(), lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.service = svc
    install_error_handlers(app)
    # innermost first: the hot endpoints' lean path sits inside CORS and the Guard, so both still apply to it
    app.add_middleware(HotPath, routes=hot_routes(svc))
    if cfg.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(Guard, config=cfg, metrics=metrics)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return svc.health()

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return svc.models()

    # served by HotPath; these routes document the API (/docs) and answer what HotPath hands back (bad bodies)
    @app.post("/v1/embeddings")
    async def embeddings(req: EmbeddingsRequest) -> Response:
        return FastJSON(await svc.embeddings(req))

    @app.post("/v1/search")
    async def search(req: SearchRequest) -> Response:
        return FastJSON(await svc.search(req))

    @app.post("/v1/rerank")
    async def rerank(req: RerankRequest) -> Response:
        return FastJSON(await svc.rerank(req))

    @app.get("/media/{doc_id:path}")
    async def media(request: Request, doc_id: str, part: int = Query(0, ge=0),
                    size: int = Query(cfg.thumb_size, ge=16, le=1024)) -> Response:
        try:
            data = await run_in_threadpool(thumbs.get, doc_id, part, size)
        except ImageError:
            data = None
        if data is None:
            return error_response(404, "doc_id: no image of an indexed document by that id", "doc_id")
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})

    return app


def _version() -> str:
    from omniret import __version__

    return __version__

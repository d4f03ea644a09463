"""`omniret serve`: the HTTP API and web search page over one index (needs the ``serve`` extra)."""

from __future__ import annotations

import ipaddress
import sys

import typer

from omniret.cli.corpus import INDEX_OPT, quiet_model_loading
from omniret.errors import OmniretError


def load_reranker(name: str):  # noqa: ANN201 - an MLLMReranker; typed lazily to keep torch out of CLI start-up
    """``--reranker MODEL``: an MLLM directory (LLaVA-Next / Qwen2-VL / Qwen2.5-VL) through
    :func:`omniret.rerank.load_reranker`; its errors name the model."""
    from omniret.rerank import load_reranker as _load

    return _load(name)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve_cmd(
    index: str = INDEX_OPT,
    model: str | None = typer.Option(None, "--model", "-m", help="Encoder name or directory [the index's own]."),
    reranker: str | None = typer.Option(None, "--reranker", help="Reranker model for /v1/rerank and search."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 exposes the server)."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="TCP port (0: any free port)."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="OMNIRET_API_KEY", help="Require 'Authorization: Bearer KEY' on the API."
    ),
    cors_origin: list[str] | None = typer.Option(None, "--cors-origin", help="Allow this browser origin (repeatable)."),
    allow_remote_urls: bool = typer.Option(False, "--allow-remote-urls", help="Fetch http(s) image URLs."),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="Most items per encoder forward pass."),
    max_wait_ms: float = typer.Option(5.0, "--max-wait-ms", min=0, help="Longest wait for a batch to fill."),
    max_request_mb: float = typer.Option(20.0, "--max-request-mb", min=0.001, help="Request body cap."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="torch CPU threads [torch's default]."),
    keep_alive_s: int = typer.Option(120, "--keep-alive-s", min=1,
                                     help="Seconds an idle HTTP keep-alive connection stays open."),
) -> None:
    """Serve --index DIR over HTTP: OpenAI-compatible /v1/embeddings, /v1/search, /v1/rerank and a page at /."""
    try:
        import uvicorn

        from omniret.serve import ServeConfig, create_app
    except ImportError as e:
        raise OmniretError(f"omniret serve needs the serve extra: pip install 'omniret[serve]' ({e})") from e
    from omniret.index import index_exists
    from omniret.retriever import Retriever

    if not index_exists(index):
        raise OmniretError(f"--index {index}: no index there; build one with "
                           f"'omniret index FOLDER --index {index}' (or 'make demo' for demo-index)")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    cfg = ServeConfig(api_key=api_key, cors_origins=list(cors_origin or []), allow_remote_urls=allow_remote_urls,
                      max_batch=max_batch, max_wait_ms=max_wait_ms, max_request_bytes=int(max_request_mb * 1e6),
                      keep_alive_s=keep_alive_s)
    quiet_model_loading()
    retriever = Retriever.open(index, model)
    rr = load_reranker(reranker) if reranker else None
    if not _is_loopback(host) and api_key is None:
        print(f"warning: serving on {host} without --api-key: anyone who can reach it can query the index",
              file=sys.stderr)
    app = create_app(retriever, cfg, reranker=rr)
    print(f"omniret: serving {index} ({len(retriever.index)} documents, encoder {retriever.encoder.name}) "
          f"on http://{host}:{port}/", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30,
                timeout_keep_alive=cfg.keep_alive_s)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)

"""`omniret export` / `omniret import`: move an index between backends as shards, without re-encoding."""

from __future__ import annotations

from pathlib import Path

import typer

from omniret.cli.corpus import BACKEND_OPT, INDEX_OPT, URL_OPT, resolve_location
from omniret.errors import OmniretError


def export_cmd(
    out: Path = typer.Argument(..., help="New shard directory (vectors .npy + records .jsonl + shards.json)."),
    index: str = INDEX_OPT,
    page_size: int = typer.Option(10000, "--page-size", min=1, help="Documents per shard."),
) -> None:
    """Write every vector and record of an index (any backend) to a shard directory."""
    from omniret.index import open_index
    from omniret.index.shards import export_index

    ix = open_index(index)
    try:
        n = export_index(ix, out, page_size)
    finally:
        ix.close()
    typer.echo(f"{out}: exported {n} documents from the {ix.backend} index {ix.location}")


def import_cmd(
    src: Path = typer.Argument(..., help="A shard directory written by `omniret export` or `--engine ray`."),
    index: str = INDEX_OPT,
    backend: str | None = BACKEND_OPT,
    url: str | None = URL_OPT,
    kind: str | None = typer.Option(None, "--kind", help="flat or hnsw [the backend's default]."),
) -> None:
    """Load a shard directory into a new index of any backend."""
    from omniret.index.shards import import_index

    if not src.is_dir():
        raise OmniretError(f"{src}: no such shard directory")
    location = resolve_location(index, backend, url)
    ix = import_index(src, location, backend or "local", kind)
    ix.close()
    typer.echo(f"{ix.location}: imported {ix.manifest.count} documents "
               f"[{ix.kind}, {ix.backend}]")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
    app.command("import")(import_cmd)

"""`omniret index`, `omniret search`, `omniret info`: build, query and describe an embedded index."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from omniret.cli.escape import cell, clean, json_text
from omniret.errors import OmniretError

#: exit code of `omniret index` when it indexed and saved the good inputs but skipped some (listed on stderr)
SKIPPED_EXIT = 3
INDEX_OPT = typer.Option(
    ..., "--index", "-i", show_default=False,
    help="Index location: a directory (local or embedded Qdrant), postgresql://...#name or http://qdrant:6333#name.",
)
BACKEND_OPT = typer.Option(None, "--backend", help="New index: local (faiss, default), pgvector or qdrant.")
URL_OPT = typer.Option(
    None, "--url", help="Database for --backend pgvector (postgresql://...) or a Qdrant server (http://...); "
    "--index then names the table / collection."
)


def resolve_location(index: str, backend: str | None, url: str | None) -> str:
    """The index location that ``--index/--backend/--url`` spell (see omniret.index.backends)."""
    from omniret.index import BACKENDS, location_for

    if backend is not None and backend not in BACKENDS:
        raise OmniretError(f"--backend must be one of {', '.join(BACKENDS.names())}, got {backend!r}")
    if url is not None and backend is None:
        raise OmniretError("--url needs --backend pgvector or --backend qdrant")
    return location_for(index, backend or "local", url)


def encode_engine(engine: str, address: str | None, workers: int, gpus: float):
    """``None`` (encode in this process) or a :class:`~omniret.integrations.ray.RayEngine`."""
    if engine == "local":
        if address is not None or workers != 1 or gpus:
            raise OmniretError("--address, --workers and --gpus-per-worker need --engine ray")
        return None
    if engine != "ray":
        raise OmniretError(f"--engine must be local or ray, got {engine!r}")
    try:
        from omniret.integrations.ray import RayEngine
    except ImportError as e:  # pragma: no cover - the ray extra is installed by make install
        raise OmniretError(f"--engine ray needs `pip install omniret[ray]` ({e})") from e
    return RayEngine(workers=workers, gpus_per_worker=gpus, address=address)


def _shorten(s: str | None, n: int = 80) -> str:
    if not s:
        return ""
    s = " ".join(s.split())
    return s if len(s) <= n else s[: n - 1] + "…"


def quiet_model_loading() -> None:
    """Silence transformers' weight-loading progress bars: noise on a CLI that loads one model per run.

    Without importing transformers (~1 s of a cold start; the default encoder's ONNX runtime never needs it):
    transformers reads huggingface_hub's switch when it is first imported."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def index_cmd(
    path: Path = typer.Argument(..., help="A folder of images/texts or a candidate .jsonl file."),
    index: str = INDEX_OPT,
    backend: str | None = BACKEND_OPT,
    url: str | None = URL_OPT,
    model: str | None = typer.Option(None, "--model", "-m", help="Encoder name or directory [new index: default]."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1, help="Documents per encoder batch."),
    kind: str | None = typer.Option(
        None, "--kind", help="flat (exact), hnsw or ivfpq (local only) [new index: the backend's default]."
    ),
    storage: str | None = typer.Option(None, "--storage", help="New local ANN index: fp32, fp16 or int8 vectors."),
    exclude: list[str] | None = typer.Option(
        None, "--exclude", "-x", help="Glob of files to skip, on relative path or name (repeatable)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    strict: bool = typer.Option(False, "--strict", help="Stop at the first bad file; change nothing."),
    follow_symlinks: bool = typer.Option(
        False, "--follow-symlinks", help="Follow symlinks that lead outside the folder."
    ),
    allow_mass_delete: bool = typer.Option(
        False, "--allow-mass-delete", help="Allow removing most or all documents of PATH (e.g. it is now empty)."
    ),
    engine: str = typer.Option("local", "--engine", help="Encode here (local) or on a Ray cluster (ray)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to join (auto, ray://...) [start locally]."),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray: encoder actors (one model each)."),
    gpus_per_worker: float = typer.Option(0, "--gpus-per-worker", min=0, help="Ray: GPUs per actor."),
) -> None:
    """Index PATH into --index DIR; when DIR exists only new or changed documents are encoded.

    Bad files are skipped and listed at the end; the good ones are indexed and saved, and the exit code is 3.
    """
    from omniret.index import KINDS
    from omniret.retriever import Retriever

    if not path.exists():
        raise OmniretError(f"{path}: no such folder or file")
    if kind is not None and kind not in KINDS:
        raise OmniretError(f"--kind must be one of {', '.join(KINDS)}, got {kind!r}")
    location = resolve_location(index, backend, url)
    runner = encode_engine(engine, address, workers, gpus_per_worker)
    t0 = time.perf_counter()
    quiet_model_loading()
    r = Retriever.open_or_create(location, model, kind, backend, **({"storage": storage} if storage else {}))
    show = not quiet and sys.stdout.isatty()
    report = r.index_corpus(
        path,
        batch_size=batch_size,
        progress=show,
        exclude=exclude or (),
        strict=strict,
        follow_symlinks=follow_symlinks,
        allow_mass_delete=allow_mass_delete,
        engine=runner,
    )
    dt = time.perf_counter() - t0
    r.index.close()
    where, ix = r.index.location, r.index
    typer.echo(clean(f"{where}: {report} [{ix.kind}, encoder {r.encoder.name}, {ix.backend}, {dt:.1f}s]", one_line=True))
    if report.skipped:
        typer.echo(f"skipped {len(report.skipped)} input(s) (everything else was indexed and saved):", err=True)
        for s in report.skipped:
            typer.echo(f"  {clean(s, one_line=True)}", err=True)
        raise typer.Exit(SKIPPED_EXIT)


def search_cmd(
    text: str | None = typer.Argument(None, help="Query text (optional with --image)."),
    index: str = INDEX_OPT,
    image: Path | None = typer.Option(None, "--image", help="Query image (alone or with TEXT)."),
    instruction: str | None = typer.Option(None, "--instruction", help="Task instruction for the query."),
    modality: list[str] | None = typer.Option(
        None, "--modality", help="Only return text, image or image,text documents (repeat for several)."
    ),
    k: int = typer.Option(10, "-k", "--top-k", min=1, max=100_000, help="Number of results."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of hits."),
    rerank: str | None = typer.Option(
        None, "--rerank", help="Rerank with this MLLM (HF-layout directory of LLaVA-Next / Qwen2-VL / Qwen2.5-VL)."
    ),
    rerank_k: int = typer.Option(10, "--rerank-k", min=1, help="How many top hits the reranker reorders."),
    rerank_template: str | None = typer.Option(
        None, "--rerank-template", help="Rerank prompt: a template name, an M-BEIR task id, or text with {query} "
        "and {document}."
    ),
    precision: str | None = typer.Option(
        None, "--precision", help="Encoder precision: fp32, bf16, fp16, or int8 (default model, CPU) [fp32]."
    ),
) -> None:
    """Search an index with text, an image, or both; optionally rerank the top hits with an MLLM."""
    from omniret.index import parse_modalities
    from omniret.retriever import Retriever
    from omniret.types import Item

    if not text and image is None:
        raise OmniretError("nothing to search for: give query TEXT and/or --image PATH")
    if image is not None and not image.is_file():
        raise OmniretError(f"--image {image}: no such file")
    mods = None if not modality else (modality[0] if len(modality) == 1 else modality)
    parse_modalities(mods)  # fail before loading a model
    quiet_model_loading()
    r = Retriever.open(index, **({"precision": precision} if precision else {}))
    task = None
    if rerank is not None:
        from omniret.rerank import load_reranker, resolve_template

        if rerank_template is not None and "{document}" not in rerank_template:
            task, rerank_template = rerank_template, None
        resolve_template(rerank_template, task)  # fail on a bad template before loading the model
        r.reranker = load_reranker(rerank, template=rerank_template)
        r.rerank_k = rerank_k
    query = Item(text or None, image=str(image) if image is not None else None)
    hits = r.search(query, k=k, instruction=instruction, modality=mods, task=task)
    r.index.close()
    if as_json:
        typer.echo(json_text([h.to_dict() for h in hits], indent=2))
        return
    print_hits(hits, title=f"{len(hits)} hits for {_describe(text, image)}")


def _describe(text: str | None, image: Path | None) -> str:
    parts = ([f"image {image.name}"] if image is not None else []) + ([repr(text)] if text else [])
    return clean(" + ".join(parts), one_line=True)


def print_hits(hits, title: str = "") -> None:
    """A rich table of hits: rank, score, id, modality, text snippet, image path."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=cell(title, one_line=True), title_justify="left", show_lines=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    reranked = any(h.rerank_score is not None for h in hits)
    if reranked:
        table.add_column("rerank", justify="right", no_wrap=True)
    table.add_column("id", no_wrap=True)
    table.add_column("modality", no_wrap=True)
    table.add_column("text")  # the only column that wraps, so ids and scores stay whole
    for i, h in enumerate(hits, 1):
        rr = ([] if not reranked else ["" if h.rerank_score is None else f"{h.rerank_score:.4f}"])
        table.add_row(str(i), f"{h.score:.4f}", *rr, cell(h.id, True), h.modality,
                      cell(_shorten(clean(h.txt or "", True), 60)))
    Console().print(table)


def info_cmd(
    index: str = INDEX_OPT,
    as_json: bool = typer.Option(False, "--json", help="Print the facts as JSON."),
) -> None:
    """Describe an index: backend, encoder, recipe hash, dimension, kind, document counts."""
    from omniret.index import open_index

    ix = open_index(index)
    facts = ix.info()
    ix.close()
    if as_json:
        typer.echo(json_text(facts, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, title=cell(f"index {index}", True), title_justify="left")
    for key, val in facts.items():
        if key in ("created", "updated") and val is not None:
            val = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(val))
        elif isinstance(val, dict):
            val = ", ".join(f"{k}: {v}" for k, v in val.items())
        table.add_row(key, cell("" if val is None else val, True))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("index")(index_cmd)
    app.command("search")(search_cmd)
    app.command("info")(info_cmd)

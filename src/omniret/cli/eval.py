"""`omniret eval mbeir|mmeb|beir`: benchmark an encoder and write results.json, results.md, charts, TREC runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

eval_app = typer.Typer(help="Evaluate an encoder on M-BEIR, MMEB or BEIR-layout data.", no_args_is_help=True)

_MODEL = typer.Option("default", "--model", "-m", help="Registered model name or saved model directory.")
_OUT = typer.Option(..., "--out", "-o", help="Output directory (results.json, results.md, runs/, charts).")
_DEVICE = typer.Option(None, help="Encoder device, e.g. cuda.")
_PRECISION = typer.Option(None, help="fp32 | bf16 | fp16 | int8 (int8: default model on CPU).")
_THREADS = typer.Option(None, help="torch CPU threads (default: torch's choice).")
_BATCH = typer.Option(32, help="Encoding batch size.")


def _encoder(model: str, device: str | None, precision: str | None, threads: int | None = None):
    import torch

    from omniret.encoders import load_encoder

    if threads:
        torch.set_num_threads(threads)  # on small shared CPUs one thread is often faster and steadier

    opts: dict[str, Any] = {}
    if device:
        opts["device"] = device
    if precision:
        opts["precision"] = precision
    return load_encoder(model, **opts)


def _split_list(values: list[str] | None) -> list[str] | None:
    out = [v.strip() for raw in values or [] for v in raw.split(",") if v.strip()]
    return out or None


def _cache(cache_dir: Path | None, no_cache: bool) -> Path | None:
    from omniret.eval.cache import default_cache_dir

    return None if no_cache else (cache_dir or default_cache_dir())


_RERANK = typer.Option(None, "--rerank", help="Also rerank each query's top hits with this MLLM directory.")
_RERANK_K = typer.Option(10, "--rerank-k", min=1, help="How many top hits the reranker reorders.")
_RERANK_TPL = typer.Option(None, "--rerank-template", help="One rerank prompt for every task (default: per task).")


def _stage(model: str | None, k: int, template: str | None, device: str | None):
    """The reranked stage, or None; a bad template fails before any model loads."""
    if model is None:
        return None
    from omniret.eval.rerank_stage import RerankStage
    from omniret.rerank import load_reranker, resolve_template

    if template is not None:
        resolve_template(template)
    return RerankStage(load_reranker(model, template=template, **({"device": device} if device else {})), k)


def _print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(h)
    for r in rows:
        t.add_row(*[str(c) for c in r])
    Console().print(t)


@eval_app.command("mbeir")
def mbeir(
    root: Path = typer.Option(..., "--root", help="Directory in M-BEIR layout."),
    model: str = _MODEL,
    out: Path = _OUT,
    split: str = typer.Option("test", help="Query split: query/<split>/."),
    tasks: list[str] = typer.Option(None, "--tasks", help="Only these tasks (<dataset>_task<k>, comma separated)."),
    pool: str = typer.Option("local", help="local | global | both."),
    instruction_mode: str = typer.Option("fixed", help="fixed (first prompt) | random (UniIR) | none."),
    seed: int = typer.Option(0, help="Seed of the random instruction pick."),
    batch_size: int = _BATCH,
    cache_dir: Path = typer.Option(None, help="Embedding cache (default ~/.cache/omniret/emb)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write cached pool embeddings."),
    skip_missing_images: bool = typer.Option(False, help="Skip (and count) records whose image file is missing."),
    allow_missing_positives: bool = typer.Option(
        False, help="Count positives missing from a pool as misses (reported per task) instead of failing."
    ),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    threads: int = _THREADS,
    rerank: str = _RERANK,
    rerank_k: int = _RERANK_K,
    rerank_template: str = _RERANK_TPL,
    engine: str = typer.Option("local", "--engine", help="Encode pools here (local) or on a Ray cluster (ray)."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to join (auto, ray://...)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray: encoder actors (one model each)."),
    gpus_per_worker: float = typer.Option(0, "--gpus-per-worker", min=0, help="Ray: GPUs per actor."),
) -> None:
    """Recall@1/5/10 (UniIR hit@k) and modality accuracy per task, on the local and/or global pool; with
    --rerank also the reranked stage (and mAP@k for tasks with several positives), side by side."""
    from omniret.cli.corpus import encode_engine
    from omniret.eval.preflight import preflight_mbeir
    from omniret.eval.report import write_mbeir_report
    from omniret.eval.runner import MBeirOptions, evaluate_mbeir

    pools = ("local", "global") if pool == "both" else (pool,)
    opts = MBeirOptions(
        split=split, tasks=_split_list(tasks), pools=pools, instruction_mode=instruction_mode, seed=seed,
        batch_size=batch_size, cache_dir=_cache(cache_dir, no_cache), skip_missing_images=skip_missing_images,
        progress=True, allow_missing_positives=allow_missing_positives,
        engine=encode_engine(engine, address, workers, gpus_per_worker),
    )
    opts.validate()
    # every task's files are checked before spending time loading the model
    preflight_mbeir(root, split, opts.tasks, tuple(opts.pools), instruction_mode)
    stage = _stage(rerank, rerank_k, rerank_template, device)
    res = write_mbeir_report(out, evaluate_mbeir(root, _encoder(model, device, precision, threads), opts, out=out,
                                                 rerank=stage))
    rows = [[e["name"], e["pool"], e["n_queries"], f"{100 * e['recall@1']:.1f}", f"{100 * e['recall@5']:.1f}",
             f"{100 * e['recall@10']:.1f}", f"{100 * e['modality_accuracy@1']:.1f}"] for e in res["tasks"]]
    for p, avg in res["average"].items():
        rows.append(["average", p, "", f"{100 * avg['recall@1']:.1f}", f"{100 * avg['recall@5']:.1f}",
                     f"{100 * avg['recall@10']:.1f}", f"{100 * avg['modality_accuracy@1']:.1f}"])
    _print_table(f"M-BEIR: {res['model']['name']}", ["task", "pool", "n", "R@1", "R@5", "R@10", "MA@1"], rows)
    if stage is not None:
        first = {(e["name"], e["pool"]): e for e in res["tasks"]}
        rows = [[e["name"], e["pool"], *[f"{100 * first[(e['name'], e['pool'])][m]:.1f} → {100 * e[m]:.1f}"
                                         for m in ("recall@1", "recall@5", "recall@10")],
                 f"{100 * e['map@5']:.1f}" if "map@5" in e else ""] for e in res["rerank"]["tasks"]]
        _print_table(f"reranked top {rerank_k} by {res['rerank']['model']}",
                     ["task", "pool", "R@1", "R@5", "R@10", "mAP@5"], rows)
    typer.echo(f"wrote {out / 'results.json'}, {out / 'results.md'} and {len(res['tasks'])} runs in {out / 'runs'}")


@eval_app.command("mmeb")
def mmeb(
    root: Path = typer.Option(..., "--root", help="Directory of <dataset>.jsonl|.parquet MMEB eval files."),
    model: str = _MODEL,
    out: Path = _OUT,
    datasets: list[str] = typer.Option(None, "--datasets", help="Only these data sets (comma separated)."),
    image_root: Path = typer.Option(None, help="Image paths are relative to this (default: --root)."),
    batch_size: int = _BATCH,
    skip_missing_images: bool = typer.Option(False, help="Skip (and count) rows with a missing image."),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    threads: int = _THREADS,
    rerank: str = _RERANK,
    rerank_k: int = _RERANK_K,
    rerank_template: str = _RERANK_TPL,
) -> None:
    """hit@1 over each query's own candidates; per data set, meta-task, IND/OOD and overall (and after
    reranking each query's top candidates with --rerank)."""
    from omniret.eval.mmeb_runner import evaluate_mmeb
    from omniret.eval.preflight import preflight_mmeb
    from omniret.eval.report import write_simple_report

    # every data set's files are read and checked before spending time loading the model
    preflight_mmeb(root, _split_list(datasets), image_root, skip_missing_images)
    stage = _stage(rerank, rerank_k, rerank_template, device)
    res = evaluate_mmeb(root, _encoder(model, device, precision, threads), _split_list(datasets), image_root, batch_size,
                        skip_missing_images, progress=True, out=out, rerank=stage)
    write_simple_report(out, res, "MMEB", "datasets", ["name", "meta_task", "split", "n_queries", "hit@1"])
    rows = [[d["name"], d["meta_task"], d["split"], d["n_queries"], f"{100 * d['hit@1']:.1f}"] for d in res["datasets"]]
    rows += [["overall", "", "", "", f"{100 * res['overall']:.1f}"]]
    _print_table(f"MMEB: {res['model']['name']}", ["data set", "meta-task", "split", "n", "hit@1"], rows)
    if stage is not None:
        first = {d["name"]: d["hit@1"] for d in res["datasets"]}
        rows = [[d["name"], f"{100 * first[d['name']]:.1f} → {100 * d['hit@1']:.1f}"] for d in res["rerank"]["datasets"]]
        rows += [["overall", f"{100 * res['overall']:.1f} → {100 * res['rerank']['overall']:.1f}"]]
        _print_table(f"reranked top {rerank_k} by {res['rerank']['model']}", ["data set", "hit@1 retr → rerank"], rows)
    typer.echo(f"wrote {out / 'results.json'}")


@eval_app.command("beir")
def beir(
    root: Path = typer.Option(..., "--root", help="Directory with corpus.jsonl, queries.jsonl, qrels/<split>.tsv."),
    model: str = _MODEL,
    out: Path = _OUT,
    split: str = typer.Option("test", help="qrels/<split>.tsv"),
    instruction: str = typer.Option(None, help="Query-side task instruction."),
    batch_size: int = _BATCH,
    cache_dir: Path = typer.Option(None, help="Embedding cache (default ~/.cache/omniret/emb)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write cached corpus embeddings."),
    allow_missing_positives: bool = typer.Option(
        False, help="Count judged documents missing from corpus.jsonl as misses instead of failing."
    ),
    device: str = _DEVICE,
    precision: str = _PRECISION,
    threads: int = _THREADS,
) -> None:
    """nDCG@10, Recall@100 and MRR@10 with exact search."""
    from omniret.eval.beir_runner import evaluate_beir
    from omniret.eval.preflight import preflight_beir
    from omniret.eval.report import write_simple_report

    preflight_beir(root, split, allow_missing_positives)  # every file checked before loading the model
    res = evaluate_beir(root, _encoder(model, device, precision, threads), split, instruction, batch_size,
                        cache_dir=_cache(cache_dir, no_cache), progress=True, out=out,
                        allow_missing_positives=allow_missing_positives)
    cols = ["name", "n_queries", "n_docs", "ndcg@10", "recall@100", "mrr@10"]
    write_simple_report(out, res, "BEIR", "tasks", cols)
    rows = [[t["name"], t["n_queries"], t["n_docs"], *[f"{100 * t[c]:.1f}" for c in cols[3:]]] for t in res["tasks"]]
    _print_table(f"BEIR: {res['model']['name']}", cols, rows)
    typer.echo(f"wrote {out / 'results.json'}")


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")

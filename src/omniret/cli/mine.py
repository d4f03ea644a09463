"""`omniret mine`: modality-aware hard negatives for M-BEIR-layout training queries (METHODS.md §2.5)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def mine_cmd(
    root: Path = typer.Argument(..., help="M-BEIR-layout root (query/<split>/, cand_pool/, instructions/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the mined query JSONL files."),
    model: str = typer.Option("default", "--model", "-m", help="Encoder name or saved model directory."),
    split: str = typer.Option("train", "--split", help="Query split to mine."),
    pool: Path | None = typer.Option(None, "--pool", help="Candidate pool (default: cand_pool/global/mbeir_union_<split>_cand_pool.jsonl)."),
    queries: Path | None = typer.Option(None, "--queries", help="A query file or directory instead of query/<split>/."),
    top_n: int = typer.Option(50, "--top-n", min=1, help="Candidates retrieved per query (N)."),
    min_rank: int = typer.Option(45, "--min-rank", min=0, help="Right-modality negatives must rank below this (M)."),
    count: int = typer.Option(1, "--count", min=1, help="Negatives written per query."),
    mix: str = typer.Option("union", "--mix", help="union, wrong_modality or right_modality."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (also seeds --instruction-mode random)."),
    instruction_mode: str = typer.Option("fixed", help="Query instructions: fixed (first prompt) | random | none."),
    batch_size: int = typer.Option(32, "--batch-size", "-b", min=1),
) -> None:
    """Write each query's neg_cand_list: wrong-modality candidates from the top N and right-modality ones below M."""
    from omniret.encoders import load_encoder
    from omniret.training.config import ConfigError, MineConfig, SourceConfig
    from omniret.training.mining import mine_source

    if mix not in ("union", "wrong_modality", "right_modality"):
        raise ConfigError(f"--mix must be union, wrong_modality or right_modality, got {mix!r}")
    if min_rank >= top_n:
        raise ConfigError(f"--min-rank ({min_rank}) must be smaller than --top-n ({top_n})")
    src = SourceConfig(kind="mbeir", path=str(root), split=split, pool=str(pool) if pool else None,
                       queries=str(queries) if queries else None)
    cfg = MineConfig(model=model, top_n=top_n, min_rank=min_rank, count=count, mix=mix, seed=seed)
    stats = mine_source(load_encoder(model), src, out, cfg, batch_size=batch_size, instruction_mode=instruction_mode,
                        seed=seed)
    typer.echo(json.dumps({"out": str(out), **stats}))


def register(app: typer.Typer) -> None:
    app.command("mine")(mine_cmd)

"""`omniret models`: the model families and the registered checkpoint names, with their recipes;
`omniret models make-tiny FAMILY DIR`: a tiny random checkpoint for smoke runs and tests."""

from __future__ import annotations

from pathlib import Path

import typer


def _rows() -> tuple[list[tuple[str, str]], list[tuple[str, str, str, str]]]:
    """(families as (name, summary), registered names as (name, family, local?, summary))."""
    from omniret.encoders import ENCODERS, FAMILIES, load_builtins
    from omniret.encoders.hub import CHECKPOINTS, _hf_cache, _models_dir_candidates

    load_builtins()
    fams = [(n, FAMILIES.help(n)) for n in FAMILIES.names()]
    names = []
    for n in ENCODERS.names():
        ck = CHECKPOINTS.get(n)
        if ck is None:  # bundled / non-checkpoint encoders (e.g. "default")
            names.append((n, "-", "bundled", ENCODERS.help(n)))
            continue
        local = any((c / "config.json").is_file() for c in _models_dir_candidates(n)) or _hf_cache(n) is not None
        names.append((n, ck.family, "yes" if local else "no", ck.summary))
    return fams, names


models_app = typer.Typer(help="Model families and registered names.", invoke_without_command=True)


@models_app.callback()
def models_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """List model families and registered model names (and whether their weights are available locally)."""
    if ctx.invoked_subcommand is not None:
        return
    fams, names = _rows()
    if as_json:
        import json

        typer.echo(json.dumps({
            "families": [{"name": n, "recipe": s} for n, s in fams],
            "models": [{"name": n, "family": f, "local": loc, "recipe": s} for n, f, loc, s in names],
        }, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    t = Table(title="model families  (load_encoder(path, family=NAME))")
    t.add_column("family", style="bold")
    t.add_column("recipe")
    for n, s in fams:
        t.add_row(n, s)
    console.print(t)
    t = Table(title="registered names  (load_encoder(NAME); 'local' = weights found offline)")
    for col in ("name", "family", "local", "recipe"):
        t.add_column(col, style="bold" if col == "name" else None, overflow="fold")
    for row in names:
        t.add_row(*row)
    console.print(t)


@models_app.command("make-tiny")
def make_tiny_cmd(
    family: str = typer.Argument(..., help="gme, vlm2vec, rematch, mmembed, clip, siglip or omni-mini."),
    out: Path = typer.Argument(..., help="Directory to write (load it with load_encoder(DIR))."),
    seed: int = typer.Option(0, help="Weight initialisation seed."),
) -> None:
    """Write a tiny random checkpoint of FAMILY (random weights: for smoke runs and tests, not retrieval)."""
    from omniret.encoders.tiny import make_tiny

    typer.echo(f"tiny {family} model: {make_tiny(family, out, seed=seed)}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")

"""`omniret eval lodo CONFIG`: leave-one-domain-out evaluation (train without a domain, test on it)."""

from __future__ import annotations

from pathlib import Path

import typer

from omniret.cli.eval import eval_app
from omniret.errors import OmniretError


@eval_app.command("lodo")
def lodo(
    config: Path = typer.Argument(..., help="Training config (YAML); its mbeir sources are replaced per fold."),
    domains_root: Path = typer.Option(..., "--domains-root", help="Built domains (omniret data build domains)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output directory (per-fold runs, lodo.json, lodo.md)."),
    domains: str = typer.Option("noto,twemoji,clipart", help="Comma-separated domains (subdirectories)."),
    wordnet: Path = typer.Option(None, "--wordnet", help="WordNet BEIR root: also report nDCG@10 per fold."),
    baseline: str = typer.Option("conse-minilm", help="Model scored beside each fold's trained model."),
    max_steps: int = typer.Option(None, "--max-steps", min=1, help="Override every stage's optim.max_steps."),
    threads: int = typer.Option(None, help="torch CPU threads."),
    folds: str = typer.Option(None, help="Comma-separated held-out domains to run (default: every domain)."),
) -> None:
    """For each domain: train on the others, then score it (R@10 both ways, union-pool MA@1) beside a baseline."""
    import torch

    from omniret.training.config import load_config
    from omniret.training.lodo import run_lodo

    if threads:
        torch.set_num_threads(threads)
    names = [d.strip() for d in domains.split(",") if d.strip()]
    roots = {n: domains_root / n for n in names}
    absent = [str(r) for r in roots.values() if not r.is_dir()]
    if absent:
        raise OmniretError(f"--domains-root: no such domain directories: {', '.join(absent)}")
    res = run_lodo(load_config(config), roots, out, baseline=baseline, wordnet=wordnet, max_steps=max_steps,
                   log=typer.echo, folds=[f.strip() for f in folds.split(",") if f.strip()] if folds else None)
    typer.echo((out / "lodo.md").read_text())
    typer.echo(f"wrote {out / 'lodo.json'} ({len(res['folds'])} folds)")


def register(app: typer.Typer) -> None:
    """The command lives on the ``eval`` group, which :mod:`omniret.cli.eval` registers."""

"""`omniret train CONFIG.yaml`: run (or resume) a staged contrastive training recipe.

Rerunning the same command after an interruption continues from the last checkpoint. Under ``torchrun``
every process runs the same command; negatives are gathered across processes.
"""

from __future__ import annotations

from pathlib import Path

import typer


def train_cmd(
    config: Path = typer.Argument(..., help="Training config (YAML; see configs/omniret-mini/)."),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help="Override the config's output_dir."),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Override optim.max_steps of every stage."),
) -> None:
    """Train an encoder from CONFIG; prints one JSON line per logged step and the final model directory."""
    import dataclasses

    from omniret.training.config import load_config
    from omniret.training.stages import run_training

    cfg = load_config(config)
    if output_dir is not None:
        cfg.output_dir = str(output_dir.resolve())
    if max_steps is not None:
        cfg.optim.max_steps = max_steps
        cfg.stages = [dataclasses.replace(s, optim=dataclasses.replace(s.optim, max_steps=max_steps)) if s.optim else s
                      for s in cfg.stages]
    final = run_training(cfg.validate(), log=typer.echo)
    typer.echo(f"model: {final}")


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)

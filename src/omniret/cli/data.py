"""`omniret data build emoji|wordnet DIR`: build real offline benchmarks into a directory."""

from __future__ import annotations

import json
from pathlib import Path

import typer

data_app = typer.Typer(help="Data sets: build real offline benchmarks.", no_args_is_help=True)
build_app = typer.Typer(help="Build a benchmark from redistributable Debian packages.", no_args_is_help=True)
data_app.add_typer(build_app, name="build")

_CACHE = typer.Option(None, "--cache-dir", help="Debian package cache (default ~/.cache/omniret/debian).")


@build_app.command("emoji")
def build_emoji(
    out: Path = typer.Argument(..., help="Output directory (M-BEIR layout)."),
    cache_dir: Path = _CACHE,
    size: int = typer.Option(96, help="Rendered image side in pixels."),
    test_fraction: float = typer.Option(0.3, help="Share of emoji held out for test."),
    seed: int = typer.Option(0, help="Split seed."),
    limit: int = typer.Option(None, help="Use only the first N emoji (quick builds)."),
) -> None:
    """Noto Color Emoji pictures + Unicode names: text->image and image->text tasks, local and global pools."""
    from omniret.data.builders.emoji_bench import build_emoji_benchmark

    manifest = build_emoji_benchmark(out, cache_dir, size=size, test_fraction=test_fraction, seed=seed, limit=limit)
    typer.echo(json.dumps(manifest, indent=2))
    typer.echo(f"evaluate with: omniret eval mbeir --root {out} --model default --pool both --out {out}-results")


@build_app.command("wordnet")
def build_wordnet(
    out: Path = typer.Argument(..., help="Output directory (BEIR layout; training split in train/)."),
    cache_dir: Path = _CACHE,
    test_docs: int = typer.Option(5000, help="Documents (lemma strings) in the test corpus."),
    test_queries: int = typer.Option(1000, help="Test queries (definitions)."),
    seed: int = typer.Option(0, help="Split seed."),
) -> None:
    """WordNet reverse dictionary: definition -> lemma string, disjoint train/test."""
    from omniret.data.builders.wordnet import build_wordnet_benchmark

    manifest = build_wordnet_benchmark(out, cache_dir, test_docs=test_docs, test_queries=test_queries, seed=seed)
    typer.echo(json.dumps(manifest, indent=2))
    typer.echo(f"evaluate with: omniret eval beir --root {out} --model default --out {out}-results")


@build_app.command("domains")
def build_domains(
    out: Path = typer.Argument(..., help="Output directory: one M-BEIR root per domain (OUT/NAME)."),
    domains: str = typer.Option("noto,twemoji,clipart", help="Comma-separated domains: noto, twemoji, clipart, openmoji."),
    cache_dir: Path = typer.Option(None, "--cache-dir", help="Package cache (default ~/.cache/omniret/{debian,npm})."),
    size: int = typer.Option(96, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Split seed (by concept, shared by all domains)."),
    limit: int = typer.Option(None, help="Use only the first N samples per domain (quick builds)."),
) -> None:
    """A mixture of real image/caption domains (emoji designs, clip art) for leave-one-domain-out evaluation."""
    from omniret.data.builders.domains import build_domain

    for name in [d.strip() for d in domains.split(",") if d.strip()]:
        manifest = build_domain(name, out / name, cache_dir, size=size, seed=seed, limit=limit)
        typer.echo(json.dumps(manifest))


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")

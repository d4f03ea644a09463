"""Evaluation reports: ``results.json`` (stable schema), ``results.md`` (tables) and PNG charts.

Charts need matplotlib (the ``eval`` extra); without it the JSON and Markdown are still written and the
report lists no charts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omniret.eval.benchmarks import MBEIR_KS
from omniret.io import atomic_write_text


def _atomic_write(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def write_json(path: str | os.PathLike, results: dict[str, Any]) -> Path:
    p = Path(path)
    _atomic_write(p, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return p


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def mbeir_markdown(results: dict[str, Any]) -> str:
    """One table per pool: per-task R@1/5/10, headline and modality accuracy (×100), then the average."""
    model = results["model"]
    parts = [
        f"# M-BEIR evaluation: {model['name']}",
        "",
        f"Root `{results['root']}`, split `{results['split']}`, instructions `{results['instruction_mode']}`. "
        "Recall@k is UniIR's hit@k (×100); MA@k = modality accuracy, the share of top-k results in the task's "
        "target modality (×100).",
    ]
    header = ["task", "n", *[f"R@{k}" for k in MBEIR_KS], "headline", *[f"MA@{k}" for k in MBEIR_KS]]
    for pool in results["pools"]:
        es = [e for e in results["tasks"] if e["pool"] == pool]
        rows = [
            [e["name"], e["n_queries"], *[_pct(e[f"recall@{k}"]) for k in MBEIR_KS],
             f"{_pct(e['headline_value'])} (R@{e['headline'].split('@')[1]})",
             *[_pct(e[f"modality_accuracy@{k}"]) for k in MBEIR_KS]]
            for e in es
        ]
        avg = results["average"].get(pool)
        if avg:
            rows.append(["**average**", "", *[_pct(avg[f"recall@{k}"]) for k in MBEIR_KS], _pct(avg["headline_value"]),
                         *[_pct(avg[f"modality_accuracy@{k}"]) for k in MBEIR_KS]])
        pool_size = es[0]["pool_size"] if es else 0
        parts += ["", f"## {pool} pool" + (f" ({pool_size} candidates)" if pool == "global" else ""), "",
                  md_table(header, rows)]
    if results.get("rerank"):
        parts += ["", rerank_markdown(results)]
    sk = results.get("skipped", {})
    if sk.get("queries_missing_image") or sk.get("candidates_missing_image"):
        parts += ["", f"Skipped for missing images: {sk['queries_missing_image']} queries, "
                      f"{sk['candidates_missing_image']} candidates."]
    return "\n".join(parts) + "\n"


def rerank_markdown(results: dict[str, Any]) -> str:
    """Retrieval and reranked stages side by side, per pool: R@k and (where defined) mAP@k, ×100."""
    rr = results["rerank"]
    first = {(e["name"], e["pool"]): e for e in results["tasks"]}
    keys = [f"recall@{k}" for k in MBEIR_KS] + [f"map@{k}" for k in MBEIR_KS[1:]]
    header = ["task", *[f"{k.replace('recall', 'R')} retr → rerank" for k in keys]]
    parts = [f"## reranked stage: top {rr['k']} by `{rr['model']}` (weight {rr['weight']}, {rr['timing_s']} s)"]
    for pool in results["pools"]:
        rows = []
        for e in (e for e in rr["tasks"] if e["pool"] == pool):
            base = first[(e["name"], pool)]
            rows.append([e["name"], *[f"{_pct(base[k])} → {_pct(e[k])}" if k in e else "" for k in keys]])
        parts += ["", f"### {pool} pool", "", md_table(header, rows)]
    return "\n".join(parts)


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _bars(path: Path, names: list[str], series: dict[str, list[float]], title: str, ylabel: str) -> Path | None:
    plt = _plt()
    if plt is None or not names:
        return None
    import numpy as np

    x = np.arange(len(names))
    w = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(names) + 2), 3.8))
    for i, (label, vals) in enumerate(series.items()):
        ax.bar(x + (i - (len(series) - 1) / 2) * w, [100 * v for v in vals], w, label=label)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mbeir_charts(out: Path, results: dict[str, Any]) -> list[str]:
    """``recall.png`` (headline recall per task, one bar per pool) and, for the global pool,
    ``modality_accuracy.png`` (MA@1/5/10 per task). Returns the file names written."""
    written = []
    names = sorted({e["name"] for e in results["tasks"]})
    by = {(e["name"], e["pool"]): e for e in results["tasks"]}
    series = {
        f"{pool} R@k(headline)": [by[(n, pool)]["headline_value"] if (n, pool) in by else 0.0 for n in names]
        for pool in results["pools"]
    }
    if _bars(out / "recall.png", names, series, f"{results['model']['name']}: headline recall", "recall (%)"):
        written.append("recall.png")
    if results.get("rerank"):
        rr = {(e["name"], e["pool"]): e for e in results["rerank"]["tasks"]}
        series = {}
        for pool in results["pools"]:
            series[f"{pool} retrieval"] = [by[(n, pool)]["headline_value"] if (n, pool) in by else 0.0 for n in names]
            series[f"{pool} reranked"] = [rr[(n, pool)]["headline_value"] if (n, pool) in rr else 0.0 for n in names]
        title = f"{results['model']['name']} + rerank top {results['rerank']['k']}: headline recall"
        if _bars(out / "rerank.png", names, series, title, "recall (%)"):
            written.append("rerank.png")
    glob = [e for e in results["tasks"] if e["pool"] == "global"]
    if glob:
        gnames = [e["name"] for e in glob]
        series = {f"MA@{k}": [e[f"modality_accuracy@{k}"] for e in glob] for k in MBEIR_KS}
        title = f"{results['model']['name']}: modality accuracy, global pool"
        if _bars(out / "modality_accuracy.png", gnames, series, title, "share of top-k in target modality (%)"):
            written.append("modality_accuracy.png")
    return written


def write_mbeir_report(out: str | os.PathLike, results: dict[str, Any]) -> dict[str, Any]:
    """Write ``results.json``, ``results.md`` and the charts into ``out``; returns the results with a
    ``charts`` list added."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = {**results, "charts": mbeir_charts(out, results)}
    write_json(out / "results.json", results)
    _atomic_write(out / "results.md", mbeir_markdown(results))
    return results


def write_simple_report(out: str | os.PathLike, results: dict[str, Any], title: str, rows_key: str,
                        columns: Sequence[str]) -> None:
    """JSON + a one-table Markdown for MMEB / BEIR results (``rows_key`` lists dicts with ``columns``)."""
    out = Path(out)
    write_json(out / "results.json", results)
    rows = [[r.get(c, "") if not isinstance(r.get(c), float) else f"{100 * r[c]:.1f}" for c in columns]
            for r in results[rows_key]]
    text = f"# {title}: {results['model']['name']}\n\nValues ×100.\n\n{md_table(list(columns), rows)}\n"
    rr = results.get("rerank")
    if rr and rows_key in rr:
        first = {r["name"]: r for r in results[rows_key]}
        metrics = [c for c in columns if isinstance(results[rows_key][0].get(c), float)] if results[rows_key] else []
        side = [[r["name"], *[f"{_pct(first[r['name']][m])} → {_pct(r[m])}" for m in metrics]] for r in rr[rows_key]]
        text += (f"\n## reranked stage: top {rr['k']} by `{rr['model']}` ({rr['timing_s']} s)\n\n"
                 f"{md_table(['name', *[m + ' retr → rerank' for m in metrics]], side)}\n")
    _atomic_write(out / "results.md", text)

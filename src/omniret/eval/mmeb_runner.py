"""MMEB evaluation (VLM2Vec protocol, METHODS.md §1.2 / §5.6).

Each query is scored only against its own candidate list (the target is listed first); the metric is
hit@1 (= precision@1), ties counting against the target. Reported per dataset, per meta-task (mean over
its datasets), IND / OOD means and the overall mean over data sets — all unweighted, as the papers do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omniret.data.mmeb import MMEBEvalRow
from omniret.encoders.base import Encoder
from omniret.eval.benchmarks import mmeb_dataset_info
from omniret.eval.metrics import hit_at_1_first_is_target
from omniret.eval.preflight import preflight_mmeb
from omniret.eval.rerank_stage import RerankStage
from omniret.eval.trec import write_trec
from omniret.types import Item


def _unique(items: list[Item]) -> tuple[list[Item], list[int]]:
    """Deduplicate by content (MMEB classification rows share their label candidates)."""
    pos: dict[str, int] = {}
    uniq: list[Item] = []
    where = []
    for it in items:
        fp = it.fingerprint()
        if fp not in pos:
            pos[fp] = len(uniq)
            uniq.append(it)
        where.append(pos[fp])
    return uniq, where


def score_dataset(
    rows: list[MMEBEvalRow], encoder: Encoder, batch_size: int = 32, progress: bool = False
) -> tuple[list[float], list[np.ndarray]]:
    """Per-row hit@1 and the row's candidate scores ``(C_i,)`` (target first)."""
    q_emb = encoder.encode_queries([r.query for r in rows], batch_size=batch_size, progress=progress)
    flat = [c for r in rows for c in r.candidates]
    uniq, where = _unique(flat)
    c_emb = encoder.encode_documents(uniq, batch_size=batch_size, progress=progress)
    hits, all_scores, s = [], [], 0
    for i, r in enumerate(rows):
        idx = where[s : s + len(r.candidates)]
        s += len(r.candidates)
        scores = c_emb[idx] @ q_emb[i]
        all_scores.append(scores)
        hits.append(hit_at_1_first_is_target(scores))
    return hits, all_scores


def rerank_dataset(rows: list[MMEBEvalRow], scores: list[np.ndarray], name: str, stage: RerankStage
                   ) -> tuple[list[float], dict[str, list[tuple[str, float]]]]:
    """Per-row hit@1 after ``stage`` reorders each row's top candidates (target = ``c0``), and the stage's run."""
    hits, run = [], {}
    for i, (row, sc) in enumerate(zip(rows, scores, strict=True)):
        ranked = sorted(((f"c{j}", float(v)) for j, v in enumerate(sc)), key=lambda t: -t[1])
        # MMEB's instructions say the task; the generic template carries them ({instruction})
        out = stage.rerank(row.query, ranked, lambda d, row=row: row.candidates[int(d[1:])], task=None)
        run[f"{name}:{i}"] = out
        hits.append(float(out[0][0] == "c0"))
    return hits, run


def _mean(xs: Sequence[float]) -> float | None:
    return round(float(np.mean(xs)), 4) if xs else None


def evaluate_mmeb(
    root: str | os.PathLike,
    encoder: Encoder,
    datasets: Sequence[str] | None = None,
    image_root: str | os.PathLike | None = None,
    batch_size: int = 32,
    skip_missing_images: bool = False,
    progress: bool = False,
    out: str | os.PathLike | None = None,
    rerank: RerankStage | None = None,
) -> dict[str, Any]:
    """Evaluate on every ``<dataset>.jsonl|.parquet`` under ``root`` (or only ``datasets``).

    With ``out``, a TREC run per data set (``runs/<dataset>.trec``; candidate ids ``c<j>``, ``c0`` = target)
    is written so hit@1 can be recomputed by any tool. With ``rerank`` each query's top ``rerank.k``
    candidates are reordered too (hit@1 = the target ranks first), reported under ``results["rerank"]`` with
    runs ``runs/<dataset>.rerank.trec``.
    """
    checked = preflight_mmeb(root, datasets, image_root, skip_missing_images)
    per, per_rr, skipped, t0 = [], [], 0, time.perf_counter()
    for name, (rows, dropped) in checked.items():
        skipped += dropped
        hits, scores = score_dataset(rows, encoder, batch_size, progress)
        meta, dist = mmeb_dataset_info(name)
        per.append({"name": name, "meta_task": meta or "other", "split": dist or "n/a",
                    "n_queries": len(rows), "hit@1": round(float(np.mean(hits)), 4)})
        if out is not None:
            run = {f"{name}:{i}": sorted(((f"c{j}", float(v)) for j, v in enumerate(sc)), key=lambda t: -t[1])
                   for i, sc in enumerate(scores)}
            write_trec(Path(out) / "runs" / f"{name}.trec", run, depth=max(len(s) for s in scores))
        if rerank is not None:
            rr_hits, rr_run = rerank_dataset(rows, scores, name, rerank)
            per_rr.append({**per[-1], "hit@1": round(float(np.mean(rr_hits)), 4)})
            if out is not None:
                write_trec(Path(out) / "runs" / f"{name}.rerank.trec", rr_run, depth=max(len(s) for s in scores))
    metas = sorted({p["meta_task"] for p in per})
    extra = {} if rerank is None else {"rerank": {**rerank.describe(), "datasets": per_rr,
                                                  "overall": _mean([p["hit@1"] for p in per_rr])}}
    return {
        "benchmark": "mmeb",
        "root": str(root),
        "model": {"name": encoder.name, "recipe_hash": encoder.recipe_hash, "dim": encoder.dim},
        "metric_semantics": "hit@1 over each query's own candidates, target = first candidate, ties count as misses",
        "datasets": per,
        "meta_tasks": {m: _mean([p["hit@1"] for p in per if p["meta_task"] == m]) for m in metas},
        "ind": _mean([p["hit@1"] for p in per if p["split"] == "IND"]),
        "ood": _mean([p["hit@1"] for p in per if p["split"] == "OOD"]),
        "overall": _mean([p["hit@1"] for p in per]),
        "skipped_rows_missing_image": skipped,
        "timing_s": round(time.perf_counter() - t0, 2),
        **extra,
    }

"""M-BEIR evaluation with UniIR's semantics (METHODS.md §1.1, §5.6).

For every task file ``query/<split>/mbeir_<dataset>_task<k>_<split>.jsonl``:

1. queries get their task instruction from :class:`omniret.data.mbeir.QueryInstructions` (the same lookup
   training and mining use): keyed by (dataset id of the qid, query modality, modality of the first positive
   candidate), the first prompt (``fixed``, default, reproducible) or a per-query seeded uniform pick
   (``random``, UniIR's behaviour). The prompt goes to ``Item.instruction`` so each encoder family applies
   its own template (UniIR's CLIP prepends ``f"{prompt} {query_txt}"``); texts pass through UniIR's
   ``format_string`` (:meth:`omniret.data.mbeir.MBeirRecord.to_item`);
2. candidates are encoded without instruction (cached on disk per (model, pool file));
3. exact inner-product search over the ``local`` pool (the task's own file) and/or the ``global`` pool
   (the split's union file, every task's queries against all modalities);
4. hit@1/5/10 ("Recall@k" in UniIR), averaged per task grouped by the qrels task id, and modality
   accuracy@k = share of top-k results whose modality is the task's target modality.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from omniret.data.mbeir import (
    INSTRUCTION_MODES,
    MBeirRecord,
    MBeirTask,
    QueryInstructions,
    global_pool_file,
    missing_images,
    read_pool,
    read_queries,
    target_modality,
)
from omniret.data.qrels import Qrels, read_qrels
from omniret.encoders.base import Encoder
from omniret.errors import DataError
from omniret.eval.benchmarks import MBEIR_KS, mbeir_headline_k
from omniret.eval.cache import cached_embeddings, default_cache_dir, precision_tag
from omniret.eval.metrics import average_precision_at_k, hit_at_k, modality_accuracy_at_k
from omniret.eval.preflight import check_positives, missing_positives, preflight_mbeir
from omniret.eval.rerank_stage import RerankStage
from omniret.eval.trec import write_trec
from omniret.index.exact import topk_inner_product

POOLS = ("local", "global")


@dataclass
class MBeirOptions:
    """Knobs of :func:`evaluate_mbeir`. ``cache_dir=None`` disables the embedding cache."""

    split: str = "test"
    tasks: Sequence[str] | None = None
    pools: Sequence[str] = ("local",)
    instruction_mode: str = "fixed"
    seed: int = 0
    batch_size: int = 32
    cache_dir: Path | None = field(default_factory=default_cache_dir)
    skip_missing_images: bool = False
    depth: int = 100
    progress: bool = False
    #: a positive missing from a pool is an error; with this flag it is counted (``missing_positives``)
    allow_missing_positives: bool = False
    #: where candidate pools are encoded: ``None`` (this process) or an engine such as
    #: :class:`omniret.integrations.ray.RayEngine` (``encode_documents`` yielding ``(vectors, records)``)
    engine: Any = None

    def validate(self) -> None:
        bad = [p for p in self.pools if p not in POOLS]
        if bad or not self.pools:
            raise DataError(f"pool must be one of {', '.join(POOLS)} (or 'both'), got {', '.join(bad) or 'none'}")
        if self.instruction_mode not in INSTRUCTION_MODES:
            raise DataError(f"instruction mode must be one of {', '.join(INSTRUCTION_MODES)}, got {self.instruction_mode!r}")
        if self.depth < max(MBEIR_KS):
            raise DataError(f"depth must be >= {max(MBEIR_KS)}, got {self.depth}")


@dataclass
class _Pool:
    file: Path
    records: list[MBeirRecord]
    emb: np.ndarray  # (N, D)
    ids: list[str] = field(init=False)
    modalities: list[str] = field(init=False)
    row_of: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        self.ids = [r.id for r in self.records]
        self.modalities = [r.modality for r in self.records]
        self.row_of = {d: j for j, d in enumerate(self.ids)}


class _Run:
    """State of one evaluation: options, encoder, skip counters, loaded pools."""

    def __init__(self, root: Path, encoder: Encoder, opts: MBeirOptions, stage: RerankStage | None = None) -> None:
        self.root, self.encoder, self.opts, self.stage = root, encoder, opts, stage
        self.model_key = f"{encoder.name}-{encoder.recipe_hash}" + precision_tag(encoder)
        self.skipped = {"queries_missing_image": 0, "candidates_missing_image": 0, "paths": []}
        self.pools: dict[Path, _Pool] = {}
        self._records: dict[Path, list[MBeirRecord]] = {}
        self.pool_ids: dict[Path, set[str]] = {}
        self.modality_of: dict[str, str] = {}
        self.encode_s = 0.0

    def _drop_missing(self, records: list[MBeirRecord], file: Path, kind: str) -> list[MBeirRecord]:
        missing = set(missing_images(records, self.root))
        if not missing:
            return records
        if not self.opts.skip_missing_images:
            first = sorted(missing)[0]
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(
                f"{file}: image not found: {self.root / first}{more}; pass --skip-missing-images to skip and count them"
            )
        kept = [r for r in records if r.img_path not in missing]
        self.skipped[f"{kind}_missing_image"] += len(records) - len(kept)
        self.skipped["paths"] = sorted(set(self.skipped["paths"]) | missing)[:50]
        return kept

    def read(self, file: Path) -> list[MBeirRecord]:
        """The pool's records (minus skipped missing images), read once."""
        if file not in self._records:
            raw = read_pool(file)
            self.pool_ids[file] = {r.id for r in raw}  # before skipping missing images: those are counted
            recs = self._drop_missing(raw, file, "candidates")
            if not recs:
                raise DataError(f"{file}: candidate pool is empty")
            self._records[file] = recs
        return self._records[file]

    def _encode_pool(self, items: list) -> np.ndarray:
        """``(N, D)`` document vectors of ``items``, in order, here or on the options' engine."""
        opts = self.opts
        if opts.engine is None:
            return self.encoder.encode_documents(items, batch_size=opts.batch_size, progress=opts.progress)
        chunks = [v for v, _ in opts.engine.encode_documents(self.encoder, items, opts.batch_size)]
        opts.engine.done()
        return np.concatenate(chunks) if chunks else np.zeros((0, self.encoder.dim), np.float32)

    def pool(self, file: Path) -> _Pool:
        if file not in self.pools:
            recs = self.read(file)
            t0 = time.perf_counter()
            emb, _ = cached_embeddings(
                self.opts.cache_dir, self.model_key, file, [r.id for r in recs],
                lambda: self._encode_pool([r.to_item(self.root) for r in recs]),
            )
            self.encode_s += time.perf_counter() - t0
            self.pools[file] = _Pool(file, recs, emb)
            self.modality_of.update({r.id: r.modality for r in recs})
        return self.pools[file]


def _score_task(
    name: str, tid: int, pool_kind: str, qids: list[str], rows: list[int], idx: np.ndarray, pool: _Pool, qrels: Qrels,
    stage: str = "",
) -> dict[str, Any]:
    """Metrics for the queries ``rows`` of one (task, pool); ``idx`` is ``(Q, depth)`` pool indices. Tasks
    whose queries have several positives also get CIRCO's mAP@k."""
    target = target_modality(tid)
    ids, mods = pool.ids, pool.modalities
    entry: dict[str, Any] = {"name": name, "task_id": tid, "pool": pool_kind, "n_queries": len(rows)}
    hits = {k: 0.0 for k in MBEIR_KS}
    macc = {k: 0.0 for k in MBEIR_KS}
    for r in rows:
        ranked = [ids[j] for j in idx[r]]
        ranked_mods = [mods[j] for j in idx[r]]
        for k in MBEIR_KS:
            hits[k] += hit_at_k(qrels.rel.get(qids[r], {}), ranked, k)
            macc[k] += modality_accuracy_at_k(ranked_mods, target, k)
    n = max(1, len(rows))
    for k in MBEIR_KS:
        entry[f"recall@{k}"] = round(hits[k] / n, 4)
    for k in MBEIR_KS:
        entry[f"modality_accuracy@{k}"] = round(macc[k] / n, 4)
    if any(sum(v > 0 for v in qrels.rel.get(qids[r], {}).values()) > 1 for r in rows):
        for k in MBEIR_KS[1:]:
            ap = [average_precision_at_k(qrels.rel.get(qids[r], {}), [ids[j] for j in idx[r]], k) for r in rows]
            entry[f"map@{k}"] = round(sum(ap) / n, 4)
    head = mbeir_headline_k(name)
    entry.update(headline=f"recall@{head}", headline_value=entry[f"recall@{head}"], target_modality=target)
    entry.update(pool_size=len(ids), run=_run_path(name, pool_kind, stage))
    return entry


def _run_path(name: str, pool_kind: str, stage: str = "") -> str:
    return f"runs/{name}.{pool_kind}{'.' + stage if stage else ''}.trec"


@dataclass
class _Checked:
    """One task after its files were read and checked: queries, judgements, pool file and missing positives
    per pool kind."""

    task: MBeirTask
    queries: list[MBeirRecord]
    qrels: Qrels
    pool_file: dict[str, Path]
    missing: dict[str, int]


def _check_task(task: MBeirTask, run: _Run) -> _Checked:
    """Read ``task``'s queries, qrels and pools (pools once per run) and apply the missing-positive policy —
    for every task before the first is encoded, so a broken last task costs no encoding."""
    opts = run.opts
    pools = {
        "local": lambda: task.local_pool_file or _no_local(task),
        "global": lambda: global_pool_file(run.root, opts.split),
    }
    queries = run._drop_missing(read_queries(task.query_file), task.query_file, "queries")
    qrels = read_qrels(task.qrels_file)
    unjudged = [q.id for q in queries if q.id not in qrels.task_of]
    if unjudged:
        raise DataError(f"{task.qrels_file}: query {unjudged[0]!r} from {task.query_file.name} has no qrels line")
    files = {kind: pools[kind]() for kind in opts.pools}
    missing: dict[str, int] = {}
    # a positive the pool file lacks would silently lower recall (a candidate dropped by skip_missing_images
    # is the user's explicit choice and counts as a miss, under "skipped")
    for kind, file in files.items():
        run.read(file)
        miss = missing_positives(qrels.rel, [q.id for q in queries], run.pool_ids[file])
        missing[kind] = check_positives(file, task.name, f"this {kind} pool", miss, opts.allow_missing_positives)
    return _Checked(task, queries, qrels, files, missing)


def _eval_task(checked: _Checked, run: _Run, instructions: QueryInstructions, out: Path | None) -> list[dict]:
    opts, task, queries, qrels, missing = run.opts, checked.task, checked.queries, checked.qrels, checked.missing
    loaded = {kind: run.pool(file) for kind, file in checked.pool_file.items()}
    # a query without task_id takes the task of its file for the instruction key
    queries = [q if q.task_id is not None else replace(q, task_id=task.task_id) for q in queries]
    items = [q.to_item(run.root, instructions(q, run.modality_of.get(q.pos[0]) if q.pos else None)) for q in queries]
    t0 = time.perf_counter()
    q_emb = run.encoder.encode_queries(items, batch_size=opts.batch_size, progress=opts.progress)
    run.encode_s += time.perf_counter() - t0
    qids = [q.id for q in queries]
    # UniIR groups per-task means by the qrels task id (a file normally holds one task)
    groups: dict[int, list[int]] = {}
    for r, q in enumerate(qids):
        groups.setdefault(qrels.task_of[q], []).append(r)
    entries = []
    for kind, pool in loaded.items():
        scores, idx = topk_inner_product(q_emb, pool.emb, opts.depth)
        for tid, rows in sorted(groups.items()):
            name = f"{task.dataset}_task{tid}"
            entries.append(_score_task(name, tid, kind, qids, rows, idx, pool, qrels))
            if opts.allow_missing_positives:
                entries[-1]["missing_positives"] = missing[kind]
            ranked = {qids[r]: [(pool.ids[j], float(s)) for j, s in zip(idx[r], scores[r], strict=True)] for r in rows}
            if out is not None:
                write_trec(out / _run_path(name, kind), ranked, depth=opts.depth)
            if run.stage is not None:
                entries.append(_rerank_task(run, pool, name, tid, kind, qids, rows, items, ranked, qrels, out))
    return entries


def _rerank_task(run: _Run, pool: _Pool, name: str, tid: int, kind: str, qids: list[str], rows: list[int],
                 items: list, ranked: dict[str, list[tuple[str, float]]], qrels: Qrels, out: Path | None) -> dict:
    """The reranked stage of one (task, pool): rerank each query's top k, score it, write its TREC run."""
    def item_of(did: str):
        return pool.records[pool.row_of[did]].to_item(run.root)

    reranked = {qids[r]: run.stage.rerank(items[r], ranked[qids[r]], item_of, task=name) for r in rows}
    idx = np.zeros((len(qids), max(len(v) for v in reranked.values())), dtype=np.int64)
    for r in rows:
        order = [pool.row_of[d] for d, _ in reranked[qids[r]]]
        idx[r, : len(order)] = order
    entry = _score_task(name, tid, kind, qids, rows, idx, pool, qrels, stage="rerank")
    if out is not None:
        write_trec(out / entry["run"], reranked, depth=run.opts.depth)
    return {**entry, "stage": "rerank"}


def _no_local(task: MBeirTask) -> Path:
    raise DataError(
        f"{task.name}: no local pool cand_pool/local/mbeir_{task.dataset}_task{task.task_id}_cand_pool.jsonl"
    )


def _averages(entries: list[dict]) -> dict[str, dict[str, float]]:
    """Unweighted mean over tasks per pool (the papers' "average" column)."""
    out: dict[str, dict[str, float]] = {}
    for kind in POOLS:
        es = [e for e in entries if e["pool"] == kind]
        if not es:
            continue
        keys = [f"recall@{k}" for k in MBEIR_KS] + [f"modality_accuracy@{k}" for k in MBEIR_KS] + ["headline_value"]
        avg = {k: round(float(np.mean([e[k] for e in es])), 4) for k in keys}
        avg["n_tasks"] = len(es)
        out[kind] = avg
    return out


def evaluate_mbeir(
    root: str | os.PathLike, encoder: Encoder, options: MBeirOptions | None = None, out: str | os.PathLike | None = None,
    rerank: RerankStage | None = None,
) -> dict[str, Any]:
    """Evaluate ``encoder`` on the M-BEIR-layout directory ``root``.

    Returns the ``results.json`` dict (``tasks``: one entry per (task, pool); ``average`` per pool). With
    ``out`` the TREC runs (``runs/<name>.<pool>.trec``, top ``depth``) are written there as well; use
    :func:`omniret.eval.report.write_mbeir_report` for JSON/Markdown/PNG. With ``rerank`` the reranked stage
    (each query's top ``rerank.k`` reordered, per-task prompt by task name) is scored the same way under
    ``results["rerank"]``, its runs in ``runs/<name>.<pool>.rerank.trec``.
    """
    opts = options or MBeirOptions()
    opts.validate()
    root = Path(root)
    tasks = preflight_mbeir(root, opts.split, opts.tasks, tuple(opts.pools), opts.instruction_mode)
    instructions = QueryInstructions(root, opts.instruction_mode, opts.seed)
    run = _Run(root, encoder, opts, rerank)
    out_dir = Path(out) if out is not None else None
    t0 = time.perf_counter()
    checked = [_check_task(task, run) for task in tasks]  # every task's pools read before any encoding
    every = [e for c in checked for e in _eval_task(c, run, instructions, out_dir)]
    every.sort(key=lambda e: (POOLS.index(e["pool"]), e["name"]))
    entries = [e for e in every if "stage" not in e]
    reranked = [e for e in every if e.get("stage") == "rerank"]
    extra = {} if rerank is None else {"rerank": {**rerank.describe(), "tasks": reranked,
                                                  "average": _averages(reranked)}}
    return {
        "benchmark": "mbeir",
        "root": str(root),
        "split": opts.split,
        "model": {"name": encoder.name, "recipe_hash": encoder.recipe_hash, "dim": encoder.dim},
        "instruction_mode": opts.instruction_mode,
        "seed": opts.seed,
        "pools": list(opts.pools),
        "metric_semantics": "UniIR: recall@k = hit@k (1 if any positive in top k), mean per task",
        "tasks": entries,
        "average": _averages(entries),
        "skipped": run.skipped,
        "timing_s": {"encode": round(run.encode_s, 2), "total": round(time.perf_counter() - t0, 2)},
        **extra,
    }

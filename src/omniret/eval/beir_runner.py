"""BEIR-layout text retrieval evaluation: nDCG@10, Recall@100 and MRR@10 (trec_eval definitions)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from omniret.encoders.base import Encoder
from omniret.eval.cache import cached_embeddings, precision_tag
from omniret.eval.metrics import mean_metric
from omniret.eval.preflight import preflight_beir
from omniret.eval.trec import write_trec
from omniret.index.exact import topk_inner_product

#: (result key, metric, k)
BEIR_METRICS = (("ndcg@10", "ndcg", 10), ("recall@100", "recall", 100), ("mrr@10", "mrr", 10))


def evaluate_beir(
    root: str | os.PathLike,
    encoder: Encoder,
    split: str = "test",
    instruction: str | None = None,
    batch_size: int = 32,
    depth: int = 100,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    out: str | os.PathLike | None = None,
    allow_missing_positives: bool = False,
) -> dict[str, Any]:
    """Encode the corpus (cached per model + corpus file) and the judged queries (with ``instruction``),
    search exactly, and score. With ``out`` the run is written to ``runs/<name>.trec`` (top ``depth``).
    A judged document missing from the corpus is an error; with ``allow_missing_positives`` it counts as a
    miss and the row reports ``missing_positives``."""
    root = Path(root)
    data, n_missing = preflight_beir(root, split, allow_missing_positives)
    t0 = time.perf_counter()
    dids, docs = data.corpus_items()
    model_key = f"{encoder.name}-{encoder.recipe_hash}" + precision_tag(encoder)
    d_emb, _ = cached_embeddings(
        cache_dir, model_key, root / "corpus.jsonl", dids,
        lambda: encoder.encode_documents(docs, batch_size=batch_size, progress=progress),
    )
    qids, queries = data.query_items()
    q_emb = encoder.encode_queries(queries, instruction=instruction, batch_size=batch_size, progress=progress)
    scores, idx = topk_inner_product(q_emb, d_emb, max(depth, 100))
    ranked = {q: [dids[j] for j in idx[i]] for i, q in enumerate(qids)}
    name = root.name
    if out is not None:
        run = {q: [(dids[j], float(s)) for j, s in zip(idx[i], scores[i], strict=True)] for i, q in enumerate(qids)}
        write_trec(Path(out) / "runs" / f"{name}.trec", run, depth=depth)
    row: dict[str, Any] = {"name": name, "n_queries": len(qids), "n_docs": len(dids)}
    if allow_missing_positives:
        row["missing_positives"] = n_missing
    row.update({key: round(mean_metric(m, ranked, data.qrels, k), 4) for key, m, k in BEIR_METRICS})
    return {
        "benchmark": "beir",
        "root": str(root),
        "split": split,
        "instruction": instruction,
        "model": {"name": encoder.name, "recipe_hash": encoder.recipe_hash, "dim": encoder.dim},
        "tasks": [row],
        "timing_s": round(time.perf_counter() - t0, 2),
    }

"""Leave-one-domain-out (LODO) evaluation: for each domain, train without it, test on it, beside a baseline.

This measures what a newcomer sees on data the model has never seen. For every held-out domain ``D`` of a
mixture (:mod:`omniret.data.builders.domains`, one M-BEIR root per domain):

1. the training config's ``mbeir`` sources (top level and per stage) are replaced by the *train* splits of
   every other domain (same weight each); other sources (text pairs) are kept;
2. the recipe is trained into ``OUT/D/run`` (rerunning resumes, like ``omniret train``);
3. the trained model and the baseline (``conse-minilm`` by default) are scored on ``D``'s *test* split:
   local-pool Recall@10 in both directions (caption → image, image → caption) and union-pool modality
   accuracy@1; with a WordNet BEIR root, nDCG@10 of the trained model too (text retrieval must survive).

Domains share concept-level splits, so test concepts are never trained on in any style.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omniret.encoders import Encoder, load_encoder
from omniret.errors import DataError
from omniret.eval.beir_runner import evaluate_beir
from omniret.eval.runner import MBeirOptions, evaluate_mbeir
from omniret.io import atomic_write_json, atomic_write_text
from omniret.training.config import DataConfig, SourceConfig, TrainConfig


def _swap_sources(data: DataConfig | None, train_roots: Sequence[Path]) -> DataConfig | None:
    """``data`` with its mbeir sources replaced by one train-split source per root (other kinds kept)."""
    if data is None:
        return None
    mbeir = [s for s in data.sources if s.kind == "mbeir"]
    if not mbeir:
        return data
    weight = mbeir[0].weight
    new = [SourceConfig(kind="mbeir", path=str(r), split="train", weight=weight) for r in train_roots]
    return dataclasses.replace(data, sources=new + [s for s in data.sources if s.kind != "mbeir"])


def lodo_config(base: TrainConfig, held_out: str, roots: dict[str, Path], out: Path, max_steps: int | None) -> TrainConfig:
    """The training config for one fold: every domain but ``held_out``, written under ``out/held_out/run``."""
    train_roots = [r for name, r in roots.items() if name != held_out]
    if not train_roots:
        raise DataError("leave-one-domain-out needs at least two domains")
    cfg = dataclasses.replace(base, output_dir=str((out / held_out / "run").resolve()),
                              data=_swap_sources(base.data, train_roots))
    stages = [dataclasses.replace(s, data=_swap_sources(s.data, train_roots)) for s in cfg.stages]
    if max_steps is not None:
        cfg.optim = dataclasses.replace(cfg.optim, max_steps=max_steps)
        stages = [dataclasses.replace(s, optim=dataclasses.replace(s.optim, max_steps=max_steps)) if s.optim else s
                  for s in stages]
    cfg.stages = stages
    return cfg.validate()


def score_domain(root: Path, encoder: Encoder, batch_size: int = 32) -> dict[str, float]:
    """Local R@10 per direction and union-pool MA@1 per direction on ``root``'s test split (×1, not ×100)."""
    res = evaluate_mbeir(root, encoder, MBeirOptions(split="test", pools=("local", "global"), batch_size=batch_size))
    out: dict[str, float] = {}
    for e in res["tasks"]:
        direction = "t2i" if e["task_id"] == 0 else "i2t"
        if e["pool"] == "local":
            out[f"R@10 {direction}"] = e["recall@10"]
        else:
            out[f"MA@1 {direction}"] = e["modality_accuracy@1"]
    return out


def run_lodo(
    base: TrainConfig, roots: dict[str, Path], out: Path, *, baseline: str = "conse-minilm",
    wordnet: Path | None = None, max_steps: int | None = None, log: Callable[[str], None] = print,
    folds: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every fold (or only the held-out domains in ``folds``, e.g. to run folds in parallel processes);
    writes ``out/lodo.json`` and ``out/lodo.md`` and returns the JSON dict."""
    from omniret.training.stages import run_training

    missing = [str(r) for r in roots.values() if not (r / "query" / "test").is_dir()]
    if missing:
        raise DataError(f"not a built domain (no query/test): {', '.join(missing)}")
    unknown = sorted(set(folds or ()) - set(roots))
    if unknown:
        raise DataError(f"folds {', '.join(unknown)} are not among the domains {', '.join(roots)}")
    base_enc = load_encoder(baseline)
    results = []
    for held_out, root in roots.items():
        if folds and held_out not in folds:
            continue
        cfg = lodo_config(base, held_out, roots, out, max_steps)
        log(f"[lodo] {held_out}: training on {', '.join(n for n in roots if n != held_out)} -> {cfg.output_dir}")
        final = run_training(cfg, log=log)
        model = load_encoder(final)
        fold = {"domain": held_out, "model_dir": str(final), "trained": score_domain(root, model),
                "baseline": score_domain(root, base_enc)}
        if wordnet is not None:
            fold["wordnet_ndcg@10"] = evaluate_beir(wordnet, model)["tasks"][0]["ndcg@10"]
        log(f"[lodo] {held_out}: {json.dumps(fold)}")
        results.append(fold)
    result = {"baseline": baseline, "max_steps": max_steps, "folds": results}
    atomic_write_json(out / "lodo.json", result)
    atomic_write_text(out / "lodo.md", markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    """One row per (held-out domain, model): R@10 both directions, MA@1 both directions, WordNet nDCG@10."""
    cols = ["R@10 t2i", "R@10 i2t", "MA@1 t2i", "MA@1 i2t"]
    lines = ["| held-out domain | model | " + " | ".join(cols) + " | WordNet nDCG@10 |",
             "|---" * (len(cols) + 3) + "|"]
    for f in result["folds"]:
        for who, scores, wn in (("trained (without it)", f["trained"], f.get("wordnet_ndcg@10")),
                                (result["baseline"], f["baseline"], None)):
            cells = [f"{100 * scores.get(c, float('nan')):.1f}" for c in cols]
            lines.append(f"| {f['domain']} | {who} | " + " | ".join(cells) + f" | {'' if wn is None else f'{100 * wn:.1f}'} |")
    return "\n".join(lines) + "\n"

"""Pre-flight checks of an evaluation (M-BEIR, BEIR, MMEB): every task's query, qrels and pool (or corpus)
file exists, is a readable regular file, parses and is non-empty, every query is judged, and no positive is
missing from the pool it is ranked in — all before a model is loaded or a pool encoded, so a broken last
task fails in seconds instead of after an hour of encoding the earlier ones.

The three benchmarks share one mechanism: :func:`read_checked` reads a file with the benchmark's own parser
and turns every way it can fail into a :class:`DataError` naming the file; :func:`check_positives` applies
the one missing-positive policy (an error, or with ``allow`` a count reported per task). The evaluators
call their preflight themselves, and the CLI calls it before loading the model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from omniret.data.beir import BeirData, check_beir_root, read_corpus
from omniret.data.beir import read_queries as read_beir_queries
from omniret.data.mbeir import (
    INSTRUCTIONS_RELPATH,
    MBeirTask,
    discover_tasks,
    global_pool_file,
    read_queries,
)
from omniret.data.mmeb import MMEBEvalRow, dataset_files, item_missing_images, read_eval
from omniret.data.qrels import Qrels, read_qrels
from omniret.errors import DataError

T = TypeVar("T")
ALLOW_FLAG = "--allow-missing-positives"


def read_checked(path: Path, reader: Callable[[Path], T], what: str, size: Callable[[T], int] = len) -> T:
    """``reader(path)``, failing with a one-line :class:`DataError` naming ``path`` when it is missing, not
    a regular file, unreadable, malformed (the reader's own error) or holds no ``what``."""
    if not path.is_file():
        raise DataError(f"{path}: no such {what} file" if not path.exists() else f"{path}: not a regular file")
    try:
        out = reader(path)
    except DataError:
        raise
    except (OSError, ValueError) as e:  # permissions, a bad parquet footer, ...
        raise DataError(f"{path}: cannot read {what} ({getattr(e, 'strerror', None) or e})") from None
    if size(out) == 0:
        raise DataError(f"{path}: no {what}")
    return out


def missing_positives(qrels_rel: dict[str, dict[str, int]], qids: list[str], pool_ids: set[str]) -> list[tuple[str, str]]:
    """``(qid, did)`` of every positive of ``qids`` that is not in the pool (it could never be retrieved)."""
    return [(q, d) for q in qids for d in qrels_rel.get(q, {}) if d not in pool_ids]


def check_positives(where: Path, task: str, pool: str, missing: list[tuple[str, str]], allow: bool) -> int:
    """How many positives of ``task`` are missing from ``pool`` (``where`` names its file); an error unless
    ``allow`` — a positive that cannot be retrieved silently lowers recall."""
    if missing and not allow:
        q, d = missing[0]
        raise DataError(f"{where}: {len(missing)} positive(s) of {task} are not in {pool} (first: query {q!r} -> "
                        f"{d!r}); pass {ALLOW_FLAG} to count them as misses")
    return len(missing)


def _qrels_size(q: Qrels) -> int:
    return len(q.rel)


def preflight_mbeir(root: str | Path, split: str, tasks: list[str] | None, pools: tuple[str, ...],
                    instruction_mode: str) -> list[MBeirTask]:
    """The tasks to evaluate, after checking every file they need (missing positives are checked per pool
    by the runner, which reads the pools anyway)."""
    root = Path(root)
    found = discover_tasks(root, split, tasks)
    tsv = root / INSTRUCTIONS_RELPATH
    if instruction_mode != "none" and not tsv.is_file():
        raise DataError(f"{tsv}: no instructions file; add one (UniIR's TSV format) or pass --instruction-mode none")
    if "global" in pools:
        global_pool_file(root, split)  # raises, naming the folder, when the split has no global pool
    for task in found:
        if "local" in pools and task.local_pool_file is None:
            raise DataError(
                f"{task.name}: no local pool cand_pool/local/mbeir_{task.dataset}_task{task.task_id}_cand_pool.jsonl"
            )
        queries = read_checked(task.query_file, read_queries, "queries")
        qrels = read_checked(task.qrels_file, read_qrels, "qrels", _qrels_size)
        unjudged = [q.id for q in queries if q.id not in qrels.task_of]
        if unjudged:
            raise DataError(f"{task.qrels_file}: query {unjudged[0]!r} from {task.query_file.name} has no qrels line")
    return found


def preflight_beir(root: str | Path, split: str, allow_missing_positives: bool = False) -> tuple[BeirData, int]:
    """The BEIR split read and checked, and how many judged positives are missing from ``corpus.jsonl``."""
    root = Path(root)
    check_beir_root(root, split)
    qrels_file = root / "qrels" / f"{split}.tsv"
    data = BeirData(
        corpus=read_checked(root / "corpus.jsonl", read_corpus, "documents"),
        queries=read_checked(root / "queries.jsonl", read_beir_queries, "queries"),
        qrels=read_checked(qrels_file, read_qrels, "relevant judgements", _qrels_size).rel,
    )
    unknown = [q for q in data.qrels if q not in data.queries]
    if unknown:
        raise DataError(f"{qrels_file}: query {unknown[0]!r} is not in queries.jsonl")
    miss = missing_positives(data.qrels, list(data.qrels), set(data.corpus))
    return data, check_positives(qrels_file, root.name, "corpus.jsonl", miss, allow_missing_positives)


def _drop_missing_images(rows: list[MMEBEvalRow], name: str, skip: bool) -> tuple[list[MMEBEvalRow], int]:
    kept, dropped = [], 0
    for i, row in enumerate(rows):
        missing = [p for it in (row.query, *row.candidates) for p in item_missing_images(it)]
        if not missing:
            kept.append(row)
        elif skip:
            dropped += 1
        else:
            raise DataError(f"{name} row {i + 1}: image not found: {missing[0]}; pass --skip-missing-images to skip")
    return kept, dropped


def preflight_mmeb(root: str | Path, datasets: Sequence[str] | None, image_root: str | Path | None,
                   skip_missing_images: bool) -> dict[str, tuple[list[MMEBEvalRow], int]]:
    """``{data set: (evaluable rows, rows dropped for a missing image)}`` after reading every file. MMEB has
    no qrels: each row's target is its first candidate, so no positive can be missing from its pool."""
    files = dataset_files(root)
    if datasets:
        bad = [d for d in datasets if d not in files]
        if bad:
            raise DataError(f"{root}: unknown MMEB data set(s) {', '.join(bad)}; found: {', '.join(files)}")
        files = {d: files[d] for d in datasets}
    img_root = Path(image_root) if image_root is not None else Path(root)
    out: dict[str, tuple[list[MMEBEvalRow], int]] = {}
    for name, fs in files.items():
        rows: list[Any] = [r for f in fs for r in read_checked(f, lambda p, n=name: read_eval([p], img_root, n), "rows")]
        kept, dropped = _drop_missing_images(rows, name, skip_missing_images)
        if not kept:
            raise DataError(f"{name}: no evaluable rows (all {dropped} have a missing image)")
        out[name] = (kept, dropped)
    return out

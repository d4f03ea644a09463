"""Pre-flight checks of an M-BEIR evaluation: every task's query, qrels and pool file exists, every query
file has queries and every query is judged — all before a model is loaded or a pool encoded, so a broken
last task fails in seconds instead of after an hour of encoding the earlier ones."""

from __future__ import annotations

from pathlib import Path

from omniret.data.mbeir import (
    INSTRUCTIONS_RELPATH,
    MBeirTask,
    discover_tasks,
    global_pool_file,
    read_queries,
)
from omniret.data.qrels import read_qrels
from omniret.errors import DataError


def preflight_mbeir(root: str | Path, split: str, tasks: list[str] | None, pools: tuple[str, ...],
                    instruction_mode: str) -> list[MBeirTask]:
    """The tasks to evaluate, after checking every file they need; a :class:`DataError` names the first
    missing or malformed one."""
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
        queries = read_queries(task.query_file)
        if not queries:
            raise DataError(f"{task.query_file}: no queries")
        qrels = read_qrels(task.qrels_file)
        unjudged = [q.id for q in queries if q.id not in qrels.task_of]
        if unjudged:
            raise DataError(f"{task.qrels_file}: query {unjudged[0]!r} from {task.query_file.name} has no qrels line")
    return found


def missing_positives(qrels_rel: dict[str, dict[str, int]], qids: list[str], pool_ids: set[str]) -> list[tuple[str, str]]:
    """``(qid, did)`` of every positive of ``qids`` that is not in the pool (it could never be retrieved)."""
    return [(q, d) for q in qids for d in qrels_rel.get(q, {}) if d not in pool_ids]

"""Reader for the M-BEIR layout (UniIR), usable on the real benchmark or on any directory a user builds.

::

    ROOT/query/<split>/mbeir_<dataset>_task<k>_<split>.jsonl
    ROOT/cand_pool/local/mbeir_<dataset>_task<k>_cand_pool.jsonl   (or ..._task<k>_<split>_cand_pool.jsonl)
    ROOT/cand_pool/global/mbeir_union_<split>_cand_pool.jsonl
    ROOT/qrels/<split>/mbeir_<dataset>_task<k>_<split>_qrels.txt   (read by :mod:`omniret.data.qrels`)
    ROOT/instructions/query_instructions.tsv                       (looked up by :class:`QueryInstructions`)

Image paths inside records are relative to ``ROOT``. One record type (:class:`MBeirRecord`), one record ->
Item conversion (:meth:`MBeirRecord.to_item`, text through UniIR's :func:`format_string`) and one
instruction lookup serve indexing, evaluation, training and mining alike.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omniret.data.jsonl import field as get_field
from omniret.data.jsonl import iter_jsonl
from omniret.errors import DataError
from omniret.types import MODALITIES, Item

INSTRUCTIONS_RELPATH = "instructions/query_instructions.tsv"
_QUERY_FILE = re.compile(r"^mbeir_(?P<dataset>.+)_task(?P<task>\d+)_(?P<split>[a-z]+(?:_[a-z]+)?)\.jsonl$")


def parse_query_filename(filename: str) -> tuple[str, int, str] | None:
    """``mbeir_<dataset>_task<k>_<split>.jsonl`` -> ``(dataset, k, split)``; ``None`` if it doesn't match."""
    m = _QUERY_FILE.match(filename)
    if not m:
        return None
    return m.group("dataset"), int(m.group("task")), m.group("split")


def format_string(s: str | None) -> str:
    """UniIR's text normalisation: strip, drop ``\\r`` and surrounding double quotes, upper-case the first
    character and end with ``.`` unless the text already ends in ``.``, ``?`` or ``!``."""
    s = (s or "").replace("\r", "").strip().strip('"').strip()
    if not s:
        return ""
    s = s[0].upper() + s[1:]
    return s if s[-1] in ".?!" else s + "."


#: UniIR task id -> (query modality, candidate modality) (``MBEIR_TASK``). Task 5 is defined but not used.
MBEIR_TASKS: dict[int, tuple[str, str]] = {
    0: ("text", "image"),
    1: ("text", "text"),
    2: ("text", "image,text"),
    3: ("image", "text"),
    4: ("image", "image"),
    5: ("image", "image,text"),
    6: ("image,text", "text"),
    7: ("image,text", "image"),
    8: ("image,text", "image,text"),
}


def target_modality(task_id: int) -> str:
    """The candidate modality a task asks for (what modality accuracy compares against)."""
    try:
        return MBEIR_TASKS[task_id][1]
    except KeyError:
        raise ValueError(f"unknown M-BEIR task id {task_id}; known: {sorted(MBEIR_TASKS)}") from None


@dataclass(frozen=True)
class MBeirRecord:
    """A query (``pos``/``neg`` set) or a pool candidate. ``img_path`` is relative to the root.

    This is the only M-BEIR record type: index, eval, training and mining all build Items with
    :meth:`to_item`, so UniIR's text formatting is applied the same way everywhere.
    """

    id: str
    txt: str | None
    img_path: str | None
    modality: str
    pos: tuple[str, ...] = ()
    #: ``neg_cand_list``: dataset-provided or mined hard negatives (dids)
    neg: tuple[str, ...] = ()
    #: the generator's ``task_id`` field (queries), ``None`` when absent
    task_id: int | None = None

    @property
    def dataset_id(self) -> str:
        return self.id.split(":", 1)[0]

    def to_item(self, root: str | os.PathLike, instruction: str | None = None,
                metadata: dict[str, Any] | None = None) -> Item:
        """The record as an :class:`Item`: image first, then the text through UniIR's :func:`format_string`."""
        txt = format_string(self.txt) or None
        img = os.path.join(root, self.img_path) if self.img_path else None
        return Item(txt, image=img, instruction=instruction, id=self.id, metadata=metadata)


def _did_list(obj: dict, key: str, where: str) -> tuple[str, ...]:
    ids = get_field(obj, key, list, where, optional=True) or []
    if not all(isinstance(p, (str, int)) and not isinstance(p, bool) for p in ids):
        raise DataError(f"{where}: {key} must be a list of did strings")
    return tuple(str(p) for p in ids)


def _record(obj: dict, where: str, *, id_key: str, txt_key: str, img_key: str, mod_key: str) -> MBeirRecord:
    rid = str(get_field(obj, id_key, (str, int), where))
    txt = get_field(obj, txt_key, str, where, optional=True)
    img = get_field(obj, img_key, str, where, optional=True) or None
    mod = get_field(obj, mod_key, str, where)
    if mod not in MODALITIES:
        raise DataError(f"{where}: {mod_key} must be one of {', '.join(MODALITIES)}, got {mod!r}")
    # UniIR encodes whatever the record holds; the label must at least name parts that are there
    if ("image" in mod and not img) or ("text" in mod and not (txt or "").strip()):
        raise DataError(f"{where}: {mod_key} is {mod!r} but the record lacks its {'image' if 'image' in mod else 'text'}")
    return MBeirRecord(rid, txt, img, mod)


def iter_queries(path: str | os.PathLike) -> Iterator[tuple[int, dict, MBeirRecord]]:
    """``(line, raw object, record)`` for every query (``qid``, ``query_txt``, ``query_img_path``,
    ``query_modality``, ``pos_cand_list``, ``neg_cand_list``, ``task_id``)."""
    for n, obj in iter_jsonl(path):
        where = f"{path}:{n}"
        rec = _record(obj, where, id_key="qid", txt_key="query_txt", img_key="query_img_path", mod_key="query_modality")
        task = get_field(obj, "task_id", int, where, optional=True)
        pos, neg = _did_list(obj, "pos_cand_list", where), _did_list(obj, "neg_cand_list", where)
        yield n, obj, MBeirRecord(rec.id, rec.txt, rec.img_path, rec.modality, pos, neg, task)


def read_queries(path: str | os.PathLike) -> list[MBeirRecord]:
    """Every query record of an M-BEIR query JSONL."""
    return [rec for _, _, rec in iter_queries(path)]


def pool_record(obj: dict, where: str) -> MBeirRecord:
    """One candidate line (``did``, ``txt``, ``img_path``, ``modality``) as a record; ``where`` is ``file:line``."""
    return _record(obj, where, id_key="did", txt_key="txt", img_key="img_path", mod_key="modality")


def iter_pool(path: str | os.PathLike) -> Iterator[tuple[int, dict, MBeirRecord]]:
    """``(line, raw object, record)`` for every candidate (``did``, ``txt``, ``img_path``, ``modality``);
    a repeated did is an error."""
    seen: set[str] = set()
    for n, obj in iter_jsonl(path):
        rec = pool_record(obj, f"{path}:{n}")
        if rec.id in seen:
            raise DataError(f"{path}:{n}: duplicate did {rec.id!r}")
        seen.add(rec.id)
        yield n, obj, rec


def read_pool(path: str | os.PathLike) -> list[MBeirRecord]:
    """Every candidate record of an M-BEIR pool JSONL."""
    return [rec for _, _, rec in iter_pool(path)]


def read_instructions(path: str | os.PathLike) -> dict[tuple[str, str, str], list[str]]:
    """``instructions/query_instructions.tsv`` -> ``{(dataset_id, query_modality, cand_modality): prompts}``.

    Columns (header skipped, as UniIR does): query_modality, cand_modality, dataset, dataset_id, prompt_1..;
    empty prompt cells are dropped.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such instructions file")
    out: dict[tuple[str, str, str], list[str]] = {}
    lines = p.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        parts = line.rstrip("\r\n").split("\t")
        prompts = [s for s in (x.strip() for x in parts[4:]) if s]
        if len(parts) < 5 or not prompts:
            raise DataError(f"{p}:{n}: expected query_modality, cand_modality, dataset, dataset_id, prompts...")
        out[(parts[3].strip(), parts[0].strip(), parts[1].strip())] = prompts
    return out



INSTRUCTION_MODES = ("fixed", "random", "none")


class QueryInstructions:
    """The one task-instruction lookup for M-BEIR queries (eval, training and mining all use it).

    Key = (dataset id of the qid, query modality, candidate modality), where the candidate modality is the
    modality of the query's first positive when the caller knows it (it is in the loaded pool), else the
    target modality of the record's ``task_id``. ``mode``: ``fixed`` = the key's first prompt (reproducible),
    ``random`` = a prompt drawn uniformly per query, seeded by ``(seed, qid)`` so every consumer of the same
    query draws the same one (UniIR draws at random), ``none`` = no instruction. The prompt goes through
    :func:`format_string` (UniIR formats ``f"{prompt} {query_txt}"``; each family joins the two itself).
    A missing file (unless ``none``) or a missing key is a :class:`DataError`: a query silently encoded
    without its instruction would bias every metric.
    """

    def __init__(self, root: str | os.PathLike, mode: str = "fixed", seed: int = 0) -> None:
        if mode not in INSTRUCTION_MODES:
            raise DataError(f"instruction mode must be one of {', '.join(INSTRUCTION_MODES)}, got {mode!r}")
        self.mode, self.seed = mode, seed
        self.file = Path(root) / INSTRUCTIONS_RELPATH
        self.prompts: dict[tuple[str, str, str], list[str]] = {}
        if mode != "none":
            if not self.file.is_file():
                raise DataError(f"{self.file}: no instructions file; add one (UniIR's TSV format) or use "
                                f"instruction mode 'none'")
            self.prompts = read_instructions(self.file)

    def __call__(self, rec: MBeirRecord, cand_modality: str | None = None) -> str | None:
        """The formatted instruction of query ``rec``; ``cand_modality`` = its first positive's modality."""
        if self.mode == "none":
            return None
        if cand_modality is None:
            if rec.task_id is None:
                raise DataError(f"query {rec.id}: its positive is not in the pool and it has no task_id, so its "
                                f"instruction cannot be looked up in {self.file}")
            cand_modality = target_modality(rec.task_id)
        options = self.prompts.get((rec.dataset_id, rec.modality, cand_modality))
        if not options:
            raise DataError(f"{self.file}: no instruction for dataset_id {rec.dataset_id}, {rec.modality} -> "
                            f"{cand_modality} (query {rec.id})")
        if self.mode == "fixed":
            return format_string(options[0])
        return format_string(random.Random(f"{self.seed}:{rec.id}").choice(options))


@dataclass(frozen=True)
class MBeirTask:
    """One (dataset, task) evaluation unit found under a root."""

    name: str  # "<dataset>_task<k>"
    dataset: str
    task_id: int
    split: str
    query_file: Path
    qrels_file: Path
    local_pool_file: Path | None


def _local_pool(root: Path, dataset: str, task: int, split: str) -> Path | None:
    base = root / "cand_pool" / "local"
    for name in (f"mbeir_{dataset}_task{task}_{split}_cand_pool.jsonl", f"mbeir_{dataset}_task{task}_cand_pool.jsonl"):
        if (base / name).is_file():
            return base / name
    return None


def discover_tasks(root: str | os.PathLike, split: str = "test", names: Sequence[str] | None = None) -> list[MBeirTask]:
    """Every ``query/<split>/mbeir_<dataset>_task<k>_<split>.jsonl`` under ``root``, sorted by name.

    ``names`` keeps only those tasks (``"<dataset>_task<k>"``); an unknown name is an error listing the known.
    """
    root = Path(root)
    qdir = root / "query" / split
    if not qdir.is_dir():
        raise DataError(f"{root}: not an M-BEIR root (no query/{split}/ directory)")
    tasks = []
    for f in sorted(qdir.glob("mbeir_*.jsonl")):
        parsed = parse_query_filename(f.name)
        if parsed is None or parsed[2] != split:
            continue
        dataset, k, _ = parsed
        qrels = root / "qrels" / split / f"mbeir_{dataset}_task{k}_{split}_qrels.txt"
        tasks.append(MBeirTask(f"{dataset}_task{k}", dataset, k, split, f, qrels, _local_pool(root, dataset, k, split)))
    if names:
        known = {t.name: t for t in tasks}
        bad = [n for n in names if n not in known]
        if bad:
            raise DataError(f"{root}: unknown task(s) {', '.join(bad)} for split {split!r}; known: {', '.join(known) or '(none)'}")
        tasks = [known[n] for n in names]
    if not tasks:
        raise DataError(f"{qdir}: no query files named mbeir_<dataset>_task<k>_{split}.jsonl")
    return tasks


def global_pool_file(root: str | os.PathLike, split: str = "test") -> Path:
    """``cand_pool/global/mbeir_union_<split>_cand_pool.jsonl`` (or the one ``*_<split>_cand_pool.jsonl``)."""
    gdir = Path(root) / "cand_pool" / "global"
    exact = gdir / f"mbeir_union_{split}_cand_pool.jsonl"
    if exact.is_file():
        return exact
    found = sorted(gdir.glob(f"*_{split}_cand_pool.jsonl")) if gdir.is_dir() else []
    if len(found) == 1:
        return found[0]
    listed = ", ".join(p.name for p in found) or "none"
    raise DataError(f"{gdir}: expected one global pool file for split {split!r} ({exact.name}); found {listed}")


def missing_images(records: Iterable[MBeirRecord], root: str | os.PathLike) -> list[str]:
    """Relative image paths of ``records`` that do not exist under ``root``."""
    return [r.img_path for r in records if r.img_path and not os.path.isfile(os.path.join(root, r.img_path))]

"""Reader for the M-BEIR layout (UniIR), usable on the real benchmark or on any directory a user builds.

::

    ROOT/query/<split>/mbeir_<dataset>_task<k>_<split>.jsonl
    ROOT/cand_pool/local/mbeir_<dataset>_task<k>_cand_pool.jsonl   (or ..._task<k>_<split>_cand_pool.jsonl)
    ROOT/cand_pool/global/mbeir_union_<split>_cand_pool.jsonl
    ROOT/qrels/<split>/mbeir_<dataset>_task<k>_<split>_qrels.txt   lines "<qid> 0 <did> <rel> <task_id>"
    ROOT/instructions/query_instructions.tsv

Image paths inside records are relative to ``ROOT``. Text goes through UniIR's :func:`format_string`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from omniret.data.jsonl import field as get_field
from omniret.data.jsonl import iter_columns, iter_jsonl
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


@dataclass(frozen=True)
class MBeirRecord:
    """A query (``pos`` set) or a pool candidate (``pos`` empty). ``img_path`` is relative to the root."""

    id: str
    txt: str | None
    img_path: str | None
    modality: str
    pos: tuple[str, ...] = ()

    @property
    def dataset_id(self) -> str:
        return self.id.split(":", 1)[0]

    def to_item(self, root: str | os.PathLike, instruction: str | None = None) -> Item:
        """The record as an :class:`Item` (image first, then UniIR-formatted text)."""
        txt = format_string(self.txt) or None
        img = os.path.join(root, self.img_path) if self.img_path else None
        return Item(txt, image=img, instruction=instruction, id=self.id)


def _record(obj: dict, where: str, *, id_key: str, txt_key: str, img_key: str, mod_key: str) -> MBeirRecord:
    rid = get_field(obj, id_key, str, where)
    txt = get_field(obj, txt_key, str, where, optional=True)
    img = get_field(obj, img_key, str, where, optional=True)
    mod = get_field(obj, mod_key, str, where)
    if mod not in MODALITIES:
        raise DataError(f"{where}: {mod_key} must be one of {', '.join(MODALITIES)}, got {mod!r}")
    if ("image" in mod and not img) or ("text" in mod and not (txt or "").strip()):
        raise DataError(f"{where}: {mod_key} is {mod!r} but the record lacks its {'image' if 'image' in mod else 'text'}")
    return MBeirRecord(rid, txt, img, mod)


def read_queries(path: str | os.PathLike) -> list[MBeirRecord]:
    """Query records (``qid``, ``query_txt``, ``query_img_path``, ``query_modality``, ``pos_cand_list``)."""
    out = []
    for n, obj in iter_jsonl(path):
        where = f"{path}:{n}"
        rec = _record(obj, where, id_key="qid", txt_key="query_txt", img_key="query_img_path", mod_key="query_modality")
        pos = get_field(obj, "pos_cand_list", list, where, optional=True) or []
        if not all(isinstance(p, str) for p in pos):
            raise DataError(f"{where}: pos_cand_list must be a list of did strings")
        out.append(MBeirRecord(rec.id, rec.txt, rec.img_path, rec.modality, tuple(pos)))
    return out


def read_pool(path: str | os.PathLike) -> list[MBeirRecord]:
    """Candidate records (``did``, ``txt``, ``img_path``, ``modality``); duplicate dids are an error."""
    out, seen = [], set()
    for n, obj in iter_jsonl(path):
        rec = _record(obj, f"{path}:{n}", id_key="did", txt_key="txt", img_key="img_path", mod_key="modality")
        if rec.id in seen:
            raise DataError(f"{path}:{n}: duplicate did {rec.id!r}")
        seen.add(rec.id)
        out.append(rec)
    return out


@dataclass
class Qrels:
    """Relevance judgements: ``rel[qid][did] = grade`` (> 0 only) and the task id of every qid."""

    rel: dict[str, dict[str, int]] = field(default_factory=dict)
    task_of: dict[str, int] = field(default_factory=dict)


def read_qrels(path: str | os.PathLike, into: Qrels | None = None) -> Qrels:
    """Parse ``<qid> 0 <did> <rel> <task_id>`` lines (UniIR ``load_qrel``); rel <= 0 lines are ignored."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such qrels file")
    q = into if into is not None else Qrels()
    for where, (qid, _, did, rel, task) in iter_columns(p, 5, "<qid> 0 <did> <rel> <task_id>"):
        try:
            r, t = int(rel), int(task)
        except ValueError:
            raise DataError(f"{where}: relevance and task_id must be integers, got {rel!r}, {task!r}") from None
        if r > 0:
            q.rel.setdefault(qid, {})[did] = r
            q.task_of[qid] = t
    return q


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

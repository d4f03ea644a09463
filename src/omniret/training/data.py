"""Training examples from M-BEIR, MMEB-train and BEIR-style pairs, and a resumable mixture sampler.

Every source becomes a list of :class:`Example` (query with its instruction, positives, hard negatives)
grouped into *tasks* (M-BEIR: ``<dataset>_task<k>``; MMEB: the data set name; pairs: the source). The
sampler draws batches by source weight, either mixed (each example picks its source) or task-homogeneous
(one task per batch, as UniIR's per-task training does). Its whole state is a few counters, so a resumed
run sees exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from omniret.data import beir, mbeir, mmeb
from omniret.data.qrels import read_qrels
from omniret.errors import DataError
from omniret.training.config import DataConfig, SourceConfig
from omniret.types import Item


@dataclass
class Example:
    query: Item
    positives: list[Item]
    negatives: list[Item] = field(default_factory=list)


@dataclass
class Source:
    name: str
    weight: float
    tasks: dict[str, list[Example]]

    @property
    def size(self) -> int:
        return sum(len(v) for v in self.tasks.values())


# ------------------------------------------------------------------------------------------ readers


def _mbeir_query_files(cfg: SourceConfig) -> list[tuple[str, Path]]:
    if cfg.queries:
        q = Path(cfg.queries)
        files = sorted(q.glob("*.jsonl")) if q.is_dir() else [q]
        if not files:
            raise DataError(f"{q}: no query .jsonl files")
        return [(_task_name(f), f) for f in files]
    tasks = mbeir.discover_tasks(cfg.path, cfg.split, cfg.tasks or None)
    return [(t.name, t.query_file) for t in tasks]


def _task_name(f: Path) -> str:
    parsed = mbeir.parse_query_filename(f.name)
    return f"{parsed[0]}_task{parsed[1]}" if parsed else f.stem


def mbeir_examples(cfg: SourceConfig, instruction_mode: str = "fixed", seed: int = 0) -> dict[str, list[Example]]:
    """``{task: examples}`` from an M-BEIR root: queries, their positives and ``neg_cand_list`` resolved
    against the pool, every Item built by :meth:`~omniret.data.mbeir.MBeirRecord.to_item` and every query
    instruction by :class:`~omniret.data.mbeir.QueryInstructions` (``instruction_mode``: fixed, random, none)
    — exactly as evaluation and mining build them."""
    root = Path(cfg.path)
    pool_file = Path(cfg.pool) if cfg.pool else mbeir.global_pool_file(root, cfg.split)
    pool = {r.id: r for r in mbeir.read_pool(pool_file)}
    instructions = mbeir.QueryInstructions(root, instruction_mode, seed)
    items: dict[str, Item] = {}

    def cand(did: str, where: str) -> Item:
        if did not in pool:
            raise DataError(f"{where}: candidate {did!r} is not in the pool {pool_file}")
        if did not in items:
            items[did] = pool[did].to_item(root)
        return items[did]

    out: dict[str, list[Example]] = {}
    for task, qfile in _mbeir_query_files(cfg):
        exs = []
        for rec in mbeir.read_queries(qfile):
            where = f"{qfile} qid {rec.id}"
            if not rec.pos:
                raise DataError(f"{where}: pos_cand_list is empty (a training query needs a positive)")
            pos = [cand(d, where) for d in rec.pos]
            negs = [cand(d, where) for d in rec.neg]
            exs.append(Example(rec.to_item(root, instructions(rec, pool[rec.pos[0]].modality)), pos, negs))
        out[task] = exs[: cfg.max_examples] if cfg.max_examples else exs
    return out


def pairs_examples(cfg: SourceConfig) -> dict[str, list[Example]]:
    """BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``): one example per judged query,
    positives = its relevant documents, negatives = documents judged 0 (if any)."""
    root = Path(cfg.path)
    corpus = beir.read_corpus(root / "corpus.jsonl")
    queries = beir.read_queries(root / "queries.jsonl")
    qrels_file = root / "qrels" / f"{cfg.split}.tsv"
    # all judgements: grade-0 documents are the hard negatives
    graded = read_qrels(qrels_file, keep_nonrelevant=True).rel
    exs = []
    for qid, docs in graded.items():
        if qid not in queries:
            raise DataError(f"{qrels_file}: query {qid!r} is not in queries.jsonl")
        missing = [d for d in docs if d not in corpus]
        if missing:
            raise DataError(f"{qrels_file}: document {missing[0]!r} is not in corpus.jsonl")
        pos = [Item(corpus[d], id=d) for d, g in docs.items() if g > 0]
        neg = [Item(corpus[d], id=d) for d, g in docs.items() if g <= 0]
        if pos:
            exs.append(Example(Item(queries[qid], id=qid, instruction=cfg.instruction), pos, neg))
    return {Path(cfg.path).name: exs[: cfg.max_examples] if cfg.max_examples else exs}


def mmeb_examples(cfg: SourceConfig) -> dict[str, list[Example]]:
    """MMEB-train rows (one data set file/dir per task); ``neg_*`` fields become the hard negative."""
    image_root = Path(cfg.image_root or cfg.path)
    files = mmeb.dataset_files(cfg.path)
    keep = cfg.tasks or list(files)
    unknown = [t for t in keep if t not in files]
    if unknown:
        raise DataError(f"{cfg.path}: unknown MMEB data set(s) {', '.join(unknown)}; known: {', '.join(files)}")
    out = {}
    for name in keep:
        rows = mmeb.read_train(files[name], image_root)
        q = [r.query.with_instruction(cfg.instruction) if cfg.instruction else r.query for r in rows]
        exs = [Example(qi, [r.pos], [r.neg] if r.neg is not None else []) for qi, r in zip(q, rows, strict=True)]
        out[name] = exs[: cfg.max_examples] if cfg.max_examples else exs
    return out


def instruction_mode(cfg: DataConfig) -> str:
    """The :class:`~omniret.data.mbeir.QueryInstructions` mode of ``data.instruction_choice`` ("first" = "fixed")."""
    return "fixed" if cfg.instruction_choice == "first" else cfg.instruction_choice


def load_sources(cfg: DataConfig, seed: int = 0) -> list[Source]:
    """Read every configured source (errors name the file and record)."""
    out = []
    for i, s in enumerate(cfg.sources):
        if not os.path.exists(s.path):
            raise DataError(f"data.sources[{i}].path: {s.path} does not exist")
        if s.kind == "mbeir":
            tasks = mbeir_examples(s, instruction_mode(cfg), seed)
        elif s.kind == "pairs":
            tasks = pairs_examples(s)
        else:
            tasks = mmeb_examples(s)
        tasks = {k: v for k, v in tasks.items() if v}
        if not tasks:
            raise DataError(f"data.sources[{i}] ({s.path}): no training examples")
        out.append(Source(f"{i}:{Path(s.path).name}", s.weight, tasks))
    return out


# ------------------------------------------------------------------------------------------ sampler


@dataclass
class Batch:
    queries: list[Item]
    positives: list[Item]
    #: ``(B, H)`` hard negatives, row-major; empty when H = 0
    negatives: list[Item]


class MixtureSampler:
    """Deterministic batches: step ``s`` depends only on ``seed`` and the counters in :attr:`state`.

    Each stream (a task, or a whole source in mixed mode) walks through its own seeded permutation,
    epoch after epoch, so every example is seen once per epoch of its stream. With ``world`` > 1 every
    process draws the same global batch of ``batch_size`` and :meth:`next_batch` returns shard ``rank``
    (rows ``rank·B/W … (rank+1)·B/W`` with their hard negatives), so neither trainer nor loss slices by rank.
    """

    def __init__(self, sources: list[Source], batch_size: int, batching: str = "mixed", hard_negatives: int = 0,
                 seed: int = 0, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise DataError(f"batch_size {batch_size} is not divisible by {world} processes")
        self.sources, self.batch_size, self.batching = sources, batch_size, batching
        self.hard_negatives, self.seed = hard_negatives, seed
        self.rank, self.world = rank, world
        self.streams: dict[str, list[Example]] = {}
        for s in sources:
            if batching == "homogeneous":
                for t, exs in s.tasks.items():
                    self.streams[f"{s.name}/{t}"] = exs
            else:
                self.streams[s.name] = [e for exs in s.tasks.values() for e in exs]
        w = np.array([s.weight for s in sources], dtype=np.float64)
        self.weights = w / w.sum()
        self.state: dict[str, int] = {"step": 0, **{k: 0 for k in self.streams}}

    def _draw(self, stream: str) -> Example:
        exs = self.streams[stream]
        n = self.state[stream]
        epoch, pos = divmod(n, len(exs))
        perm = np.random.default_rng([self.seed, _h(stream), epoch]).permutation(len(exs))
        self.state[stream] = n + 1
        return exs[int(perm[pos])]

    def next_batch(self) -> Batch:
        rng = np.random.default_rng([self.seed, 7, self.state["step"]])
        self.state["step"] += 1
        if self.batching == "homogeneous":
            src = self.sources[int(rng.choice(len(self.sources), p=self.weights))]
            names = list(src.tasks)
            sizes = np.array([len(src.tasks[t]) for t in names], dtype=np.float64)
            task = names[int(rng.choice(len(names), p=sizes / sizes.sum()))]
            picks = [f"{src.name}/{task}"] * self.batch_size
        else:
            picks = [self.sources[int(i)].name for i in rng.choice(len(self.sources), self.batch_size, p=self.weights)]
        exs = [self._draw(s) for s in picks]
        return self._shard(self._assemble(exs, rng))

    def _shard(self, batch: Batch) -> Batch:
        """This process's rows of the global batch."""
        if self.world == 1:
            return batch
        b, h = len(batch.queries), self.hard_negatives
        lo, hi = self.rank * b // self.world, (self.rank + 1) * b // self.world
        return Batch(batch.queries[lo:hi], batch.positives[lo:hi], batch.negatives[lo * h : hi * h])

    def _assemble(self, exs: list[Example], rng: np.random.Generator) -> Batch:
        pos = [e.positives[int(rng.integers(len(e.positives)))] for e in exs]
        negs: list[Item] = []
        if self.hard_negatives:
            for i, e in enumerate(exs):
                pool = e.negatives or _fallback_negatives(exs, i)
                idx = rng.choice(len(pool), self.hard_negatives, replace=len(pool) < self.hard_negatives)
                negs.extend(pool[int(j)] for j in idx)
        return Batch([e.query for e in exs], pos, negs)


def _fallback_negatives(exs: list[Example], i: int) -> list[Item]:
    """A query without mined negatives borrows the other queries' positives (METHODS.md §2.5 fall-back [I])."""
    own = exs[i].positives
    others = [p for j, e in enumerate(exs) if j != i for p in e.positives[:1] if p not in own]
    if not others:
        raise DataError("a hard negative is needed but the batch holds no other query's positive to borrow")
    return others


def _h(s: str) -> int:
    """A stable (not per-process salted) hash of a stream name."""
    import zlib

    return zlib.crc32(s.encode())

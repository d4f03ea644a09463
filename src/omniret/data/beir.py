"""Reader for the BEIR layout: ``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``.

* corpus rows: ``{"_id": str, "title": str?, "text": str}`` — a document's text is ``title + " " + text``
  (sentence-transformers' BEIR convention) when it has a title;
* query rows: ``{"_id": str, "text": str}``;
* qrels: tab-separated ``query-id  corpus-id  score`` with a header row, read by
  :func:`omniret.data.qrels.read_qrels`; only ``score > 0`` is relevant.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from omniret.data.jsonl import field, iter_jsonl
from omniret.data.qrels import read_qrels
from omniret.errors import DataError
from omniret.types import Item


@dataclass
class BeirData:
    """One BEIR data set split: ``corpus`` and ``queries`` map id -> text; ``qrels[qid][did] = grade``."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def corpus_items(self) -> tuple[list[str], list[Item]]:
        ids = list(self.corpus)
        return ids, [Item(self.corpus[i], id=i) for i in ids]

    def query_items(self) -> tuple[list[str], list[Item]]:
        """Only queries that have judgements (BEIR evaluates those)."""
        ids = [q for q in self.queries if q in self.qrels]
        return ids, [Item(self.queries[q], id=q) for q in ids]


def read_corpus(path: str | os.PathLike) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, obj in iter_jsonl(path):
        where = f"{path}:{n}"
        did = str(field(obj, "_id", (str, int), where))
        text = field(obj, "text", str, where)
        title = (field(obj, "title", str, where, optional=True) or "").strip()
        if did in out:
            raise DataError(f"{where}: duplicate _id {did!r}")
        full = f"{title} {text}".strip() if title else text.strip()
        if not full:
            raise DataError(f"{where}: document {did!r} has no text")
        out[did] = full
    return out


def read_queries(path: str | os.PathLike) -> dict[str, str]:
    out: dict[str, str] = {}
    for n, obj in iter_jsonl(path):
        where = f"{path}:{n}"
        qid = str(field(obj, "_id", (str, int), where))
        text = field(obj, "text", str, where).strip()
        if not text:
            raise DataError(f"{where}: query {qid!r} has no text")
        out[qid] = text
    return out


def check_beir_root(root: str | os.PathLike, split: str = "test") -> None:
    """Raise :class:`DataError` naming the first missing file of a BEIR directory (cheap, reads nothing)."""
    for rel in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (Path(root) / rel).is_file():
            raise DataError(f"{root}: not a BEIR directory (missing {rel})")


def load_beir(root: str | os.PathLike, split: str = "test") -> BeirData:
    """Read a BEIR directory; qrels that point at unknown queries or documents are an error."""
    check_beir_root(root, split)
    root = Path(root)
    data = BeirData(
        corpus=read_corpus(root / "corpus.jsonl"),
        queries=read_queries(root / "queries.jsonl"),
        qrels=read_qrels(root / "qrels" / f"{split}.tsv").rel,
    )
    for qid, rel in data.qrels.items():
        if qid not in data.queries:
            raise DataError(f"{root}/qrels/{split}.tsv: query {qid!r} is not in queries.jsonl")
        bad = [d for d in rel if d not in data.corpus]
        if bad:
            raise DataError(f"{root}/qrels/{split}.tsv: document {bad[0]!r} (query {qid!r}) is not in corpus.jsonl")
    return data

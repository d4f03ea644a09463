"""A real BEIR-layout text retrieval benchmark from Debian's ``wordnet-base`` (WordNet 3.0, WordNet licence).

Task — a *reverse dictionary*: the query is a synset's definition (its gloss without the quoted usage
examples), the relevant document is the synset's lemma string (``"dog, domestic dog, Canis familiaris"``).
Documents are unique lemma strings, so a polysemous word ("bank") is one document relevant to each of
its senses' definitions — the answer to "sloping land beside a river" is the word, not a sense id.

Split: documents are assigned to test or train by a seeded hash, and every query follows its document, so
train and test share neither documents nor queries. Layout::

    DIR/corpus.jsonl  DIR/queries.jsonl  DIR/qrels/test.tsv          the test set (evaluate this)
    DIR/train/corpus.jsonl  DIR/train/queries.jsonl  DIR/train/qrels/train.tsv
    DIR/manifest.json  DIR/README.md  DIR/LICENSE.wordnet
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omniret.data.builders.debian import fetch_deb
from omniret.data.jsonl import write_jsonl
from omniret.errors import DataError
from omniret.io import atomic_write_json

WORDNET_PACKAGE = "wordnet-base"
_POS_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


@dataclass(frozen=True)
class Synset:
    id: str  # "<pos><offset>", e.g. "n02084071"
    lemmas: str  # "dog, domestic dog, Canis familiaris"
    definition: str


def parse_data_line(line: str, pos: str) -> Synset | None:
    """One ``data.<pos>`` line (see wndb(5WN)) -> :class:`Synset`; ``None`` for licence header lines."""
    if line.startswith("  ") or "|" not in line:
        return None
    head, gloss = line.split("|", 1)
    f = head.split()
    n_words = int(f[3], 16)  # w_cnt is two hex digits
    words = []
    for w in f[4 : 4 + 2 * n_words : 2]:
        w = _ADJ_MARKER.sub("", w).replace("_", " ")
        if w not in words:
            words.append(w)
    definition = gloss.split('; "', 1)[0].strip().rstrip(";").strip()
    if not definition or not words:
        return None
    return Synset(f"{pos}{f[0]}", ", ".join(words), definition)


def iter_synsets(wordnet_dir: Path) -> Iterator[Synset]:
    for pos, name in _POS_FILES.items():
        path = wordnet_dir / name
        if not path.is_file():
            raise DataError(f"{path}: WordNet data file missing")
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                s = parse_data_line(line, pos)
                if s is not None:
                    yield s


def _h(seed: int, s: str) -> str:
    return hashlib.sha1(f"{seed}:{s}".encode()).hexdigest()


def _write_beir(root: Path, docs: dict[str, str], queries: list[tuple[str, str, str]], split: str) -> None:
    """``queries`` are ``(qid, text, relevant did)``."""
    write_jsonl(root / "corpus.jsonl", [{"_id": d, "title": "", "text": t} for d, t in docs.items()])
    write_jsonl(root / "queries.jsonl", [{"_id": q, "text": t} for q, t, _ in queries])
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{q}\t{d}\t1\n" for q, _, d in queries)
    (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + lines, encoding="utf-8")


def build_wordnet_benchmark(
    out_dir: str | Path,
    cache_dir: Path | None = None,
    test_docs: int = 5000,
    test_queries: int = 1000,
    seed: int = 0,
) -> dict:
    """Build the benchmark into ``out_dir``; returns the manifest. ``cache_dir`` is the Debian cache."""
    if test_docs < 1 or test_queries < 1:
        raise DataError(f"test_docs and test_queries must be >= 1, got {test_docs}, {test_queries}")
    pkg = fetch_deb(WORDNET_PACKAGE, cache_dir)
    synsets = list(iter_synsets(pkg / "usr/share/wordnet"))
    doc_text = sorted({s.lemmas for s in synsets}, key=lambda t: _h(seed, t))
    if test_docs >= len(doc_text):
        raise DataError(f"test_docs={test_docs} leaves no training documents (WordNet has {len(doc_text)})")
    did = {t: f"w{i}" for i, t in enumerate(sorted(doc_text))}
    test_set = set(doc_text[:test_docs])
    test_syn = sorted((s for s in synsets if s.lemmas in test_set), key=lambda s: _h(seed, s.id))[:test_queries]
    train_syn = [s for s in synsets if s.lemmas not in test_set]
    out = Path(out_dir)
    _write_beir(out, {did[t]: t for t in sorted(test_set, key=did.get)},
                [(s.id, s.definition, did[s.lemmas]) for s in test_syn], "test")
    train_docs = {did[t]: t for t in sorted(set(doc_text[test_docs:]), key=did.get)}
    _write_beir(out / "train", train_docs, [(s.id, s.definition, did[s.lemmas]) for s in train_syn], "train")
    source = (pkg / ".omniret-extracted").read_text().strip()
    shutil.copyfile(pkg / "usr/share/doc/wordnet-base/copyright", out / "LICENSE.wordnet")
    manifest = {
        "name": "wordnet", "layout": "beir", "task": "reverse dictionary: definition -> lemma string",
        "source": source, "licence": "WordNet 3.0 licence (Princeton University), see LICENSE.wordnet",
        "seed": seed, "test": {"queries": len(test_syn), "docs": len(test_set)},
        "train": {"queries": len(train_syn), "docs": len(train_docs)},
    }
    (out / "README.md").write_text(_README.format(**manifest["test"], tq=len(train_syn), td=len(train_docs),
                                                  source=source, seed=seed))
    atomic_write_json(out / "manifest.json", manifest)  # last and atomic: a complete build has it
    return manifest


_README = """# WordNet reverse-dictionary benchmark (built by omniret)

Query: a WordNet 3.0 synset definition. Relevant document: the synset's lemma string. Built from the Debian
package `{source}` with seed {seed}.

* test (this directory, BEIR layout): {queries} queries, {docs} documents
* train (`train/`): {tq} queries, {td} documents — no document or query shared with test

Licence: WordNet 3.0 licence, Princeton University; the full notice is in LICENSE.wordnet and must accompany
any copy of this data.
"""

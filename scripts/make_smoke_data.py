"""Build ``examples/smoke-data/`` — the small real training data of the smoke configs — from the sample corpus.

* ``mbeir/``: the first 48 emoji of ``examples/sample-corpus/emoji`` (Noto Color Emoji renderings, OFL) in the
  M-BEIR layout of ``omniret data build emoji`` (task 0: name -> image, task 3: image -> name; local and global
  pools; instructions), split ``train``; image paths point into the sample corpus.
* ``text-pairs/``: BEIR layout over ``examples/sample-corpus/texts`` (one query per text: "what do you know
  about <topic>?" -> that text) — the text retrieval data of MM-Embed's continual stage.

Run from the repository root: ``python scripts/make_smoke_data.py``; the output is committed.
"""

from __future__ import annotations

import json
from pathlib import Path

from omniret.data.builders.emoji_bench import _write_instructions, _write_split

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "examples" / "sample-corpus"
OUT = ROOT / "examples" / "smoke-data"
N_EMOJI = 48


def build_mbeir(out: Path) -> int:
    files = sorted((CORPUS / "emoji").glob("*.png"))[:N_EMOJI]
    rows = [(n, n, f.stem.replace("_", " "), f"../../sample-corpus/emoji/{f.name}") for n, f in enumerate(files, 1)]
    _write_split(out, "train", rows)
    _write_instructions(out)
    return len(rows)


def build_pairs(out: Path) -> int:
    texts = sorted((CORPUS / "texts").glob("*.txt"))
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    corpus = [{"_id": f"d{i}", "title": "", "text": t.read_text().strip()} for i, t in enumerate(texts)]
    queries = [{"_id": f"q{i}", "text": f"what do you know about {t.stem.replace('_', ' ')}?"}
               for i, t in enumerate(texts)]
    (out / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (out / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    lines = ["query-id\tcorpus-id\tscore"] + [f"q{i}\td{i}\t1" for i in range(len(texts))]
    (out / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return len(texts)


if __name__ == "__main__":
    print(f"mbeir: {build_mbeir(OUT / 'mbeir')} emoji; text-pairs: {build_pairs(OUT / 'text-pairs')} texts")

"""`omniret eval beir|mmeb` check every task's files before loading the model: each broken input below is a
one-line error naming the file, a non-zero exit, no model loaded and nothing written to ``--out``. A judged
BEIR document missing from the corpus is an error unless ``--allow-missing-positives`` (then counted)."""

from __future__ import annotations

import json
import re

import pytest
from _helpers import HashEncoder
from PIL import Image

from _cli import run as run_cli
from omniret.encoders import ENCODERS, load_builtins

MODEL = "preflight-counting"
LOADS = []


def _counted(**options) -> HashEncoder:
    LOADS.append(options)
    return HashEncoder()


@pytest.fixture(autouse=True)
def counting_model():
    """``--model preflight-counting``: a real (hash) encoder whose loads are counted."""
    load_builtins()
    ENCODERS.add(MODEL, _counted)
    LOADS.clear()


def _jsonl(path, *rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def _beir(root):
    root.mkdir()
    _jsonl(root / "corpus.jsonl", {"_id": "d1", "text": "red apple"}, {"_id": "d2", "text": "green leaf"})
    _jsonl(root / "queries.jsonl", {"_id": "q1", "text": "red"}, {"_id": "q2", "text": "green"})
    (root / "qrels").mkdir()
    (root / "qrels/test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return root


BEIR_BREAKS = [
    ("empty corpus", lambda r: (r / "corpus.jsonl").write_text(""), "corpus.jsonl: no documents"),
    ("empty queries", lambda r: (r / "queries.jsonl").write_text("\n"), "queries.jsonl: no queries"),
    ("no relevant judgement", lambda r: (r / "qrels/test.tsv").write_text("q1\td1\t0\n"),
     "test.tsv: no relevant judgements"),
    ("corpus line not JSON", lambda r: _jsonl(r / "corpus.jsonl", {"_id": "d1", "text": "x"}, "{oops"),
     "corpus.jsonl:2: invalid JSON"),
    ("query without text", lambda r: _jsonl(r / "queries.jsonl", {"_id": "q1"}), "queries.jsonl:1: .*text"),
    ("queries not UTF-8", lambda r: (r / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "\xff"}\n'),
     "queries.jsonl:1: not UTF-8"),
    ("qrels line malformed", lambda r: (r / "qrels/test.tsv").write_text("q1\td1\t1\nq2 d2\n"),
     "test.tsv:2: expected"),
    ("qrels names an unknown query", lambda r: (r / "qrels/test.tsv").write_text("q1\td1\t1\nq9\td2\t1\n"),
     "test.tsv: query 'q9' is not in queries.jsonl"),
    ("qrels file missing", lambda r: (r / "qrels/test.tsv").unlink(), "missing qrels/test.tsv"),
    ("corpus is a folder", lambda r: ((r / "corpus.jsonl").unlink(), (r / "corpus.jsonl").mkdir()),
     "missing corpus.jsonl"),
    ("positive not in corpus", lambda r: (r / "qrels/test.tsv").write_text("q1\td1\t1\nq1\td9\t1\nq2\td2\t1\n"),
     "test.tsv: 1 positive\\(s\\) of beir are not in corpus.jsonl \\(first: query 'q1' -> 'd9'\\); "
     "pass --allow-missing-positives"),
]


def _refused(monkeypatch, capsys, out, args, pattern):
    code, _, err = run_cli(monkeypatch, capsys, *args, "--model", MODEL, "--out", str(out))
    assert code != 0
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err
    assert LOADS == [] and not out.exists()  # refused before the model loaded; nothing written


@pytest.mark.parametrize("name,breakage,pattern", BEIR_BREAKS, ids=[b[0] for b in BEIR_BREAKS])
def test_beir_refused_before_model_load(tmp_path, monkeypatch, capsys, name, breakage, pattern):
    root = _beir(tmp_path / "beir")
    breakage(root)
    _refused(monkeypatch, capsys, tmp_path / "out", ["eval", "beir", "--root", str(root), "--no-cache"], pattern)


def test_beir_missing_positives_counted_with_flag(tmp_path, monkeypatch, capsys):
    root = _beir(tmp_path / "beir")
    (root / "qrels/test.tsv").write_text("q1\td1\t1\nq1\td9\t1\nq2\td7\t1\nq2\td2\t1\n")
    code, _, err = run_cli(monkeypatch, capsys, "eval", "beir", "--root", str(root), "--no-cache", "--model", MODEL,
                           "--out", str(tmp_path / "out"), "--allow-missing-positives")
    assert code in (0, None), err
    (row,) = json.loads((tmp_path / "out/results.json").read_text())["tasks"]
    assert row["missing_positives"] == 2 and row["n_docs"] == 2
    assert row["recall@100"] == pytest.approx(0.5)  # each query finds 1 of its 2 positives: the other is absent


def _mmeb(root):
    root.mkdir()
    Image.new("RGB", (4, 4), (255, 0, 0)).save(root / "red.png")
    row = {"qry_text": "a red square", "qry_img_path": "", "tgt_text": [""], "tgt_img_path": ["red.png"]}
    _jsonl(root / "A.jsonl", row, row)
    (root / "B").mkdir()
    _jsonl(root / "B" / "part1.jsonl", row)
    _jsonl(root / "B" / "part2.jsonl", row)
    return root


def _row(**over):
    return {"qry_text": "q", "qry_img_path": "", "tgt_text": ["t"], "tgt_img_path": [""], **over}


MMEB_BREAKS = [
    ("empty data set file", lambda r: (r / "B/part2.jsonl").write_text(""), "part2.jsonl: no rows", ()),
    ("last file not JSON", lambda r: _jsonl(r / "B/part2.jsonl", _row(), "[1, 2"), "part2.jsonl:2: invalid JSON", ()),
    ("row without candidates", lambda r: _jsonl(r / "B/part2.jsonl", _row(tgt_text=[], tgt_img_path=[])),
     "part2.jsonl:1: no candidates", ()),
    ("empty query", lambda r: _jsonl(r / "B/part2.jsonl", _row(qry_text="<|image_1|>")),
     "part2.jsonl:1: empty query/candidate", ()),
    ("candidates not strings", lambda r: _jsonl(r / "B/part2.jsonl", _row(tgt_text=[1])),
     "part2.jsonl:1: field 'tgt_text' must be a list of strings", ()),
    ("missing image", lambda r: _jsonl(r / "B/part2.jsonl", _row(qry_img_path="nope.png")),
     "B row 2: image not found: .*nope.png; pass --skip-missing-images", ()),
    ("every image missing, skipped", lambda r: _jsonl(r / "A.jsonl", _row(qry_img_path="gone.png")),
     "A: no evaluable rows \\(all 1 have a missing image\\)", ("--skip-missing-images",)),
    ("corrupt parquet", lambda r: (r / "C.parquet").write_bytes(b"PAR1 not really"),
     "C.parquet: cannot read rows", ()),
    ("unknown data set", lambda r: None, "unknown MMEB data set\\(s\\) Nope; found: A, B", ("--datasets", "A,Nope")),
    ("no data sets", lambda r: [p.unlink() for p in (r / "B").iterdir()] + [(r / "A.jsonl").unlink()],
     "no <dataset>.jsonl / .parquet files found", ()),
]


@pytest.mark.parametrize("name,breakage,pattern,extra", MMEB_BREAKS, ids=[b[0] for b in MMEB_BREAKS])
def test_mmeb_refused_before_model_load(tmp_path, monkeypatch, capsys, name, breakage, pattern, extra):
    root = _mmeb(tmp_path / "mmeb")
    breakage(root)
    _refused(monkeypatch, capsys, tmp_path / "out", ["eval", "mmeb", "--root", str(root), *extra], pattern)


def test_intact_data_evaluates(tmp_path, monkeypatch, capsys):
    """The same fixtures, unbroken, pass the preflight and evaluate (so the refusals above are specific)."""
    for kind, root in (("beir", _beir(tmp_path / "beir")), ("mmeb", _mmeb(tmp_path / "mmeb"))):
        out = tmp_path / f"out-{kind}"
        code, _, err = run_cli(monkeypatch, capsys, "eval", kind, "--root", str(root), "--model", MODEL, "--out",
                               str(out), *(("--no-cache",) if kind == "beir" else ()))
        assert code in (0, None) and (out / "results.json").is_file(), err
    assert len(LOADS) == 2

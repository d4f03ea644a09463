"""Malformed and hostile input, case by case: each is refused with a clear error naming the input, and the
existing index on disk stays byte-identical (nothing stored is lost or half-changed).

Families: vectors and records given to ``add``/``upsert``; search arguments; the encoder API; folder files
(``strict=True``: the first bad file is the error); candidate JSONL lines; CLI arguments; the manifest.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from _helpers import DIM, HashEncoder, register_hash_encoder, snapshot, write_png_header
from PIL import Image

from _cli import run as run_cli
from omniret.errors import OmniretError
from omniret.index import FlatIndex, Record
from omniret.retriever import Retriever
from omniret.types import Item


class Ctx:
    """A saved index of a small folder (source ``corpus``) plus a scratch directory for bad inputs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.corpus = tmp / "corpus"
        self.corpus.mkdir()
        for i in range(6):
            (self.corpus / f"t{i}.txt").write_text(f"text document {i}")
        Image.new("RGB", (8, 8), (200, 20, 20)).save(self.corpus / "red.png")
        self.path = tmp / "ix"
        self.encoder = HashEncoder()
        Retriever.create(self.path, self.encoder).index_corpus(self.corpus)
        self.bad = tmp / "bad"
        self.bad.mkdir()
        (self.bad / "good.txt").write_text("a good document")

    def index(self) -> FlatIndex:
        return FlatIndex.open(self.path)

    def retriever(self) -> Retriever:
        return Retriever.open(self.path, self.encoder)

    def strict(self, source: os.PathLike | str, **kw) -> None:
        self.retriever().index_corpus(source, strict=True, **kw)

    def jsonl(self, *lines: str, name: str = "pool.jsonl") -> Path:
        p = self.bad / name
        p.write_bytes(b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines))
        return p


def V(*rows) -> np.ndarray:
    return np.array(rows, np.float32)


E0 = np.eye(DIM, dtype=np.float32)[0]
R = Record(id="x", modality="text")


def add(vectors, records=None):
    return lambda c: c.index().add(vectors, [R] if records is None else records)


def search(q=E0, **kw):
    return lambda c: c.index().search(q, **kw)


VECTOR_CASES = [
    ("nan", add(V([np.nan] * DIM)), "NaN or infinite"),
    ("inf", add(V([np.inf] * DIM)), "NaN or infinite"),
    ("-inf", add(V([-np.inf] + [0] * (DIM - 1))), "NaN or infinite"),
    ("zero", add(V([0.0] * DIM)), "vector 0 has L2 norm 0"),
    ("norm2", add(V(2 * E0)), "vector 0 has L2 norm 2"),
    ("norm1e6", add(V(1e6 * E0)), r"L2 norm 1e\+06"),
    ("norm-half", add(V(0.5 * E0)), "L2 norm 0.5"),
    ("second-row", add(V(E0, 3 * E0), [R, Record(id="y", modality="text")]), "vector 1 has L2 norm 3"),
    ("1d", add(E0), r"vectors of shape \(24,\) do not fit index dim 24"),
    ("3d", add(E0[None, None]), r"vectors of shape \(1, 1, 24\)"),
    ("dim", add(V(np.eye(8)[0])), r"shape \(1, 8\) do not fit index dim 24"),
    ("count", add(V(E0, E0)), "2 vectors but 1 records"),
    ("strings", add(np.array([["a"] * DIM])), r"vectors must be a numeric \(N, 24\) array"),
    ("ragged", add([[1.0], [1.0, 2.0]], [R, Record(id="y", modality="text")]), "vectors must be a numeric"),
    ("upsert-nan", lambda c: c.index().upsert(V([np.nan] * DIM), [R]), "NaN or infinite"),
    ("upsert-norm", lambda c: c.index().upsert(V(5 * E0), [Record(id="t1.txt", modality="text")]), "L2 norm 5"),
]

RECORD_CASES = [
    ("dup", add(V(E0, E0), [R, R]), "duplicate id 'x' in one add"),
    ("existing", add(V(E0), [Record(id="t1.txt", modality="text")]), r"ids already in the index: \['t1.txt'\]"),
    ("modality", add(V(E0), [Record(id="x", modality="video")]), "record 'x': unknown modality 'video'"),
    ("empty-id", add(V(E0), [Record(id="", modality="text")]), "record id must be a non-empty string, got ''"),
    ("int-id", add(V(E0), [Record(id=5, modality="text")]), "record id must be a non-empty string, got 5"),
    ("surrogate-id", add(V(E0), [Record(id="a\udcff", modality="text")]), "cannot be stored as UTF-8"),
    ("surrogate-txt", add(V(E0), [Record(id="s", modality="text", txt="\udcff")]), "record 's' cannot be stored"),
    ("set-meta", add(V(E0), [Record(id="m", modality="text", metadata={"s": {1}})]), "record 'm' cannot be stored"),
    ("bytes-meta", add(V(E0), [Record(id="b", modality="text", metadata={"b": b"x"})]), "record 'b' cannot be"),
    ("dict", add(V(E0), [{"id": "x", "modality": "text"}]), "expected omniret.index.Record objects, got dict"),
]

SEARCH_CASES = [
    ("k0", search(k=0), "k must be an integer >= 1, got 0"),
    ("k-1", search(k=-1), "got -1"),
    ("k2.7", search(k=2.7), "got 2.7"),
    ("k-str", search(k="3"), "got '3'"),
    ("k-bool", search(k=True), "got True"),
    ("k-none", search(k=None), "got None"),
    ("q-nan", search(V([np.nan] * DIM)), "query vectors contain NaN or infinite"),
    ("q-inf", search(V([np.inf] * DIM)), "query vectors contain NaN or infinite"),
    ("q-zero", search(V([0.0] * DIM)), "a query vector is all zeros"),
    ("q-dim", search(np.ones(8, np.float32)), r"query vectors of shape \(1, 8\)"),
    ("q-3d", search(E0[None, None]), r"query vectors of shape \(1, 1, 24\)"),
    ("q-str", search(["a"] * DIM), r"query vectors must be a numeric \(Q, 24\) array"),
    ("modality", search(modality="video"), "unknown modality filter 'video'"),
    ("modality-empty", search(modality=[]), r"unknown modality filter \(empty\)"),
    ("r-k0", lambda c: c.retriever().search("text", k=0), "k must be an integer >= 1, got 0"),
    ("r-k1.5", lambda c: c.retriever().search("text", k=1.5), "got 1.5"),
    ("r-int", lambda c: c.retriever().search(5), "query must be a str, an Item or a list of them, got int"),
    ("r-list-int", lambda c: c.retriever().search([5]), "item 0: expected Item or str, got int"),
    ("r-vec-nan", lambda c: c.retriever().search_vectors(V([np.nan] * DIM)), "NaN or infinite"),
]

ENCODER_CASES = [
    ("docs-str", lambda c: c.encoder.encode_documents("abc"), "got a single str; wrap it in a list"),
    ("queries-str", lambda c: c.encoder.encode_queries("abc"), "got a single str"),
    ("docs-item", lambda c: c.encoder.encode_documents(Item("x")), "got a single Item"),
    ("docs-int", lambda c: c.encoder.encode_documents([1]), "item 0: expected Item or str, got int"),
    ("docs-none", lambda c: c.encoder.encode_documents(None), "got a single NoneType"),
    ("docs-bytes", lambda c: c.encoder.encode_documents([b"x"]), "item 0: expected Item or str, got bytes"),
    ("batch0", lambda c: c.encoder.encode_documents(["x"], batch_size=0), "batch_size must be an integer >= 1"),
    ("batch-float", lambda c: c.encoder.encode_documents(["x"], batch_size=2.5), "got 2.5"),
]


def _fifo(name):
    def build(c):
        os.mkfifo(c.bad / name)
        return name
    return build


def _link(name, target):
    def build(c):
        (c.bad / name).symlink_to(target(c) if callable(target) else target)
        return name
    return build


def _bytes(name, data):
    def build(c):
        p = c.bad / os.fsdecode(name) if isinstance(name, bytes) else c.bad / name
        p.write_bytes(data)
        return os.fsdecode(name).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return build


def _outside_file(c):
    p = c.tmp / "secret.txt"
    p.write_text("root:x:0:0")
    return p


def _outside_dir(c):
    d = c.tmp / "elsewhere"
    d.mkdir(exist_ok=True)
    (d / "a.txt").write_text("outside")
    return d


def _png_bytes(size=(8, 8)):
    import io

    buf = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buf, "PNG")
    return buf.getvalue()


def _sparse(name, size):
    def build(c):
        with open(c.bad / name, "wb") as f:
            f.truncate(size)
        return name
    return build


def _bad_sidecar(c):
    (c.bad / "cat.png").write_bytes(_png_bytes())
    (c.bad / "cat.txt").write_bytes(b"\xff\xfe caption")
    return "cat.txt"


def _bomb(c):
    write_png_header(c.bad / "bomb.png", 20000, 20000)
    return "bomb.png"


def _bad_dir_name(c):
    d = c.bad / os.fsdecode(b"dir\xff")
    d.mkdir()
    (d / "a.txt").write_text("x")
    return "dir\\xff"


FOLDER_CASES = [
    ("fifo-txt", _fifo("pipe.txt"), "not a regular file \\(a FIFO\\)", {}),
    ("fifo-png", _fifo("pipe.png"), "not a regular file \\(a FIFO\\)", {}),
    ("dev-zero", _link("zero.txt", "/dev/zero"), "symlink leads outside the corpus folder", {}),
    ("dev-zero-followed", _link("zero.txt", "/dev/zero"), "not a regular file \\(a character device\\)",
     {"follow_symlinks": True}),
    ("symlink-out", _link("passwd.txt", _outside_file), "symlink leads outside the corpus folder", {}),
    ("symlink-dir-out", _link("outdir", _outside_dir), "symlinked folder leads outside", {}),
    ("dangling", _link("gone.txt", "/nonexistent/x"), "symlink leads outside", {}),
    ("name-utf8", _bytes(b"bad\xff.txt", b"hello"), "file name is not valid UTF-8", {}),
    ("dir-utf8", _bad_dir_name, "folder name is not valid UTF-8", {}),
    ("text-utf8", _bytes("latin.txt", b"caf\xe9"), "not UTF-8 text", {}),
    ("text-huge", _sparse("huge.txt", 9 * 1024 * 1024), "exceeds the size cap", {}),
    ("sidecar-utf8", _bad_sidecar, "not UTF-8 text", {}),
    ("png-garbage", _bytes("garbage.png", os.urandom(64)), "not a recognised image format", {}),
    ("png-empty", _bytes("empty.png", b""), "not a recognised image format", {}),
    ("png-truncated", _bytes("trunc.png", _png_bytes((64, 64))[:60]), "corrupt or truncated", {}),
    ("jpg-text", _bytes("text.jpg", b"just some text"), "not a recognised image format", {}),
    ("png-bomb", _bomb, "refused as a decompression bomb", {}),
    ("img-huge", _sparse("huge.png", 300 * 1024 * 1024), "exceeds the size cap", {}),
]

JSONL_CASES = [
    ("json", ['{"did": "1", "txt": "x", "modality": "text"'], "pool.jsonl:1: invalid JSON"),
    ("array", ['[1, 2]'], "pool.jsonl:1: expected a JSON object, got list"),
    ("empty-obj", ["{}"], "pool.jsonl:1: missing required field 'did'"),
    ("did-list", ['{"did": [1], "txt": "x", "modality": "text"}'], "pool.jsonl:1: field 'did' must be str/int"),
    ("no-modality", ['{"did": "1", "txt": "x"}'], "pool.jsonl:1: missing required field 'modality'"),
    ("video", ['{"did": "1", "txt": "x", "modality": "video"}'], "pool.jsonl:1: modality must be one of"),
    ("mismatch", ['{"did": "1", "txt": "x", "modality": "image"}'], "modality is 'image' but the record lacks its image"),
    ("txt-number", ['{"did": "1", "txt": 5, "modality": "text"}'], "pool.jsonl:1: field 'txt' must be str"),
    ("dup", ['{"did": "1", "txt": "x", "modality": "text"}', '{"did": "1", "txt": "y", "modality": "text"}'],
     "pool.jsonl:2: duplicate did '1'"),
    ("abs-path", ['{"did": "1", "img_path": "/etc/passwd", "modality": "image"}'], "leads outside the image root"),
    ("dotdot", ['{"did": "1", "img_path": "../corpus/red.png", "modality": "image"}'], "leads outside the image root"),
    ("missing-img", ['{"did": "1", "img_path": "nope.png", "modality": "image"}'], "pool.jsonl:1: image not found"),
    ("latin1", [b'{"did": "1", "txt": "caf\xe9", "modality": "text"}'], "pool.jsonl:1: not UTF-8"),
    ("null-line", ["null"], "pool.jsonl:1: expected a JSON object, got NoneType"),
    ("number-line", ["42"], "pool.jsonl:1: expected a JSON object, got int"),
]


def _jsonl_fifo(c):
    os.mkfifo(c.bad / "p.png")
    return c.jsonl('{"did": "1", "img_path": "p.png", "modality": "image"}'), "p.png: not a regular file"


def _jsonl_link_out(c):
    (c.bad / "l.png").symlink_to(c.corpus / "red.png")
    return c.jsonl('{"did": "1", "img_path": "l.png", "modality": "image"}'), "leads outside the image root"


def _jsonl_corrupt(c):
    (c.bad / "c.png").write_bytes(b"not a png")
    return c.jsonl('{"did": "1", "img_path": "c.png", "modality": "image"}'), "c.png: not a recognised image"


JSONL_FILE_CASES = [("img-fifo", _jsonl_fifo), ("img-link-out", _jsonl_link_out), ("img-corrupt", _jsonl_corrupt)]

SOURCE_CASES = [
    ("missing", lambda c: c.strict(c.tmp / "missing"), "missing: no such folder or file"),
    ("csv", lambda c: (c.bad / "x.csv").write_text("a") and c.strict(c.bad / "x.csv"), "x.csv: expected a folder or"),
    ("fifo", lambda c: os.mkfifo(c.bad / "f.jsonl") or c.strict(c.bad / "f.jsonl"), "f.jsonl: expected a folder"),
    ("str-corpus", lambda c: c.retriever().index_corpus(iter(["plain"])), "corpus item 0 is a str"),
    ("no-id", lambda c: c.retriever().index_corpus([Item("x")]), "corpus item 0 has no id"),
    ("emptied", lambda c: [p.unlink() for p in c.corpus.iterdir()] and c.retriever().index_corpus(c.corpus),
     "would remove 7 of the 7 documents"),
    ("mostly-gone", lambda c: [(c.corpus / f"t{i}.txt").unlink() for i in range(5)] and
     c.retriever().index_corpus(c.corpus), "would remove 5 of the 7 documents"),
    ("user-folder", lambda c: Retriever.create(c.bad, c.encoder), "bad: folder is not empty and holds no omniret"),
    ("exists", lambda c: Retriever.create(c.path, c.encoder), "ix: an index already exists there"),
]

MANIFEST_CASES = [
    ("gen-dotdot", {"generation": "../outside"}, "generation '../outside' is not a generation name"),
    ("gen-abs", {"generation": "/etc"}, "generation '/etc' is not a generation name"),
    ("gen-short", {"generation": "gen-1"}, "generation 'gen-1' is not"),
    ("gen-user", {"generation": "gen-2023-photos"}, "generation 'gen-2023-photos' is not"),
    ("gen-int", {"generation": 5}, "generation 5 is not"),
    ("version", {"format_version": 99}, "index format version 99"),
    ("dim-str", {"dim": "abc"}, "dim must be a positive integer, got 'abc'"),
    ("dim-0", {"dim": 0}, "dim must be a positive integer, got 0"),
    ("count-neg", {"count": -1}, "count must be a non-negative integer, got -1"),
    ("count-str", {"count": "3"}, "count must be a non-negative integer, got '3'"),
    ("kind", {"kind": "ivf"}, "unknown index kind 'ivf'"),
    ("checksums", {"checksums": ["x"]}, "params and checksums must be JSON objects"),
    ("params", {"params": {"M": 3}}, "bad index parameters"),
    ("params-neg", {"params": {"m": -3}}, "bad index parameters"),
    ("count-off", {"count": 5}, r"vectors.npy: shape \(7, 24\) float32, manifest says \(5, 24\)"),
    ("dim-off", {"dim": 25}, r"vectors.npy: shape \(7, 24\) float32, manifest says \(7, 25\)"),
    ("no-encoder", {"encoder_name": None}, "manifest is missing fields"),
]
MANIFEST_RAW_CASES = [
    ("invalid-json", b"{not json", "unreadable manifest"),
    ("array", b"[1, 2]", "manifest must be a JSON object"),
    ("latin1", b'{"dim": "\xe9"}', "unreadable manifest"),
    ("empty", b"", "unreadable manifest"),
]

CLI_CASES = [
    ("index-missing", ["index", "{tmp}/missing", "--index", "{ix}"], "missing: no such folder or file"),
    ("kind", ["index", "{corpus}", "--index", "{ix}", "--kind", "ivf"], "--kind must be one of flat, hnsw, ivfpq, got 'ivf'"),
    ("k0", ["search", "x", "--index", "{ix}", "-k", "0"], "Invalid value for '-k'"),
    ("k-float", ["search", "x", "--index", "{ix}", "-k", "2.7"], "Invalid value for '-k' / '--top-k': Input should be a valid integer"),
    ("no-query", ["search", "--index", "{ix}"], "nothing to search for"),
    ("no-image", ["search", "--index", "{ix}", "--image", "{tmp}/none.png"], "none.png: no such file"),
    ("modality", ["search", "x", "--index", "{ix}", "--modality", "video"], "unknown modality filter 'video'"),
    ("info-not-index", ["info", "--index", "{corpus}"], "corpus: not an omniret index"),
    ("info-file", ["info", "--index", "{corpus}/t0.txt"], "t0.txt: not an omniret index"),
    ("batch0", ["index", "{corpus}", "--index", "{ix}", "-b", "0"], "Invalid value for '--batch-size'"),
    ("user-folder", ["index", "{corpus}", "--index", "{bad}", "-m", "hash-test"], "folder is not empty and holds no"),
    ("emptied", ["index", "{tmp}/empty", "--index", "{ix}"], "empty: no such folder or file"),
    ("strict", ["index", "{bad}", "--index", "{ix}", "--strict", "-q"], "pipe.txt: not a regular file"),
    ("mass", ["index", "{corpus}", "--index", "{ix}", "-x", "*", "-q"], "would remove 7 of the 7 documents"),
    ("unknown-opt", ["index", "{corpus}", "--index", "{ix}", "--frobnicate"], "No such option: --frobnicate"),
]

ALL = (
    [("vector-" + n, f, m) for n, f, m in VECTOR_CASES]
    + [("record-" + n, f, m) for n, f, m in RECORD_CASES]
    + [("search-" + n, f, m) for n, f, m in SEARCH_CASES]
    + [("encoder-" + n, f, m) for n, f, m in ENCODER_CASES]
    + [("source-" + n, f, m) for n, f, m in SOURCE_CASES]
)
N_CASES = (len(ALL) + len(FOLDER_CASES) + len(JSONL_CASES) + len(JSONL_FILE_CASES) + len(MANIFEST_CASES)
           + len(MANIFEST_RAW_CASES) + len(CLI_CASES))


@pytest.fixture
def ctx(tmp_path):
    return Ctx(tmp_path)


def _refused(ctx: Ctx, call, pattern: str) -> None:
    before = snapshot(ctx.path)
    with pytest.raises(OmniretError, match=pattern):
        call()
    assert snapshot(ctx.path) == before, "the index changed on disk"


@pytest.mark.parametrize("name,call,pattern", ALL, ids=[c[0] for c in ALL])
def test_api_input_refused(ctx, name, call, pattern):
    _refused(ctx, lambda: call(ctx), pattern)


@pytest.mark.parametrize("name,build,pattern,kw", FOLDER_CASES, ids=[c[0] for c in FOLDER_CASES])
def test_folder_file_refused_strict(ctx, name, build, pattern, kw):
    shown = build(ctx)
    _refused(ctx, lambda: ctx.strict(ctx.bad, **kw), f"{shown}.*{pattern}|{pattern}")
    # ... and skipped (not fatal) by default: the good file is indexed, the bad one reported by name
    report = ctx.retriever().index_corpus(ctx.bad, **kw)
    assert report.added == 1 and len(report.skipped) == 1 and shown.rsplit("/", 1)[-1] in str(report.skipped[0])


@pytest.mark.parametrize("name,lines,pattern", JSONL_CASES, ids=[c[0] for c in JSONL_CASES])
def test_jsonl_line_refused_strict(ctx, name, lines, pattern):
    path = ctx.jsonl('{"did": "ok", "txt": "fine", "modality": "text"}', *lines)
    pattern = pattern.replace(":1:", ":2:").replace(":2: duplicate", ":3: duplicate")
    _refused(ctx, lambda: ctx.strict(path), pattern)
    report = ctx.retriever().index_corpus(path)
    assert report.added >= 1 and len(report.skipped) == 1 and "pool.jsonl:" in report.skipped[0].where


@pytest.mark.parametrize("name,build", JSONL_FILE_CASES, ids=[c[0] for c in JSONL_FILE_CASES])
def test_jsonl_image_refused_strict(ctx, name, build):
    path, pattern = build(ctx)
    _refused(ctx, lambda: ctx.strict(path), pattern)


@pytest.mark.parametrize("name,change,pattern", MANIFEST_CASES, ids=[c[0] for c in MANIFEST_CASES])
def test_manifest_field_refused(ctx, name, change, pattern):
    m = ctx.path / "manifest.json"
    m.write_text(json.dumps({k: v for k, v in {**json.loads(m.read_text()), **change}.items() if v is not None}))
    _refused(ctx, lambda: FlatIndex.open(ctx.path), pattern)
    assert (ctx.tmp / "outside").exists() is False


@pytest.mark.parametrize("name,raw,pattern", MANIFEST_RAW_CASES, ids=[c[0] for c in MANIFEST_RAW_CASES])
def test_manifest_bytes_refused(ctx, name, raw, pattern):
    (ctx.path / "manifest.json").write_bytes(raw)
    _refused(ctx, lambda: FlatIndex.open(ctx.path), f"manifest.json: {pattern}")


@pytest.mark.parametrize("name,args,pattern", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_input_refused(ctx, monkeypatch, capsys, name, args, pattern):
    register_hash_encoder()
    os.mkfifo(ctx.bad / "pipe.txt")
    shutil.copytree(ctx.corpus, ctx.tmp / "copy")
    fill = {"tmp": ctx.tmp, "ix": ctx.path, "corpus": ctx.corpus, "bad": ctx.bad}
    before = snapshot(ctx.path)
    code, out, err = run_cli(monkeypatch, capsys, *[a.format(**fill) for a in args])
    assert code not in (0, 3), (code, out, err)  # 3 = indexed with skipped inputs, not an error
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert pattern in lines[0], lines[0]
    assert "Traceback" not in err and snapshot(ctx.path) == before


def test_case_count():
    """The suite's size is part of its contract (recorded in docs/results.md)."""
    assert N_CASES >= 100
    print(f"{N_CASES} malformed-input cases")

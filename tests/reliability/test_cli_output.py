"""Terminal safety of the CLI: documents are data — rich markup is shown, not parsed, control characters
are escaped (tables and JSON) — and every failure, even an unexpected RuntimeError/TypeError/MemoryError
inside a model, is one line on stderr with a non-zero exit, never a traceback."""

from __future__ import annotations

import json

import pytest
from _helpers import HashEncoder, register_hash_encoder

from _cli import run as run_cli
from omniret.encoders import ENCODERS

HOSTILE = "[/INST] [bold red]boom[/] \x1b[2J\x1b]0;pwned\x07 \x9b31m \u202eevil"


@pytest.fixture
def index(tmp_path, monkeypatch, capsys):
    register_hash_encoder()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "hostile.txt").write_text(HOSTILE)
    (docs / "[link]\x1b[31m.txt").write_text("plain words here")
    ix = tmp_path / "ix"
    code, out, err = run_cli(monkeypatch, capsys, "index", str(docs), "--index", str(ix), "-m", "hash-test", "-q")
    assert code == 0, err
    assert "\x1b" not in out + err
    return ix


def test_table_shows_markup_and_escapes_controls(index, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "search", "INST boom evil words", "--index", str(index))
    assert code == 0, err
    assert "[/INST]" in out and "[bold red]boom[/]" in out and "[link]" in out
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in out
    assert "\\x1b" in out  # shown, escaped


def test_json_escapes_controls_and_stays_valid(index, monkeypatch, capsys):
    code, out, err = run_cli(monkeypatch, capsys, "search", "boom", "--index", str(index), "--json", "-k", "5")
    assert code == 0, err
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in out
    hits = json.loads(out)
    assert HOSTILE in {h["txt"] for h in hits}  # the data itself is intact, only its printing is escaped
    code, out, err = run_cli(monkeypatch, capsys, "info", "--index", str(index))
    assert code == 0 and "\x1b" not in out


class Failing(HashEncoder):
    """A real encoder whose model call fails the way a broken runtime does."""

    name = "failing-test"
    error: BaseException = RuntimeError("CUDA error: an illegal memory access\nwas encountered")

    def forward(self, batch):
        raise self.error


@pytest.mark.parametrize("error,shown", [
    (RuntimeError("CUDA error: an illegal memory access\nwas encountered"),
     "error: RuntimeError: CUDA error: an illegal memory access\\nwas encountered"),
    (MemoryError("cannot allocate 9e12 bytes"), "error: MemoryError: cannot allocate 9e12 bytes"),
    (TypeError("forward() got an unexpected keyword"), "error: TypeError: forward() got an unexpected keyword"),
    (OSError(28, "No space left on device"), "error: [Errno 28] No space left on device"),
])
def test_unexpected_errors_are_one_line(tmp_path, monkeypatch, capsys, error, shown):
    ENCODERS.add(Failing.name, Failing)
    monkeypatch.setattr(Failing, "error", error)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("alpha")
    code, out, err = run_cli(monkeypatch, capsys, "index", str(tmp_path / "docs"), "--index", str(tmp_path / "ix"),
                             "-m", "failing-test", "-q")
    assert code == 1 and err.strip() == shown and "Traceback" not in err
    assert not (tmp_path / "ix" / "manifest.json").exists()

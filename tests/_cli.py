"""Run the real `omniret` entry point in-process (shared by the CLI and reliability tests)."""

from __future__ import annotations

import sys

import pytest

from omniret.cli.app import main


def run(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """``omniret *args`` through ``main()``; returns (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["omniret", *args])
    with pytest.raises(SystemExit) as e:
        main()
    out = capsys.readouterr()
    return e.value.code, out.out, out.err

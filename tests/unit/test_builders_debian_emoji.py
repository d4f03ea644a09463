"""Debian package fetching and emoji enumeration/rendering primitives (no apt needed at test time)."""

from __future__ import annotations

import subprocess

import pytest

from omniret.data.builders import debian, emoji
from omniret.data.builders.debian import DebianFetchError, fetch_deb
from omniret.errors import OmniretError


def _no_subprocess(*a, **k):
    raise AssertionError("fetch_deb must not run a command here")


def test_invalid_package_name_is_refused(tmp_path):
    with pytest.raises(DebianFetchError, match="not a valid Debian package name"):
        fetch_deb("Bad Name; rm -rf /", tmp_path)


def test_existing_extraction_is_reused(tmp_path, monkeypatch):
    pkg = tmp_path / "fonts-demo"
    pkg.mkdir()
    (pkg / ".omniret-extracted").write_text("fonts-demo_1.0_all.deb\n")
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    assert fetch_deb("fonts-demo", tmp_path) == pkg


def test_missing_apt_get_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(debian.shutil, "which", lambda tool: None)
    with pytest.raises(DebianFetchError, match="`apt-get` is not available") as e:
        fetch_deb("fonts-demo", tmp_path)
    assert isinstance(e.value, OmniretError) and "fonts-demo" in str(e.value)


def test_apt_failure_reports_its_last_line(tmp_path, monkeypatch):
    def fake_run(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 100, "", "Reading package lists...\nE: Unable to locate package x-y")

    monkeypatch.setattr(debian.shutil, "which", lambda tool: "/usr/bin/" + tool)
    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DebianFetchError, match="E: Unable to locate package x-y"):
        fetch_deb("x-y", tmp_path)


def test_half_extraction_is_redone(tmp_path, monkeypatch):
    """A package dir without the completion marker is removed and extracted again from the cached .deb."""
    (tmp_path / "pkg-a_1.0_all.deb").write_bytes(b"fake")
    stale = tmp_path / "pkg-a"
    stale.mkdir()
    (stale / "leftover").write_text("x")
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd[:2])
        assert cmd[0] == "dpkg"  # the .deb is cached, so no download
        dest = cmd[3]
        (tmp_path / dest).mkdir(exist_ok=True)
        (tmp_path / dest / "payload").write_text("ok")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(debian.shutil, "which", lambda tool: "/usr/bin/" + tool)
    monkeypatch.setattr(subprocess, "run", fake_run)
    out = fetch_deb("pkg-a", tmp_path)
    assert calls == [["dpkg", "-x"]]
    assert (out / "payload").read_text() == "ok" and not (out / "leftover").exists()
    assert (out / ".omniret-extracted").read_text().strip() == "pkg-a_1.0_all.deb"


@pytest.mark.parametrize(
    ("cp", "expected"),
    [
        (0x1F34E, "red apple"),
        (0x1F680, "rocket"),
        (0x2601, "cloud"),
        (ord("#"), None),  # keycap base
        (0x200D, None),  # zero width joiner
        (0x1F1E6, None),  # regional indicator letter
        (0x1F3FB, None),  # skin-tone modifier
        (0xE0067, None),  # tag character
    ],
)
def test_standalone_emoji_filter(cp, expected):
    assert emoji._keep(cp) == expected


def test_render_with_cached_font():
    font = debian.default_cache_dir() / emoji.EMOJI_PACKAGE / emoji.FONT_RELPATH
    if not font.is_file():
        pytest.skip("Noto Color Emoji not in the Debian cache (run scripts/make_sample_corpus.py once)")
    names = dict((n, cp) for cp, n in emoji.list_emoji(font))
    assert len(names) > 1000 and "red apple" in names
    img = emoji.render_emoji(names["red apple"], font, size=64)
    assert img.size == (64, 64) and img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 255, 255)
    r, g, b = img.getpixel((32, 36))
    assert r > 180 and g < 140 and b < 100  # the apple's red body
    rgba = emoji.render_emoji(names["red apple"], font, size=64, background="transparent")
    assert rgba.mode == "RGBA" and rgba.getpixel((0, 0))[3] == 0
    with pytest.raises(ValueError, match="background"):
        emoji.render_emoji(names["red apple"], font, background="pink")

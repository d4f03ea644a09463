"""The npm fetcher: names are validated before any subprocess, and a complete extraction is reused offline."""

from __future__ import annotations

import pytest

from omniret.data.builders import npm
from omniret.data.builders.npm import NpmFetchError, fetch_npm


@pytest.mark.parametrize("name,version", [("../etc", "1.0.0"), ("a b", "1.0.0"), ("@x/y", "latest; rm -rf /"), ("", "1")])
def test_bad_names_and_versions_are_refused(tmp_path, name, version):
    with pytest.raises(NpmFetchError, match="not a valid npm package"):
        fetch_npm(name, version, tmp_path)


def test_complete_extraction_is_reused_without_npm(tmp_path, monkeypatch):
    done = tmp_path / "@mdi__svg@7.4.47"
    (done / "package").mkdir(parents=True)
    (done / ".omniret-extracted").write_text("@mdi/svg@7.4.47\n")
    monkeypatch.setattr(npm.shutil, "which", lambda _: None)  # npm absent: must not be needed
    assert fetch_npm("@mdi/svg", "7.4.47", tmp_path) == done / "package"
    with pytest.raises(NpmFetchError, match="npm. is not available"):
        fetch_npm("openmoji", "17.0.0", tmp_path)  # not extracted yet, and no npm: one clear error


def test_openmoji_domain_renders_single_code_point_svgs_with_their_unicode_names(tmp_path, monkeypatch):
    """The openmoji source on an extracted package laid out like the real one: single code points render (with
    resvg, onto white, at the domain size); sequences and private-use extras (no Unicode name) are skipped."""
    from omniret.data.builders import domains

    svg = tmp_path / "openmoji@17.0.0" / "package" / "color" / "svg"
    svg.mkdir(parents=True)
    circle = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72"><circle cx="36" cy="36" r="30" fill="{}"/></svg>'
    (svg / "1F34E.svg").write_text(circle.format("#d22f27"))          # red apple
    (svg / "1F468-200D-1F469.svg").write_text(circle.format("#000"))  # a ZWJ sequence
    (svg / "E000.svg").write_text(circle.format("#000"))              # an OpenMoji extra (private use area)
    (tmp_path / "openmoji@17.0.0" / ".omniret-extracted").write_text("openmoji@17.0.0\n")
    monkeypatch.setattr(npm.shutil, "which", lambda _: None)
    out = list(domains.openmoji(tmp_path, 32))
    assert [(k, c) for k, c, _ in out] == [("emoji:1f34e", "red apple")]
    img = out[0][2]
    assert img.mode == "RGB" and img.size == (32, 32)
    assert img.getpixel((16, 16)) == (210, 47, 39) and img.getpixel((0, 0)) == (255, 255, 255)

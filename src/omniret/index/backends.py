"""The index backend registry and the one rule that turns an index location into a backend.

A location is a string:

* ``postgresql://user@host:5432/db#name`` -> ``pgvector`` (table ``name``, default ``omniret``);
* ``http(s)://host:6333#name`` -> ``qdrant`` server or cluster (collection ``name``);
* a directory -> whichever backend stored an index there (``local`` or an embedded ``qdrant``).

Backends other than ``local`` import their client libraries only when used (extras ``pgvector``,
``qdrant``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omniret.errors import OmniretError
from omniret.index.base import Index
from omniret.index.manifest import Manifest
from omniret.registry import Registry

#: backend name -> a function returning its :class:`Index` class (lazy, so extras stay optional)
BACKENDS: Registry[Callable[[], type[Index]]] = Registry("index backend")


def _local() -> type[Index]:
    from omniret.index.flat import FlatIndex

    return FlatIndex


def _pgvector() -> type[Index]:
    from omniret.index.pgvector import PgVectorIndex

    return PgVectorIndex


def _qdrant() -> type[Index]:
    from omniret.index.qdrant import QdrantIndex

    return QdrantIndex


BACKENDS.add("local", _local, "the local faiss flat (exact) / HNSW index in a directory")
BACKENDS.add("pgvector", _pgvector, "PostgreSQL + pgvector: a table with an HNSW index (postgresql://...#name)")
BACKENDS.add("qdrant", _qdrant, "Qdrant: embedded in a directory, or a server (http://host:6333#name)")

_SCHEMES = {"postgresql": "pgvector", "postgres": "pgvector", "http": "qdrant", "https": "qdrant"}


def backend_class(name: str) -> type[Index]:
    """The :class:`Index` class registered as ``name`` (a clear error names the missing extra)."""
    loader = BACKENDS.get(name)
    try:
        return loader()
    except ImportError as e:
        raise OmniretError(f"the {name} backend needs `pip install omniret[{name}]` ({e})") from e


def split_url(location: str, default_name: str = "omniret") -> tuple[str, str]:
    """``"scheme://...#name"`` -> ``("scheme://...", "name")``; the name must be a plain identifier."""
    url, _, name = location.partition("#")
    name = name or default_name
    if not name.replace("_", "a").isalnum() or not name[0].isalpha():
        raise OmniretError(f"index name {name!r} in {location!r}: use letters, digits and _ (starting with a letter)")
    return url, name.lower()


def scheme_backend(location: str) -> str | None:
    """The backend a URL location names by its scheme, or ``None`` for a path."""
    scheme = location.split("://", 1)[0].lower() if "://" in location else ""
    return _SCHEMES.get(scheme)


def find_backend(location: str | os.PathLike) -> str:
    """The backend holding an existing index at ``location`` (see the module docstring)."""
    loc = os.fspath(location)
    named = scheme_backend(loc)
    if named is not None:
        return named
    for name in ("local", "qdrant"):
        if backend_class(name).exists(loc):
            return name
    raise OmniretError(f"{loc}: not an omniret index (no local or embedded-qdrant index in this directory)")


def location_for(index: str | os.PathLike, backend: str, url: str | None = None) -> str:
    """The location string of ``--index INDEX --backend BACKEND [--url URL]`` (the CLI's spelling)."""
    index = os.fspath(index)
    if url is None:
        if backend == "pgvector" and scheme_backend(index) is None:
            raise OmniretError("--backend pgvector needs --url postgresql://... (or --index postgresql://...#name)")
        return index
    if scheme_backend(url) != backend:
        raise OmniretError(f"--url {url!r} does not fit --backend {backend} (pgvector: postgresql://, qdrant: http://)")
    return f"{url.partition('#')[0]}#{Path(index).name}"


def open_index(location: str | os.PathLike, encoder: Any = None) -> Index:
    """Open the index at ``location`` with its backend; with ``encoder``, refuse a mismatched one."""
    loc = os.fspath(location)
    return backend_class(find_backend(loc)).open(loc, encoder)


def index_exists(location: str | os.PathLike, backend: str | None = None) -> bool:
    """True when an index is stored at ``location`` (by ``backend``, or by whichever the location names)."""
    loc = os.fspath(location)
    name = backend or scheme_backend(loc)
    if name is not None:
        return backend_class(name).exists(loc)
    return any(backend_class(n).exists(loc) for n in ("local", "qdrant"))


def create_index(location: str | os.PathLike | None, manifest: Manifest, backend: str = "local", **options: Any) -> Index:
    """A new, empty index of ``backend`` at ``location`` (``None``: in memory, ``local`` only)."""
    if location is None:
        if backend != "local":
            raise OmniretError(f"the {backend} backend needs a location")
        return backend_class("local").create(None, manifest, **options)
    loc = os.fspath(location)
    named = scheme_backend(loc)
    if named is not None and named != backend:
        raise OmniretError(f"{loc}: this location is a {named} index, not {backend}")
    cls = backend_class(backend)
    if cls.exists(loc):
        raise OmniretError(f"{loc}: an index already exists there; open it instead")
    return cls.create(loc, manifest, **options)

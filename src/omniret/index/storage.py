"""Reading and writing one generation of the embedded index, with a SHA-256 of every file.

Files of a generation: ``vectors.npy`` (``(N, D)`` float32, the source of truth), ``records.jsonl`` (one
:class:`~omniret.index.base.Record` a line) and, for HNSW, ``hnsw.faiss`` (derived: rebuilt from the vectors
when missing or corrupt). Vectors and records are verified at open — checksum, shape, finite values, record
count — and any failure is a :class:`~omniret.errors.DataError` naming the file, never a silently shorter
index.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

import numpy as np

from omniret.errors import DataError
from omniret.index.ann import ANNGraph, ANNParams
from omniret.index.base import Record
from omniret.io import fsync_path, write_durable
from omniret.types import MODALITIES

VECTORS = "vectors.npy"
RECORDS = "records.jsonl"
GRAPH = "hnsw.faiss"
log = logging.getLogger(__name__)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def encode_vectors(vectors: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vectors, np.float32), allow_pickle=False)
    return buf.getvalue()


def encode_records(records: list[Record]) -> bytes:
    return "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def write_generation(gen: Path, vectors: np.ndarray, records: list[Record], graph: bytes | None) -> dict[str, str]:
    """Write and fsync the files of generation directory ``gen``; returns their SHA-256 by file name."""
    files = {VECTORS: encode_vectors(vectors), RECORDS: encode_records(records)}
    if graph is not None:
        files[GRAPH] = graph
    for name, data in files.items():
        write_durable(gen / name, data)
    fsync_path(gen)
    return {name: sha256(data) for name, data in files.items()}


def _read_verified(path: Path, checksums: dict[str, str]) -> bytes:
    """The bytes of ``path``, refused when the manifest recorded a different SHA-256 for it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: index file is missing") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read index file ({e.strerror or e})") from None
    want = checksums.get(path.name)
    if want is not None and sha256(data) != want:
        raise DataError(f"{path}: checksum mismatch ({len(data)} bytes): the file is corrupt or was modified")
    return data


def read_vectors(gen: Path, count: int, dim: int, checksums: dict[str, str]) -> np.ndarray:
    """The verified ``(count, dim)`` float32 vectors of ``gen``."""
    path = gen / VECTORS
    data = _read_verified(path, checksums)
    try:
        vectors = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataError(f"{path}: not a readable vectors file ({e})") from None
    if vectors.dtype != np.float32 or vectors.shape != (count, dim):
        raise DataError(f"{path}: shape {vectors.shape} {vectors.dtype}, manifest says ({count}, {dim}) float32")
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if len(bad):
        raise DataError(f"{path}: {len(bad)} vector(s) hold NaN or infinite values (first row {bad[0]})")
    return vectors


def read_records(gen: Path, count: int, checksums: dict[str, str]) -> list[Record]:
    """The verified records of ``gen`` (exactly ``count``, unique ids)."""
    path = gen / RECORDS
    try:
        lines = _read_verified(path, checksums).decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    records, seen = [], set()
    for n, line in enumerate(lines, 1):
        try:
            r = Record.from_dict(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"{path}:{n}: malformed record ({e})") from None
        if r.id in seen:
            raise DataError(f"{path}:{n}: duplicate id {r.id!r}")
        if r.modality not in MODALITIES:
            raise DataError(f"{path}:{n}: unknown modality {r.modality!r}")
        seen.add(r.id)
        records.append(r)
    if len(records) != count:
        raise DataError(f"{path}: {len(records)} records, manifest says {count}")
    return records


def read_graph(
    gen: Path, count: int, dim: int, kind: str, params: ANNParams, checksums: dict[str, str]
) -> ANNGraph | None:
    """The saved HNSW graph of ``gen``, or ``None`` (rebuild from the vectors) when it is missing, fails its
    checksum, does not deserialize or does not cover exactly ``count`` rows of ``dim``."""
    path = gen / GRAPH
    try:
        graph = ANNGraph.deserialize(_read_verified(path, checksums), dim, kind, params)
        if len(graph) != count or graph.faiss.d != dim:
            raise DataError(f"{path}: graph covers {len(graph)} rows of dim {graph.faiss.d}")
    except (DataError, RuntimeError, ValueError) as e:
        log.warning("%s; rebuilding the ANN structure from the stored vectors", e)
        return None
    return graph

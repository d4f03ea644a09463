"""Shared by the reliability suite: a cheap deterministic encoder, index snapshots, subprocess runners.

``HashEncoder`` is a real :class:`omniret.Encoder` (the base class's batching, normalisation and error
paths all run) whose vectors are computed from the content: hashed word counts for text, colour statistics
of the decoded image (through :func:`omniret.images.load_image`, so a corrupt image fails exactly as with a
real model). It costs microseconds, so the suite stays fast.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from omniret.encoders.base import Encoder
from omniret.index import FlatIndex, Record

ROOT = Path(__file__).resolve().parents[2]
DIM = 24


class HashEncoder(Encoder):
    name = "hash-test"
    dim = DIM
    family = "test"

    def _vec(self, item) -> np.ndarray:
        v = np.zeros(DIM, np.float32)
        v[0] = 0.25  # a bias so no document embeds to the zero vector
        for t in item.texts:
            for w in t.lower().split():
                v[1 + int(hashlib.md5(w.encode()).hexdigest(), 16) % 15] += 1.0
        for im in item.images:
            a = np.asarray(im.load().resize((2, 2)), np.float32).reshape(-1) / 255.0
            v[16:24] += a[:8]
        return v

    def prepare(self, items, *, is_query):
        return np.stack([self._vec(it) for it in items])

    def forward(self, batch):
        return torch.from_numpy(batch)


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def make_index(path: Path | None, n: int = 12, kind: str = "flat", seed: int = 0) -> FlatIndex:
    """A saved index (when ``path``) of ``n`` random unit vectors with ids ``d0..``."""
    enc = HashEncoder()
    ix = FlatIndex(DIM, encoder_name=enc.name, recipe_hash=enc.recipe_hash, kind=kind, path=path)
    ix.add(unit(np.random.default_rng(seed), n), [Record(id=f"d{i}", modality="text", txt=f"doc {i}") for i in range(n)])
    if path is not None:
        ix.save()
    return ix


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path -> bytes (the writer lock file excluded: it only ever holds
    the last holder's pid)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".omniret.lock":
            out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout's ``src`` and this folder importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(Path(__file__).parent)]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def register_hash_encoder() -> None:
    """Make ``--model hash-test`` loadable by the CLI run in this process."""
    from omniret.encoders import ENCODERS, load_builtins

    load_builtins()
    ENCODERS.add(HashEncoder.name, HashEncoder)


def write_png_header(path: Path, width: int, height: int) -> None:
    """A 1x1 PNG whose header claims ``width`` x ``height`` (a decompression bomb's calling card)."""
    import io
    import struct
    import zlib

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))

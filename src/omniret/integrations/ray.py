"""Encoding on a Ray cluster with Ray Data: CPU tasks read and decode files, one model per actor, batches
streamed, results written as shards with a manifest (:mod:`omniret.index.shards`).

    >>> shards = encode_with_ray(items, "default", "work/shards", workers=2, gpus_per_worker=1)

Pipeline (Ray Data, streaming): ``from_items`` (one row per document: id, text parts, image paths, shard and
position) -> ``map_batches(decode)`` on CPU tasks (images read, EXIF-rotated, size-capped and converted to
RGB pixels by :func:`omniret.images.load_image`) -> ``map_batches(EncodeActor)`` on ``workers`` actors, each
loading the encoder once (``num_gpus=gpus_per_worker``) -> the driver gathers rows by shard and writes each
shard as soon as it is whole. Without GPUs the decode step asks for the actor's CPUs, so Ray Data fuses the
two into one operator (decode runs in the actor's process, before the batch reaches the model): separate decode
tasks could never be scheduled while the actors hold every CPU of a small machine. Shards are fixed slices of the item list, so a job that is killed resumes by
skipping the shards already listed in ``shards.json`` (same items and encoder, checked by a key).

Needs the ``ray`` extra (``ray[data]``); the vectors equal local encoding (tested to 1e-5).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omniret.errors import OmniretError
from omniret.index.base import Record
from omniret.index.manifest import Manifest
from omniret.index.shards import ShardWriter
from omniret.types import ImagePart, Item


def _rows(items: Sequence[Item], shard_size: int, skip: set[int]) -> list[dict[str, Any]]:
    """One plain row per item not in a finished shard; images travel as paths (decoded in CPU tasks)."""
    out = []
    for pos, it in enumerate(items):
        if pos // shard_size in skip:
            continue
        kinds, texts, paths = [], [], []
        for p in it.parts:
            if isinstance(p, ImagePart):
                if p.path is None:
                    raise OmniretError(f"item {it.id!r}: the ray engine reads images from files; got an in-memory image")
                kinds.append("i")
                paths.append(p.path)
            else:
                kinds.append("t")
                texts.append(p)
        out.append({"pos": pos, "kinds": "".join(kinds), "texts": texts, "paths": paths, "inst": it.instruction or ""})
    return out


def decode(batch: dict[str, Any]) -> dict[str, Any]:
    """CPU task: read and decode every image of the batch into RGB pixels (bytes + shape per image)."""
    from omniret.images import load_image

    pixels, shapes = [], []
    for paths in batch["paths"]:
        imgs = [load_image(str(p)) for p in paths]
        pixels.append([im.tobytes() for im in imgs])
        shapes.append([[im.height, im.width] for im in imgs])
    return {**batch, "pixels": pixels, "shapes": shapes}


def rebuild(row_kinds: str, texts: Sequence[str], pixels: Sequence[bytes], shapes: Sequence[Sequence[int]], inst: str) -> Item:
    """The Item a decoded row describes (parts in their original order)."""
    from PIL import Image

    t, i, parts = iter(texts), iter(zip(pixels, shapes, strict=True)), []
    for k in row_kinds:
        if k == "t":
            parts.append(next(t))
        else:
            buf, (h, w) = next(i)
            parts.append(ImagePart(Image.frombytes("RGB", (int(w), int(h)), bytes(buf))))
    return Item(parts=parts, instruction=inst or None)


class EncodeActor:
    """A Ray actor holding one encoder; maps decoded batches to vectors."""

    def __init__(self, encoder_ref: str, side: str, batch_size: int, threads: int) -> None:
        import torch

        from omniret.encoders import load_encoder

        torch.set_num_threads(threads)
        self.encoder = load_encoder(encoder_ref)
        self.side, self.batch_size = side, batch_size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        items = [
            rebuild(k, list(t), list(p), [list(s) for s in sh], inst)
            for k, t, p, sh, inst in zip(batch["kinds"], batch["texts"], batch["pixels"], batch["shapes"], batch["inst"], strict=True)
        ]
        enc = self.encoder.encode_queries if self.side == "queries" else self.encoder.encode_documents
        vecs = enc(items, batch_size=self.batch_size)
        return {"pos": np.asarray(batch["pos"]), "vector": vecs}


def plan_key(items: Sequence[Item], encoder_name: str, recipe_hash: str, side: str, shard_size: int) -> str:
    """What a resumable job must match: the ordered items' ids and content, the encoder and the sharding."""
    h = hashlib.sha1(f"{encoder_name}|{recipe_hash}|{side}|{shard_size}".encode())
    for it in items:
        h.update(f"\0{it.id}\0{it.fingerprint()}".encode())
    return h.hexdigest()


def encode_with_ray(
    items: Sequence[Item],
    encoder: Any,
    out: str | os.PathLike,
    *,
    encoder_ref: str | None = None,
    side: str = "documents",
    workers: int = 1,
    gpus_per_worker: float = 0,
    cpus_per_worker: float = 1,
    batch_size: int = 32,
    shard_size: int = 1024,
    address: str | None = None,
) -> Path:
    """Encode ``items`` on Ray into shard directory ``out`` (resuming a killed job there); returns ``out``.

    ``encoder`` supplies the manifest facts (name, recipe hash, dim); each actor loads ``encoder_ref``
    (default: the encoder's source or name). ``address`` joins a running cluster (``"auto"``); without
    it Ray starts locally (or reuses an initialised session).
    """
    try:
        import ray
    except ImportError as e:
        raise OmniretError(f"the ray engine needs `pip install omniret[ray]` ({e})") from e

    if side not in ("documents", "queries"):
        raise OmniretError(f"side must be documents or queries, got {side!r}")
    if workers < 1 or shard_size < 1 or batch_size < 1:
        raise OmniretError(f"workers, shard_size and batch_size must be >= 1 (got {workers}, {shard_size}, {batch_size})")
    ref = encoder_ref or str(getattr(encoder, "source", None) or encoder.name)
    key = plan_key(items, encoder.name, encoder.recipe_hash, side, shard_size)
    manifest = Manifest(encoder_name=encoder.name, recipe_hash=encoder.recipe_hash, dim=encoder.dim, encoder_ref=ref)
    writer = _writer(Path(out), manifest, key)
    n_shards = -(-len(items) // shard_size)
    todo = [i for i in range(n_shards) if not writer.done(i)]
    if todo:
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
        rows = _rows(items, shard_size, set(range(n_shards)) - set(todo))
        # CPU-only, decode asks for what an actor holds, so Ray Data fuses it into the actor (a separate task
        # stage would wait forever for CPUs that the actors keep); with GPUs it runs as separate CPU tasks
        decode_cpus = cpus_per_worker if not gpus_per_worker else 1
        ds = ray.data.from_items(rows).map_batches(decode, batch_size=batch_size, num_cpus=decode_cpus)
        ds = ds.map_batches(
            EncodeActor,
            fn_constructor_args=(ref, side, batch_size, max(1, int(cpus_per_worker))),
            batch_size=batch_size,
            concurrency=workers,
            num_gpus=gpus_per_worker,
            num_cpus=cpus_per_worker,
        )
        _gather(ds, items, writer, shard_size)
    writer.finish()
    return Path(out)


def _writer(out: Path, manifest: Manifest, key: str) -> ShardWriter:
    """Resume ``out`` when it holds this very job's shards; start it afresh when it holds another's."""
    from omniret.index.shards import SHARDS, read_state

    if (out / SHARDS).is_file() and read_state(out).get("key") != key:
        shutil.rmtree(out)  # shards of a different item list or encoder: useless for this job
    return ShardWriter(out, manifest, resume=True, key=key)


def _gather(ds: Any, items: Sequence[Item], writer: ShardWriter, shard_size: int) -> None:
    """Stream result batches; write each shard the moment all its rows have arrived (any order)."""
    pending: dict[int, dict[int, np.ndarray]] = {}
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for pos, vec in zip(batch["pos"].tolist(), batch["vector"], strict=True):
            shard = pos // shard_size
            pending.setdefault(shard, {})[pos] = vec
            lo, hi = shard * shard_size, min(len(items), (shard + 1) * shard_size)
            if len(pending[shard]) == hi - lo:
                got = pending.pop(shard)
                writer.write(shard, np.stack([got[p] for p in range(lo, hi)]), [Record.from_item(items[p]) for p in range(lo, hi)])


def default_work_dir(key: str) -> Path:
    """Where a job's shards live until the index has them: ``$OMNIRET_CACHE/ray-shards/<job key>``."""
    root = Path(os.environ.get("OMNIRET_CACHE", Path.home() / ".cache" / "omniret"))
    return root / "ray-shards" / key[:20]


class RayEngine:
    """The ``--engine ray`` of indexing: encodes on Ray into shards, then hands them over shard by shard.

    ``work_dir`` (default :func:`default_work_dir` of the job key) keeps the shards until :meth:`done`, so
    re-running a killed ``omniret index ... --engine ray`` resumes with the shards it had finished.
    """

    def __init__(
        self,
        workers: int = 1,
        gpus_per_worker: float = 0,
        address: str | None = None,
        work_dir: str | os.PathLike | None = None,
        shard_size: int = 1024,
        cpus_per_worker: float = 1,
    ) -> None:
        self.workers, self.gpus, self.address = workers, gpus_per_worker, address
        self.work_dir, self.shard_size, self.cpus = work_dir, shard_size, cpus_per_worker
        self._used: Path | None = None

    def encode_documents(self, encoder: Any, items: Sequence[Item], batch_size: int):
        """Yield ``(vectors, records)`` per shard of ``items`` encoded on Ray."""
        from omniret.index.shards import iter_shards

        key = plan_key(items, encoder.name, encoder.recipe_hash, "documents", self.shard_size)
        out = Path(self.work_dir) if self.work_dir is not None else default_work_dir(key)
        encode_with_ray(
            items, encoder, out, workers=self.workers, gpus_per_worker=self.gpus, cpus_per_worker=self.cpus,
            batch_size=batch_size, shard_size=self.shard_size, address=self.address,
        )
        self._used = out
        yield from iter_shards(out)

    def done(self) -> None:
        if self._used is not None:
            shutil.rmtree(self._used, ignore_errors=True)
            self._used = None

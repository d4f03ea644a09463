"""The embedded on-disk index: float32 vectors + JSON records in a directory, searched exactly or by HNSW.

``kind="flat"`` (default) is exact inner-product search (FAISS's BLAS kernels on the stored numpy array, no
copy). ``kind="hnsw"`` / ``"ivfpq"`` add a faiss ANN structure over the same vectors (fp32/fp16/int8 storage,
see :mod:`omniret.index.ann`). Either way a modality filter is exact:
a filtered-out document is never returned, and fewer than ``k`` hits come back only when fewer documents
pass the filter. Saves are atomic, locked and merged with concurrent writers' saves (see
:mod:`omniret.index.persist`); files are verified at open (see :mod:`omniret.index.storage`).
"""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from omniret.errors import DataError, IndexMismatchError, OmniretError
from omniret.index.ann import ANNGraph, ANNParams
from omniret.index.base import Index, Record, parse_modalities
from omniret.index.manifest import KINDS, MANIFEST, Manifest
from omniret.index.persist import load_state, save_index
from omniret.index.storage import GRAPH, RECORDS, VECTORS  # noqa: F401  (file names, re-exported)
from omniret.types import MODALITIES, Hit

_MOD_CODE = {m: i for i, m in enumerate(MODALITIES)}
#: stored vectors must be L2-normalised (scores are inner products = cosines); tolerance on the norm
NORM_TOLERANCE = 1e-2


def check_k(k: object) -> int:
    """``k`` as an int, or an :class:`OmniretError` for a non-integer or ``k < 1``."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) < 1:
        raise OmniretError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def rescore(queries: np.ndarray, vectors: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact scores of candidate ``rows`` ``(Q, k)`` (``-1`` = none) from the stored ``vectors``, re-sorted best
    first: the graph only proposes candidates, so a damaged graph can never report a score it made up."""
    safe = np.where(rows < 0, 0, rows)
    scores = np.zeros(rows.shape, np.float32)
    step = max(1, 2**24 // max(1, rows.shape[1] * vectors.shape[1]))  # gather at most ~64 MB at a time
    for s in range(0, len(rows), step):
        scores[s : s + step] = np.einsum("qd,qkd->qk", queries[s : s + step], vectors[safe[s : s + step]])
    scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
    order = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)


def exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int, rows: np.ndarray | None = None):
    """Exact inner-product top-``k`` of ``queries`` ``(Q, D)`` over ``vectors`` ``(N, D)``.

    ``rows`` restricts the search to those row numbers. Returns ``(scores, rows)`` each ``(Q, k')`` with
    ``k' = min(k, candidates)``. Uses ``faiss.knn`` (BLAS + heap selection), ~3x faster than numpy's
    matmul + argpartition at 100k x 384 (see benchmarks/bench_search.py).
    """
    import faiss

    base = vectors if rows is None else vectors[rows]
    kk = min(k, len(base))
    if kk == 0:
        return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
    scores, idx = faiss.knn(
        np.ascontiguousarray(queries, np.float32), np.ascontiguousarray(base), kk, metric=faiss.METRIC_INNER_PRODUCT
    )
    return scores, (idx if rows is None else rows[idx])


class FlatIndex(Index):
    """Embedded index of ``(N, dim)`` float32 vectors with one :class:`Record` per row.

    Registered as the ``local`` backend: the local faiss flat (exact) / HNSW / IVF-PQ index in a directory.
    """

    backend = "local"

    #: with a modality filter, HNSW is skipped when this few documents pass it (exact is cheaper then)
    exact_below = 1024
    #: seconds a save waits for another writer's lock (None: ``$OMNIRET_LOCK_TIMEOUT``, default 120)
    lock_timeout: float | None = None

    def __init__(
        self,
        dim: int,
        *,
        encoder_name: str,
        recipe_hash: str,
        encoder_ref: str | None = None,
        kind: str = "flat",
        hnsw: ANNParams | dict | None = None,
        path: str | os.PathLike | None = None,
    ) -> None:
        if int(dim) < 1:
            raise OmniretError(f"index dim must be >= 1, got {dim}")
        if kind not in KINDS:
            raise OmniretError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}")
        params = hnsw if isinstance(hnsw, ANNParams) else ANNParams.from_dict(hnsw or {})
        self.manifest = Manifest(
            encoder_name=encoder_name,
            recipe_hash=recipe_hash,
            dim=int(dim),
            kind=kind,
            encoder_ref=encoder_ref,
            params=vars(params).copy(),
        )
        self.path = Path(path) if path is not None else None
        self.hnsw_params = params
        self._vectors = np.zeros((0, self.dim), np.float32)
        self._records: list[Record] = []
        self._rows: dict[str, int] = {}
        self._codes = np.zeros(0, np.int8)  # modality code per row, for fast filter masks
        self._graph: ANNGraph | None = None  # None: (re)build before the next ANN search/save
        #: changes since the last open/save, by id (True: put, False: removed): a save re-applies them to the
        #: latest committed state when another writer saved in between, so neither loses an update
        self._pending: dict[str, bool] = {}
        #: (directory, generation) this state was loaded from or last saved as
        self._base: tuple[Path, str | None] | None = None
        self._kind_changed = False
        self.dirty = False

    # ------------------------------------------------------------------ backend protocol
    @classmethod
    def create(cls, location: str | os.PathLike | None, manifest: Manifest, **options: Any) -> FlatIndex:
        """A new empty index described by ``manifest``; ``options`` are :class:`ANNParams` fields."""
        return cls(
            manifest.dim,
            encoder_name=manifest.encoder_name,
            recipe_hash=manifest.recipe_hash,
            encoder_ref=manifest.encoder_ref,
            kind=manifest.kind,
            hnsw=options or None,
            path=location,
        )

    @classmethod
    def exists(cls, location: str | os.PathLike) -> bool:
        return (Path(location) / MANIFEST).is_file()

    @property
    def location(self) -> str | None:
        return str(self.path) if self.path is not None else None

    @property
    def pending(self) -> bool:
        return self.dirty or (self.path is not None and not self.exists(self.path))

    def iter_pages(self, page_size: int = 1000, vectors: bool = False):
        """Rows in storage order, ``page_size`` at a time (vectors are views, not copies)."""
        for s in range(0, len(self._records), page_size):
            yield self._records[s : s + page_size], (self._vectors[s : s + page_size] if vectors else None)

    def modality_counts(self) -> dict[str, int]:
        counts = {mod: int((self._codes == code).sum()) for mod, code in _MOD_CODE.items()}
        return {k: v for k, v in counts.items() if v}

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self._records)

    @property
    def vectors(self) -> np.ndarray:
        """The stored ``(N, dim)`` float32 vectors (read-only view)."""
        v = self._vectors.view()
        v.flags.writeable = False
        return v

    def get(self, id: str) -> Record | None:
        row = self._rows.get(id)
        return None if row is None else self._records[row]

    def records(self) -> list[Record]:
        return list(self._records)

    def ids(self) -> list[str]:
        return [r.id for r in self._records]

    def info(self) -> dict[str, Any]:
        """Manifest facts plus per-modality document counts."""
        m = self.manifest
        counts = {mod: int((self._codes == code).sum()) for mod, code in _MOD_CODE.items()}
        return {
            "backend": self.backend,
            "location": self.location,
            "path": str(self.path) if self.path else None,
            "encoder": m.encoder_name,
            "encoder_ref": m.encoder_ref,
            "recipe_hash": m.recipe_hash,
            "dim": m.dim,
            "metric": m.metric,
            "kind": m.kind,
            "hnsw": vars(self.hnsw_params).copy() if m.kind != "flat" else None,
            "count": len(self),
            "modalities": {k: v for k, v in counts.items() if v},
            "generation": m.generation,
            "created": m.created,
            "updated": m.updated,
            "format_version": m.format_version,
        }

    def check_encoder(self, encoder: Any) -> None:
        """Refuse an encoder other than the one that built this index (name + recipe hash)."""
        self.manifest.check_encoder(encoder.name, encoder.recipe_hash, self.path or "index")

    def set_kind(self, kind: str) -> None:
        """Switch between exact (``flat``) and ``hnsw`` search; vectors are kept, the graph is rebuilt."""
        if kind not in KINDS:
            raise OmniretError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}")
        if kind != self.kind:
            self.manifest.kind, self._graph, self.dirty = kind, None, True
            self._kind_changed = True

    # ------------------------------------------------------------------ mutation
    def _check_vectors(self, vectors: np.ndarray, n: int) -> np.ndarray:
        try:
            v = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise DataError(f"vectors must be a numeric (N, {self.dim}) array ({e})") from None
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise IndexMismatchError(f"vectors of shape {v.shape} do not fit index dim {self.dim}")
        if len(v) != n:
            raise DataError(f"{len(v)} vectors but {n} records")
        if not np.isfinite(v).all():
            raise DataError("vectors contain NaN or infinite values")
        norms = np.linalg.norm(v, axis=1)
        bad = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
        if len(bad):
            raise DataError(
                f"vector {bad[0]} has L2 norm {norms[bad[0]]:.4g}; the index stores L2-normalised vectors "
                f"(divide each row by its norm; a zero vector cannot be indexed)"
            )
        return v

    def _check_records(self, records: Sequence[Record]) -> None:
        seen: set[str] = set()
        for r in records:
            if not isinstance(r, Record):
                raise DataError(f"expected omniret.index.Record objects, got {type(r).__name__}")
            if not isinstance(r.id, str) or not r.id:
                raise DataError(f"record id must be a non-empty string, got {r.id!r}")
            if r.id in seen:
                raise DataError(f"duplicate id {r.id!r} in one add")
            if r.modality not in _MOD_CODE:
                raise DataError(f"record {r.id!r}: unknown modality {r.modality!r}")
            try:  # refuse what the save could not write (surrogates from non-UTF-8 names, non-JSON metadata)
                json.dumps(r.to_dict(), ensure_ascii=False).encode("utf-8")
            except (TypeError, ValueError, UnicodeEncodeError) as e:
                raise DataError(f"record {r.id!r} cannot be stored as UTF-8 JSON ({e})") from None
            seen.add(r.id)

    def add(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        records = list(records)
        v = self._check_vectors(vectors, len(records))
        self._check_records(records)
        clash = [r.id for r in records if r.id in self._rows]
        if clash:
            raise DataError(f"ids already in the index: {clash[:5]!r}; use upsert() to replace them")
        start = len(self._records)
        self._vectors = np.concatenate([self._vectors, v]) if start else v.copy()
        self._records.extend(records)
        self._rows.update({r.id: start + i for i, r in enumerate(records)})
        self._codes = np.concatenate([self._codes, [_MOD_CODE[r.modality] for r in records]]).astype(np.int8)
        if self._graph is not None:
            self._graph.add(v)  # HNSW can grow in place
        self._pending.update((r.id, True) for r in records)
        self.dirty = True

    def upsert(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        records = list(records)
        v = self._check_vectors(vectors, len(records))
        self._check_records(records)
        old = [i for i, r in enumerate(records) if r.id in self._rows]
        for i in old:  # replace in place so storage order (and tie-breaking) stays stable
            row = self._rows[records[i].id]
            self._vectors[row] = v[i]
            self._records[row] = records[i]
            self._codes[row] = _MOD_CODE[records[i].modality]
        if old:
            self._graph = None  # HNSW cannot update a node's vector
            self._pending.update((records[i].id, True) for i in old)
        new = np.setdiff1d(np.arange(len(records)), old)
        if len(new):
            self.add(v[new], [records[i] for i in new])
        self.dirty = self.dirty or bool(old)

    def remove(self, ids: Iterable[str]) -> int:
        ids = [ids] if isinstance(ids, str) else list(ids)
        drop = {self._rows[i] for i in ids if i in self._rows}
        if not drop:
            return 0
        self._pending.update((self._records[row].id, False) for row in drop)
        keep = np.ones(len(self._records), bool)
        keep[list(drop)] = False
        self._vectors = self._vectors[keep]
        self._codes = self._codes[keep]
        self._records = [r for r, k in zip(self._records, keep, strict=True) if k]
        self._rows = {r.id: i for i, r in enumerate(self._records)}
        self._graph = None  # HNSW cannot delete; rebuild lazily
        self.dirty = True
        return len(drop)

    # ------------------------------------------------------------------ search
    def _allowed(self, modality: str | Sequence[str] | None) -> np.ndarray | None:
        mods = parse_modalities(modality)
        if mods is None:
            return None
        mask = np.isin(self._codes, [_MOD_CODE[m] for m in mods])
        return None if mask.all() else mask

    def _ensure_graph(self) -> ANNGraph:
        if self._graph is None or len(self._graph) != len(self):
            self._graph = ANNGraph(self.dim, self.kind, self.hnsw_params)
            self._graph.add(self._vectors)
        return self._graph

    def search_rows(
        self, queries: np.ndarray, k: int = 10, modality: str | Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`search` but returns ``(scores, rows)`` arrays ``(Q, k')``; row ``-1`` pads a
        query that got fewer results (only possible with HNSW)."""
        try:
            q = np.asarray(queries, dtype=np.float32)
        except (TypeError, ValueError) as e:
            raise DataError(f"query vectors must be a numeric (Q, {self.dim}) array ({e})") from None
        if q.ndim == 1:
            q = q[None, :]
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise IndexMismatchError(f"query vectors of shape {q.shape} do not fit index dim {self.dim}")
        k = check_k(k)
        if not np.isfinite(q).all():
            raise DataError("query vectors contain NaN or infinite values")
        if (np.abs(q).max(axis=1, initial=0.0) == 0).any():
            raise DataError("a query vector is all zeros; it has no direction to search for")
        allowed = self._allowed(modality)
        rows = None if allowed is None else np.flatnonzero(allowed)
        n_ok = len(self) if rows is None else len(rows)
        if self.kind == "flat" or n_ok <= max(self.exact_below, k):
            return exact_topk(q, self._vectors, k, rows)
        kk = min(k, n_ok)
        # quantised structures propose a longer shortlist; all candidates are rescored exactly
        _, found = self._ensure_graph().search(q, kk, allowed)
        scores, found = rescore(q, self._vectors, found)
        scores, found = scores[:, :kk], found[:, :kk]
        # the graph walk may strand a selective filter with too few results: redo those queries exactly
        short = np.flatnonzero((found < 0).any(axis=1))
        if len(short):
            es, er = exact_topk(q[short], self._vectors, kk, rows)
            scores[short], found[short] = es, er
        return scores, found

    def search(
        self, queries: np.ndarray, k: int = 10, modality: str | Sequence[str] | None = None
    ) -> list[list[Hit]]:
        """Top-``k`` hits for each row of ``queries`` ``(Q, dim)`` (or one ``(dim,)`` vector), best first."""
        scores, rows = self.search_rows(queries, k, modality)
        return [
            [self._records[r].hit(s) for s, r in zip(srow, rrow, strict=True) if r >= 0]
            for srow, rrow in zip(scores.tolist(), rows.tolist(), strict=True)
        ]

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike | None = None) -> Path:
        """Persist to ``path`` (default: :attr:`path`) under the writer lock, merged with any save another
        writer made since this index was opened; returns the index directory (see :mod:`~omniret.index.persist`)."""
        if path is not None:
            self.path = Path(path)
        if self.path is None:
            raise OmniretError("this index has no directory; pass save(path)")
        return save_index(self, self.path)

    @classmethod
    def open(cls, path: str | os.PathLike, encoder: Any = None) -> FlatIndex:
        """Load and verify the live generation of ``path``; with ``encoder``, refuse a mismatched one."""
        root = Path(path)
        m, vectors, records, graph = load_state(root)
        if encoder is not None:
            m.check_encoder(encoder.name, encoder.recipe_hash, root)
        idx = cls(
            m.dim,
            encoder_name=m.encoder_name,
            recipe_hash=m.recipe_hash,
            encoder_ref=m.encoder_ref,
            kind=m.kind,
            hnsw=m.params,
            path=root,
        )
        idx._adopt(m, vectors, records, graph)
        idx._base = (root.resolve(), m.generation)
        return idx

    def _adopt(self, m: Manifest, vectors: np.ndarray, records: list[Record], graph: ANNGraph | None) -> None:
        """Replace this index's whole state with a loaded one (no pending changes)."""
        self.manifest, self._vectors, self._records, self._graph = m, vectors, records, graph
        self._rows = {r.id: i for i, r in enumerate(records)}
        self._codes = np.array([_MOD_CODE[r.modality] for r in records], np.int8)
        self.hnsw_params = ANNParams.from_dict(m.params)
        self._pending, self._kind_changed, self.dirty = {}, False, False

"""The pgvector backend: an index as a PostgreSQL table, searched by pgvector (exact or HNSW).

Location: ``postgresql://user:pass@host:5432/db#name``. The index is table ``name``::

    name(seq bigserial, id text primary key, modality text, record jsonb, embedding vector(D))
      + HNSW index on embedding (vector_ip_ops; kind "hnsw") + btree on modality
    name__manifest(k int primary key, manifest jsonb)    -- one row, the Manifest as JSON

Every change runs inside one open transaction that :meth:`PgVectorIndex.save` commits together with the
manifest, so an incremental update (new, changed and deleted documents) becomes visible all at once or,
after a crash, not at all. Each operation is its own savepoint, so a refused one leaves the rest intact.

Like the local index, a search that few documents can satisfy (``<= exact_below`` after the modality filter)
scans exactly instead of walking the graph; otherwise HNSW runs with ``hnsw.ef_search = max(ef_search, k)``.
Under a modality filter PostgreSQL's planner chooses between the modality btree (exact over the subset) and
the graph with pgvector's iterative scan (0.8+), which keeps walking until ``k`` documents pass the filter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from omniret.errors import DataError, OmniretError
from omniret.index.backends import split_url
from omniret.index.base import PAGE_SIZE, Index, Record, check_batch, check_queries, parse_modalities
from omniret.index.hnsw import HNSWParams
from omniret.index.manifest import KINDS, Manifest
from omniret.types import MODALITIES, Hit


def _redact(url: str) -> str:
    """``url`` without its password, for error messages."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, cred = head.partition("://")
    return f"{scheme}://{cred.split(':')[0]}@{tail}"


def _connect(location: str) -> tuple[Any, str]:
    import psycopg
    from pgvector.psycopg import register_vector

    url, name = split_url(location)
    try:
        conn = psycopg.connect(url, autocommit=False)
    except psycopg.Error as e:
        raise OmniretError(f"{_redact(url)}: cannot connect to PostgreSQL ({str(e).strip().splitlines()[0]})") from e
    with conn.transaction():
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    conn.commit()
    register_vector(conn)
    return conn, name


class PgVectorIndex(Index):
    """An :class:`Index` stored in a PostgreSQL table with pgvector."""

    backend = "pgvector"
    default_kind = "hnsw"
    #: at or below this many candidate documents a search scans exactly (as the local index does)
    exact_below = 1024

    def __init__(self, conn: Any, name: str, manifest: Manifest, location: str) -> None:
        from psycopg import sql

        self._conn, self._name, self.manifest, self._location = conn, name, manifest, location
        self._t = sql.Identifier(name)
        self._mt = sql.Identifier(f"{name}__manifest")
        self.hnsw_params = HNSWParams.from_dict(manifest.params)
        self._saved = False
        self.dirty = False

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, location: str, manifest: Manifest, **options: Any) -> PgVectorIndex:
        import psycopg
        from psycopg import sql

        if manifest.kind not in KINDS:
            raise OmniretError(f"unknown index kind {manifest.kind!r}; use one of {', '.join(KINDS)}")
        manifest.params = vars(HNSWParams.from_dict(options or manifest.params)).copy()
        conn, name = _connect(location)
        idx = cls(conn, name, manifest, location)
        q = sql.SQL(
            "CREATE TABLE {t} (seq bigserial, id text PRIMARY KEY, modality text NOT NULL,"
            " record jsonb NOT NULL, embedding vector({d}) NOT NULL);"
            "CREATE INDEX {mi} ON {t} (modality);"
            "CREATE TABLE {mt} (k int PRIMARY KEY, manifest jsonb NOT NULL)"
        ).format(t=idx._t, mt=idx._mt, d=sql.Literal(manifest.dim), mi=sql.Identifier(f"{name}_modality"))
        try:
            with idx._savepoint():  # uncommitted until the first save(): a crash leaves no half-made table
                conn.execute(q)
        except psycopg.errors.DuplicateTable as e:
            conn.close()
            raise OmniretError(f"{_redact(location)}: table {name!r} already exists; pick another #name") from e
        if manifest.kind == "hnsw":
            idx._create_graph()
        return idx

    @classmethod
    def open(cls, location: str, encoder: Any = None) -> PgVectorIndex:
        conn, name = _connect(location)
        raw = _read_manifest(conn, name)
        if raw is None:
            conn.close()
            raise OmniretError(f"{_redact(location)}: no omniret index named {name!r} in this database")
        m = Manifest(**{k: v for k, v in raw.items() if k in Manifest.__dataclass_fields__})
        if encoder is not None:
            m.check_encoder(encoder.name, encoder.recipe_hash, _redact(location))
        idx = cls(conn, name, m, location)
        idx._saved = True
        return idx

    @classmethod
    def exists(cls, location: str) -> bool:
        conn, name = _connect(location)
        try:
            return _read_manifest(conn, name) is not None
        finally:
            conn.close()

    @property
    def location(self) -> str:
        return _redact(self._location)

    @property
    def pending(self) -> bool:
        return self.dirty or not self._saved

    def close(self) -> None:
        """Close the connection; unsaved changes are rolled back."""
        self._conn.close()

    def _create_graph(self) -> None:
        from psycopg import sql

        p = self.hnsw_params
        with self._savepoint():
            self._conn.execute(
                sql.SQL("CREATE INDEX {g} ON {t} USING hnsw (embedding vector_ip_ops) WITH (m = {m}, ef_construction = {ef})").format(
                    g=sql.Identifier(f"{self._name}_hnsw"), t=self._t, m=sql.Literal(p.m), ef=sql.Literal(p.ef_construction)
                )
            )

    def set_kind(self, kind: str) -> None:
        """``flat`` drops the HNSW index (exact scans), ``hnsw`` builds it; committed by :meth:`save`."""
        from psycopg import sql

        if kind not in KINDS:
            raise OmniretError(f"unknown index kind {kind!r}; use one of {', '.join(KINDS)}")
        if kind == self.kind:
            return
        if kind == "hnsw":
            self._create_graph()
        else:
            with self._savepoint():
                self._conn.execute(sql.SQL("DROP INDEX {g}").format(g=sql.Identifier(f"{self._name}_hnsw")))
        self.manifest.kind, self.dirty = kind, True

    def _savepoint(self) -> Any:
        """A savepoint inside the index's open transaction (opened first if needed: psycopg would otherwise
        treat ``transaction()`` as the outermost block and COMMIT at its end, before :meth:`save`)."""
        from psycopg.pq import TransactionStatus

        if self._conn.info.transaction_status == TransactionStatus.IDLE:
            self._conn.execute("SELECT 1")
        return self._conn.transaction()

    # ------------------------------------------------------------------ records
    def _q(self, query: str, params: Sequence[Any] = (), **ids: Any) -> Any:
        from psycopg import sql

        return self._conn.execute(sql.SQL(query).format(t=self._t, mt=self._mt, **ids), params)

    def __len__(self) -> int:
        return int(self._q("SELECT count(*) FROM {t}").fetchone()[0])

    def modality_counts(self) -> dict[str, int]:
        rows = self._q("SELECT modality, count(*) FROM {t} GROUP BY modality").fetchall()
        return {m: int(n) for m, n in sorted(rows, key=lambda r: MODALITIES.index(r[0]))}

    def get(self, id: str) -> Record | None:
        row = self._q("SELECT record FROM {t} WHERE id = %s", (id,)).fetchone()
        return None if row is None else Record.from_dict(row[0])

    def iter_pages(self, page_size: int = PAGE_SIZE, vectors: bool = False) -> Iterator[tuple[list[Record], np.ndarray | None]]:
        """Keyset pagination over insertion order (``seq``): one page in memory at a time."""
        last = 0
        cols = "seq, record, embedding" if vectors else "seq, record"
        while True:
            rows = self._q(f"SELECT {cols} FROM {{t}} WHERE seq > %s ORDER BY seq LIMIT %s", (last, page_size)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            vecs = np.stack([r[2].to_numpy().astype(np.float32) for r in rows]) if vectors else None
            yield [Record.from_dict(r[1]) for r in rows], vecs
            if len(rows) < page_size:
                return

    # ------------------------------------------------------------------ mutation
    def _write(self, v: np.ndarray, records: Sequence[Record], replace: bool) -> None:
        from psycopg.types.json import Jsonb

        on_conflict = (
            "ON CONFLICT (id) DO UPDATE SET modality = EXCLUDED.modality, record = EXCLUDED.record,"
            " embedding = EXCLUDED.embedding"
            if replace
            else ""
        )
        rows = [(r.id, r.modality, Jsonb(r.to_dict()), row) for r, row in zip(records, v, strict=True)]
        with self._savepoint(), self._conn.cursor() as cur:
            cur.executemany(
                self._fmt(f"INSERT INTO {{t}} (id, modality, record, embedding) VALUES (%s, %s, %s, %s) {on_conflict}"),
                rows,
            )
        self.dirty = self.dirty or bool(rows)

    def _fmt(self, query: str) -> Any:
        from psycopg import sql

        return sql.SQL(query).format(t=self._t, mt=self._mt)

    def add(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        records = list(records)
        v = check_batch(vectors, records, self.dim)
        clash = self._q("SELECT id FROM {t} WHERE id = ANY(%s)", ([r.id for r in records],)).fetchall()
        if clash:
            raise DataError(f"ids already in the index: {[c[0] for c in clash][:5]!r}; use upsert() to replace them")
        self._write(v, records, replace=False)

    def upsert(self, vectors: np.ndarray, records: Sequence[Record]) -> None:
        records = list(records)
        self._write(check_batch(vectors, records, self.dim), records, replace=True)

    def remove(self, ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(ids))
        if not ids:
            return 0
        with self._savepoint():
            n = self._q("DELETE FROM {t} WHERE id = ANY(%s)", (ids,)).rowcount
        self.dirty = self.dirty or n > 0
        return int(n)

    # ------------------------------------------------------------------ search and save
    def search(
        self, queries: np.ndarray, k: int = 10, modality: str | Sequence[str] | None = None
    ) -> list[list[Hit]]:
        q = check_queries(queries, k, self.dim)
        mods = parse_modalities(modality)
        where = "" if mods is None else "WHERE modality = ANY(%s)"
        args: tuple = () if mods is None else (sorted(mods),)
        n_ok = int(self._q(f"SELECT count(*) FROM {{t}} {where}", args).fetchone()[0])
        exact = self.kind == "flat" or n_ok <= max(self.exact_below, k)
        sql_q, settings = self.search_plan(exact, where, int(k), mods is not None)
        out = []
        with self._savepoint():
            for key, val in settings.items():
                self._conn.execute("SELECT set_config(%s, %s, true)", (key, val))
            try:
                for row in q:
                    rows = self._conn.execute(sql_q, (row, *args, row, int(k))).fetchall()
                    out.append([Record.from_dict(rec).hit(score) for rec, score in rows])
            finally:  # SET LOCAL outlives a savepoint: restore the session's values for later statements
                for key in settings:
                    self._conn.execute(f"RESET {key}")
        return out

    def search_plan(self, exact: bool, where: str, k: int, filtered: bool) -> tuple[Any, dict[str, str]]:
        """The search statement and the settings it runs under.

        Exact: a sequential scan ordered by (score, insertion order), so ties break as in the local index.
        HNSW: ordered by the distance alone (the only form pgvector's index serves), sequential scans off so
        the planner cannot trade the graph for a scan on a small or unanalysed table.
        """
        order = "embedding <#> %s, seq" if exact else "embedding <#> %s"
        sql_q = self._fmt(f"SELECT record, -(embedding <#> %s) FROM {{t}} {where} ORDER BY {order} LIMIT %s")
        if exact:
            return sql_q, {"enable_indexscan": "off"}
        settings = {"enable_seqscan": "off", "hnsw.ef_search": str(max(self.hnsw_params.ef_search, k))}
        if filtered:
            settings["hnsw.iterative_scan"] = "strict_order"
        return sql_q, settings

    def save(self) -> None:
        """Write the manifest and commit every change since the last save in one transaction."""
        from psycopg.types.json import Jsonb

        m = self.manifest
        m.count, m.updated = len(self), time.time()
        m.params = vars(self.hnsw_params).copy()
        self._q(
            "INSERT INTO {mt} (k, manifest) VALUES (0, %s) ON CONFLICT (k) DO UPDATE SET manifest = EXCLUDED.manifest",
            (Jsonb(json.loads(m.to_json())),),
        )
        self._conn.commit()
        self._saved, self.dirty = True, False


def _read_manifest(conn: Any, name: str) -> dict[str, Any] | None:
    from psycopg import sql

    exists = conn.execute("SELECT to_regclass(%s)", (f"{name}__manifest",)).fetchone()[0]
    row = None
    if exists is not None:
        row = conn.execute(sql.SQL("SELECT manifest FROM {} WHERE k = 0").format(sql.Identifier(f"{name}__manifest"))).fetchone()
    conn.rollback()  # end the read-only transaction
    return None if row is None else dict(row[0])

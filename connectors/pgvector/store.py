"""The pgvector store: :class:`PgVectorStore`, one class for a store's own table and for
attached tables (see :mod:`connectors.pgvector`).

This module is over the package's ~600-line guideline on purpose: it is the one class, kept
whole (schema, the COPY write path, delete/count, backfill, search), until it is ported onto
the shared store skeleton, which takes over upsert, search-then-rerank and the defaults.
Build a store with :func:`connectors.pgvector.open_store` or :func:`connectors.pgvector.attach`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import re
import threading
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from embedder.errors import ConnectorError, InputError, NotFoundError, SchemaMismatchError, UnavailableError

from ..core import (Hit, Row, UpsertReport, bad_vector_reason, check_rerank_query, dedupe_rows, document_item,
                    pipelined_upsert, query_vector, rerank_candidates, rerank_hits, vector_problems)
from ..filters import And, Node, Or, parse
from .schema import (CONFIG_TAG, NATIVE_COLUMNS, RESERVED_COLUMNS, ColumnInfo, Layout, StoragePlan, derived_name,
                     drop_sync_objects, field_sql_type, table_columns, validate_identifier)
from .wire import (BYTEA_OID, JSONB_EMPTY, KEY_ARRAY_PREPARE, SQL_SCALAR_TYPES, STREAM_BLOCK, Binder,
                   compile_filter, escape_where, first_line, psycopg_module, sql_module, translate_error,
                   vector_wire)

log = logging.getLogger(__name__)

_MIN_ITERATIVE_SCAN = (0, 8, 0)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


# ---------------------------------------------------------------------------- the store
class PgVectorStore:
    """A pgvector-backed store (see :mod:`connectors.pgvector`). Build one with :func:`open_store`
    or :func:`attach`; it implements :class:`connectors.core.Store`.

    Attributes:
        client: the psycopg connection (autocommit; pgvector types registered).
        dim: the embedding dimension.
        plan: the :class:`StoragePlan`.
        layout: the :class:`Layout`.
        backfill_report: the :class:`~connectors.core.UpsertReport` of the last backfill (run by
            :func:`attach`, or by calling :meth:`backfill`); None when none ran.
    """

    def __init__(self, conn: Any, *, layout: Layout, plan: StoragePlan, embedder: Any = None, owned: bool = True,
                 rescore_factor: int = 4) -> None:
        self.client = conn
        self.layout = layout
        self.plan = plan
        self.dim = plan.dim
        self.embedder = embedder
        self.rescore_factor = max(1, int(rescore_factor))
        self._backfill_report: UpsertReport | None = None
        #: how the table's name was resolved when it is not spelled as given (see resolve_table)
        self.name_note: str | None = None
        self._owned = owned
        self._closed = False
        self._oids: dict[str, int] = {}
        # held by a write transaction and by backfill page reads: the writer thread of
        # pipelined_upsert and the reading generator share the one connection.
        self._io_lock = threading.RLock()
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        self.pgvector_version = _version_tuple(row[0]) if row else (0,)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection if the store opened it. Idempotent."""
        if not self._closed:
            self._closed = True
            if self._owned:
                self.client.close()

    def __enter__(self) -> "PgVectorStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PgVectorStore(table={str(self.layout.table)!r}, mode={self.layout.mode!r}, dim={self.dim}, " \
               f"storage={self.plan.storage!r})"

    @property
    def backfill_report(self) -> UpsertReport | None:
        """The report of the last backfill: ``written`` keys and ``(key, reason)`` failures, or
        None when no backfill ran (``attach(..., backfill=False)`` or ``create=False``)."""
        return self._backfill_report

    @property
    def table(self) -> str:
        """The (user's or store's) table name."""
        return str(self.layout.table)

    def exists(self) -> bool:
        """True when the store's table and embedding column exist."""
        cols = table_columns(self.client, self.layout.embedding_table)
        return any(c.name == self.layout.embedding_column for c in cols)

    # ------------------------------------------------------------------ schema
    def create(self, fields: Mapping[str, Any] | None = None, *, exist_ok: bool = False) -> None:
        """Create the table (or embedding column / side table) and its index.

        Args:
            fields: user fields of a new table: name -> Python type (``str``, ``int``, ``float``,
                ``bool``, ``dict``, ``list``, ``bytes``) or SQL type name (one of
                :data:`SQL_FIELD_TYPES`). Not allowed for attached tables.
            exist_ok: reuse an existing table whose schema matches.

        Raises:
            SchemaMismatchError: the table exists (without ``exist_ok``) or differs.
            InputError: a bad field name or type.
        """
        try:
            if self.layout.attached:
                if fields:
                    raise InputError("fields are the existing table's own columns; pass fields=None for an "
                                     "attached table")
                self._ensure_attached_storage(exist_ok=True)
                self._ensure_index()
            else:
                self._create_table(fields or {}, exist_ok=exist_ok)
        except psycopg_module().Error as exc:
            raise translate_error(exc, f"cannot create {self.table}") from exc

    def _create_table(self, fields: Mapping[str, Any], exist_ok: bool) -> None:
        sql = sql_module()
        declared = []
        for name, typ in fields.items():
            validate_identifier(name, what="field name")
            if name in RESERVED_COLUMNS:
                raise InputError(f"field name {name!r} is reserved; reserved names are {sorted(RESERVED_COLUMNS)}")
            declared.append((name, field_sql_type(name, typ)))
        cols = table_columns(self.client, self.layout.table)
        if cols:
            if not exist_ok:
                raise SchemaMismatchError(f"table {self.table} already exists; pass exist_ok=True to reuse it")
            self._check_existing(cols, dict(declared))
            self._ensure_index()
            return
        config = json.dumps({CONFIG_TAG: {"mode": "table", **self.plan.to_config()}})
        field_sql = [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in declared]
        with self.client.transaction():
            self.client.execute(sql.SQL(
                "CREATE TABLE {} (id text PRIMARY KEY, text text, media text, modality text NOT NULL, "
                "metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb, {}embedding {} NOT NULL)").format(
                self.layout.table.ident, sql.SQL("").join(sql.SQL("{}, ").format(f) for f in field_sql),
                sql.SQL(self.plan.column_sql)))
            self.client.execute(sql.SQL("COMMENT ON COLUMN {}.embedding IS {}").format(
                self.layout.table.ident, sql.Literal(config)))
            self._ensure_index()
        self._refresh_layout()

    def _check_existing(self, cols: list[ColumnInfo], declared: Mapping[str, str]) -> None:
        by_name = {c.name: c for c in cols}
        emb = by_name.get(self.layout.embedding_column)
        if emb is None or emb.type != self.plan.column_sql:
            found = emb.type if emb else "no embedding column"
            raise SchemaMismatchError(f"table {self.table}: embedding column is {found}, this store needs "
                                      f"{self.plan.column_sql} (dim={self.dim}, storage={self.plan.storage!r})")
        missing = [n for n in declared if n not in by_name]
        if missing:
            raise SchemaMismatchError(f"table {self.table} lacks field(s) {missing}; it has "
                                      f"{sorted(set(by_name) - RESERVED_COLUMNS)}")
        for name, typ in declared.items():
            if by_name[name].type != typ:
                raise SchemaMismatchError(f"table {self.table}: field {name!r} is {by_name[name].type}, "
                                          f"requested {typ}")
        self._refresh_layout()

    def _refresh_layout(self) -> None:
        """Re-read the user fields (a native table) from the catalog."""
        if self.layout.attached:
            return
        cols = table_columns(self.client, self.layout.table)
        fields = tuple((c.name, c.type) for c in cols if c.name not in RESERVED_COLUMNS)
        self.layout = dataclasses.replace(self.layout, field_types=fields,
                                          columns=NATIVE_COLUMNS + tuple(n for n, _ in fields))
        self._oids = {c.name: c.oid for c in cols}

    def _index_name(self) -> str:
        lay = self.layout
        return derived_name(f"{lay.embedding_table.name}_{lay.embedding_column}_{self.plan.storage}_idx")

    def _ensure_index(self) -> None:
        if not self.plan.indexed:
            return
        sql = sql_module()
        lay = self.layout
        expr = self.plan.index_expression(sql.Identifier(lay.embedding_column))
        self.client.execute(sql.SQL(
            "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw ({} {}) WITH (m = {}, ef_construction = {})").format(
            sql.Identifier(self._index_name()), lay.embedding_table.ident, expr, sql.SQL(self.plan.opclass),
            sql.Literal(self.plan.m), sql.Literal(self.plan.ef_construction)))

    def _ensure_attached_storage(self, *, exist_ok: bool) -> None:
        sql = sql_module()
        lay = self.layout
        config = json.dumps({CONFIG_TAG: {"mode": lay.mode, **self.plan.to_config(), "key": lay.key,
                                          "text_column": lay.text_column, "image_column": lay.image_column,
                                          "video_column": lay.video_column}})
        existing = {c.name: c for c in table_columns(self.client, lay.embedding_table)}
        emb = existing.get(lay.embedding_column)
        if emb is not None:
            if emb.type != self.plan.column_sql:
                raise SchemaMismatchError(f"{lay.embedding_table}.{lay.embedding_column} is {emb.type}, this store "
                                          f"needs {self.plan.column_sql} (dim={self.dim}, storage={self.plan.storage!r})")
            if not exist_ok:
                raise SchemaMismatchError(f"{lay.embedding_table}.{lay.embedding_column} already exists")
        with self.client.transaction():
            if lay.mode == "column":
                self.client.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    lay.table.ident, sql.Identifier(lay.embedding_column), sql.SQL(self.plan.column_sql)))
            else:
                self.client.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {side} ({key} {ktype} PRIMARY KEY REFERENCES {table} ({key}) "
                    "ON DELETE CASCADE ON UPDATE CASCADE, {emb} {etype} NOT NULL, "
                    "embedded_at timestamptz NOT NULL DEFAULT now())").format(
                    side=lay.embedding_table.ident, key=sql.Identifier(lay.key), ktype=sql.SQL(lay.key_type),
                    table=lay.table.ident, emb=sql.Identifier(lay.embedding_column),
                    etype=sql.SQL(self.plan.column_sql)))
            self.client.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
                lay.embedding_table.ident, sql.Identifier(lay.embedding_column), sql.Literal(config)))

    # ------------------------------------------------------------------ writing
    def upsert(self, rows: Iterable[Mapping[str, Any]], *, batch_size: int = 256,
               max_bytes: int = 128 * 1024 * 1024, show_progress: bool = False) -> UpsertReport:
        """Embed and write rows; returns which ids landed and which failed (with reasons).

        Rows are dicts with ``id?``, ``text?``, ``image?``, ``video?``, ``vector?``,
        ``metadata?`` and declared fields (any other top-level key goes into ``metadata``, as on
        every store). Rows that carry their vector are streamed in binary COPY
        straight into a store's own table, validated as they are sent (:meth:`write_stream`).
        Other batches are embedded (the next one while this one is written), COPied into a
        temporary table and merged with ``INSERT ... ON CONFLICT DO UPDATE``, or COPied straight
        into the table when their first id is new. A batch that fails is split until the bad
        rows are isolated, so one bad row is reported by id and the others land. For an
        attached table, ``id`` is the primary key and only the embedding is written.

        Args:
            rows: row dicts (any iterable; consumed once).
            batch_size: rows embedded and written per batch.
            max_bytes: cap on the bytes of one write (one transaction).
            show_progress: show a progress bar.

        Returns:
            An :class:`~connectors.core.UpsertReport`.
        """
        self._check_open()
        declared = [n for n, _ in self.layout.field_types]
        return pipelined_upsert(rows, embedder=self.embedder, dim=self.dim, write=self.write_vectors,
                                write_stream=self.write_stream, batch_rows=batch_size, max_bytes=max_bytes,
                                declared_fields=declared, show_progress=show_progress, desc=f"upsert {self.table}")

    def write_stream(self, rows: Iterator[Row]) -> list[tuple[str, str]]:
        """Write rows that carry their vectors, COPied straight into the table as they are read.

        One binary COPY in one transaction, fed ``STREAM_BLOCK`` rows at a time, so that
        validating the next rows (``rows`` validates lazily) overlaps the server storing the
        previous ones, as in a plain COPY. When the first id is already present, or the COPY
        fails (a present or repeated id, a value the server refuses), nothing of it is kept
        and the rows go through :meth:`write_vectors` (merge, and isolation of bad rows).
        A vector that cannot be searched (all zeros, NaN or infinity) is checked a block at a
        time (:func:`~connectors.core.vector_problems`) and fails its row only, whoever called.
        Returns ``(id, reason)`` for the rows that failed.
        """
        psycopg = psycopg_module()
        it = iter(rows)
        taken: list[Row] = []
        rejected: list[tuple[str, str]] = []

        def tap() -> Iterator[Row]:
            for row in it:
                taken.append(row)
                yield row

        source = tap()
        if not self.layout.attached and self.plan.column_type == "vector":
            first = next(source, None)
            if first is None:
                return []
            names, oids, fields, declared = self._native_copy_spec()

            def values() -> Iterator[list]:
                block = [first]
                while block:
                    vecs = np.stack([r.vector for r in block])
                    bad = vector_problems(vecs)
                    if bad.any():
                        rejected.extend((block[i].id, bad_vector_reason(block[i].vector) or "bad vector")
                                        for i in np.flatnonzero(bad))
                        block = [r for r, b in zip(block, bad) if not b]
                        vecs = vecs[~bad]
                    if block:
                        wire = vector_wire(vecs, block=len(block))
                        for row, vec in zip(block, wire):
                            yield self._native_values(row, vec, fields, declared)
                    block = list(itertools.islice(source, STREAM_BLOCK))

            try:
                with self._io_lock:
                    if self._looks_new([first]):
                        with self.client.transaction():
                            self._copy(self.layout.table.ident, names, oids, values())
                        return rejected
            except Exception as exc:  # noqa: BLE001 - a value psycopg or the server refuses: isolated below
                if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) and (
                        self.client.broken or self.client.closed):
                    raise UnavailableError(f"lost the connection while writing to {self.table}: "
                                           f"{first_line(exc)}") from exc
                log.debug("streamed COPY into %s failed (%s); merging instead", self.table, first_line(exc))
        for _ in source:  # the rest, validated
            pass
        unique = dedupe_rows(taken)
        if not unique:
            return []
        return self.write_vectors(unique, np.stack([r.vector for r in unique]), direct=False)

    def write_vectors(self, rows: Sequence[Row], vectors: np.ndarray, *, direct: bool = True) -> list[tuple[str, str]]:
        """Write rows with their vectors; returns ``(id, reason)`` for the rows that failed.

        ``direct=False`` skips the attempt to COPY straight into the table (its caller has
        just seen that attempt fail) and merges at once. A vector that is all zeros (or holds
        NaN or infinity) fails its row with the reason; the other rows are written.
        """
        if not rows:
            return []
        bad = vector_problems(np.asarray(vectors))
        if not bad.any():
            return self._write(rows, vectors, direct)
        failed = [(rows[i].id, bad_vector_reason(vectors[i]) or "bad vector") for i in np.flatnonzero(bad)]
        keep = np.flatnonzero(~bad)
        if not len(keep):
            return failed
        return failed + self._write([rows[i] for i in keep], np.asarray(vectors)[keep], direct)

    def _write(self, rows: Sequence[Row], vectors: np.ndarray, direct: bool) -> list[tuple[str, str]]:
        psycopg = psycopg_module()
        if not rows:
            return []
        try:
            with self._io_lock, self.client.transaction():
                return self._copy_merge(rows, vectors, direct=direct)
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            raise translate_error(exc, f"cannot write to {self.table}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if self.client.broken or self.client.closed:
                raise UnavailableError(f"lost the connection while writing to {self.table}: "
                                       f"{first_line(exc)}") from exc
            return self._split(rows, vectors, exc, direct)
        except Exception as exc:  # noqa: BLE001 - isolate the bad rows, report them by id
            return self._split(rows, vectors, exc, direct)

    def _split(self, rows: Sequence[Row], vectors: np.ndarray, exc: Exception, direct: bool) -> list[tuple[str, str]]:
        if len(rows) == 1:
            log.debug("row %s failed: %s", rows[0].id, exc)
            return [(rows[0].id, first_line(exc))]
        mid = len(rows) // 2
        return self._write(rows[:mid], vectors[:mid], direct) + self._write(rows[mid:], vectors[mid:], direct)

    def _copy_merge(self, rows: Sequence[Row], vectors: np.ndarray, *, direct: bool) -> list[tuple[str, str]]:
        sql = sql_module()
        lay = self.layout
        conn = self.client
        # Vectors go on the wire already in pgvector's binary format (see vector_wire); COPY's
        # binary stream carries no type ids, so the bytes pass through a bytea dumper and the
        # server reads them with the column's own (vector) input function.
        stage = sql.Identifier(derived_name(f"qvl_stage_{hashlib.sha256(str(lay.embedding_table).encode()).hexdigest()[:12]}"))
        if lay.attached:
            names = ["key", "embedding"]
            stage_cols = sql.SQL("key text, embedding vector({})").format(sql.Literal(self.dim))
            oids = [25, BYTEA_OID]
            values = ([r.id, vec] for r, vec in zip(rows, vector_wire(vectors)))
        else:
            names, oids, fields, declared = self._native_copy_spec()
            stage_cols = sql.SQL(", ").join(
                [sql.SQL("id text, text text, media text, modality text, metadata jsonb")]
                + [sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in fields]
                + [sql.SQL("embedding vector({})").format(sql.Literal(self.dim))])

            def native() -> Iterator[list]:
                return (self._native_values(r, vec, fields, declared) for r, vec in zip(rows, vector_wire(vectors)))

            values = native()
            if direct and self.plan.column_type == "vector" and self._looks_new(rows):
                try:
                    with conn.transaction():  # a savepoint: a present id (or a concurrent insert) falls back
                        self._copy(lay.table.ident, names, oids, values)
                    return []
                except psycopg_module().errors.UniqueViolation:
                    log.debug("direct COPY into %s met a present id; merging instead", self.table)
                    values = native()
        conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DROP").format(stage, stage_cols))
        self._copy(stage, names, oids, values)
        with conn.cursor() as cur:
            return self._merge(cur, stage, names, rows)

    def _native_copy_spec(self) -> tuple[list[str], list[int], list[tuple[str, str]], set[str]]:
        """Columns, COPY type oids, declared fields and their names of a store's own table."""
        fields = list(self.layout.field_types)
        names = list(NATIVE_COLUMNS) + [n for n, _ in fields] + ["embedding"]
        info = self._oids or {c.name: c.oid for c in table_columns(self.client, self.layout.table)}
        oids = [25, 25, 25, 25, BYTEA_OID] + [info[n] for n, _ in fields] + [BYTEA_OID]  # see _native_values
        return names, oids, fields, {n for n, _ in fields}

    def _copy(self, target: Any, names: list[str], oids: list[int], values: Iterable[Sequence[Any]]) -> None:
        """``COPY target (names) FROM STDIN (FORMAT BINARY)`` of ``values``."""
        sql = sql_module()
        with self.client.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                target, sql.SQL(", ").join(map(sql.Identifier, names)))) as copy:
            copy.set_types(oids)
            for value in values:
                copy.write_row(value)

    def _looks_new(self, rows: Sequence[Row]) -> bool:
        """True when the batch's first id is not in the store's table: one index lookup.

        A bulk load's batches are all new or (a re-run) all present; a batch that is only partly
        new fails its direct COPY on the first present id and is merged instead, so a wrong
        guess costs time, never a row.
        """
        sql = sql_module()
        found = self.client.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE id = %s)").format(
            self.layout.table.ident), (rows[0].id,)).fetchone()[0]
        return not found

    @staticmethod
    def _native_values(row: Row, vec: Any, fields: list[tuple[str, str]], declared: set[str]) -> list:
        metadata = row.metadata
        if row.fields:
            extra = {k: v for k, v in row.fields.items() if k not in declared}
            if extra:
                metadata = {**metadata, **extra}
        # jsonb's binary format is a version byte and the JSON text (normalize_row checked it encodes).
        values = [row.id, row.text, row.media, row.modality,
                  b"\x01" + json.dumps(metadata).encode() if metadata else JSONB_EMPTY]
        if fields:
            values += [row.fields.get(n) for n, _ in fields]
        values.append(vec)
        return values

    def _merge(self, cur: Any, stage: Any, names: list[str], rows: Sequence[Row]) -> list[tuple[str, str]]:
        sql = sql_module()
        lay = self.layout
        emb_value = sql.SQL("s.embedding")
        if self.plan.column_type == "halfvec":
            emb_value = sql.SQL("s.embedding::{}").format(sql.SQL(self.plan.column_sql))
        if lay.mode == "table":
            select = [sql.SQL("s.{}").format(sql.Identifier(n)) for n in names[:-1]] + [emb_value]
            cur.execute(sql.SQL("INSERT INTO {t} ({cols}) SELECT {sel} FROM {s} s ON CONFLICT (id) DO UPDATE SET {upd}")
                        .format(t=lay.table.ident, cols=sql.SQL(", ").join(map(sql.Identifier, names)),
                                sel=sql.SQL(", ").join(select), s=stage,
                                upd=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n))
                                                       for n in names[1:])))
            return []
        key = sql.Identifier(lay.key)
        key_value = sql.SQL("CAST(s.key AS {})").format(sql.SQL(lay.key_type))
        if lay.mode == "column":
            cur.execute(sql.SQL("UPDATE {t} SET {emb} = {val} FROM {s} s WHERE {t}.{key} = {kv} "
                                "RETURNING {t}.{key}::text").format(
                t=lay.table.ident, emb=sql.Identifier(lay.embedding_column), val=emb_value, s=stage, key=key,
                kv=key_value))
        else:
            cur.execute(sql.SQL(
                "INSERT INTO {side} ({key}, {emb}) SELECT {kv}, {val} FROM {s} s "
                "WHERE EXISTS (SELECT 1 FROM {t} WHERE {t}.{key} = {kv}) "
                "ON CONFLICT ({key}) DO UPDATE SET {emb} = EXCLUDED.{emb}, embedded_at = now() "
                "RETURNING {key}::text").format(
                side=lay.embedding_table.ident, key=key, emb=sql.Identifier(lay.embedding_column), kv=key_value,
                val=emb_value, s=stage, t=lay.table.ident))
        landed = {r[0] for r in cur.fetchall()}
        return [(r.id, f"no row with {lay.key} = {r.id!r} in {lay.table}") for r in rows if r.id not in landed]

    def delete(self, ids: Sequence[Any]) -> None:
        """Delete rows by id (an attached table: remove their embeddings; the rows stay)."""
        self._check_open()
        sql = sql_module()
        lay = self.layout
        keys = [str(i) for i in ids]
        if not keys:
            return
        key_list = sql.SQL("CAST(%s AS {}[])").format(sql.SQL(lay.key_type))
        try:
            if lay.mode == "column":
                self.client.execute(sql.SQL("UPDATE {} SET {} = NULL WHERE {} = ANY({})").format(
                    lay.table.ident, sql.Identifier(lay.embedding_column), sql.Identifier(lay.key), key_list), (keys,),
                    prepare=KEY_ARRAY_PREPARE)
            else:
                self.client.execute(sql.SQL("DELETE FROM {} WHERE {} = ANY({})").format(
                    lay.embedding_table.ident, sql.Identifier(lay.key), key_list), (keys,), prepare=KEY_ARRAY_PREPARE)
        except psycopg_module().Error as exc:
            raise translate_error(exc, f"cannot delete from {self.table}") from exc

    def existing_ids(self, ids: Sequence[Any]) -> set[str]:
        """Which of ``ids`` already have an embedding (lets an ingest skip what landed)."""
        self._check_open()
        sql = sql_module()
        lay = self.layout
        keys = [str(i) for i in ids]
        if not keys:
            return set()
        where = sql.SQL(" AND {} IS NOT NULL").format(sql.Identifier(lay.embedding_column)) \
            if lay.mode == "column" else sql.SQL("")
        query = sql.SQL("SELECT {}::text FROM {} WHERE {} = ANY(CAST(%s AS {}[])){}").format(
            sql.Identifier(lay.key), lay.embedding_table.ident, sql.Identifier(lay.key), sql.SQL(lay.key_type), where)
        try:
            return {row[0] for row in self.client.execute(query, (keys,), prepare=KEY_ARRAY_PREPARE).fetchall()}
        except psycopg_module().Error as exc:
            raise translate_error(exc, f"cannot look up ids in {lay.embedding_table}") from exc

    def count(self) -> int:
        """Number of rows that have an embedding."""
        self._check_open()
        sql = sql_module()
        lay = self.layout
        where = sql.SQL(" WHERE {} IS NOT NULL").format(sql.Identifier(lay.embedding_column)) \
            if lay.mode == "column" else sql.SQL("")
        try:
            return int(self.client.execute(sql.SQL("SELECT count(*) FROM {}{}").format(
                lay.embedding_table.ident, where)).fetchone()[0])
        except psycopg_module().Error as exc:
            raise translate_error(exc, f"cannot count {lay.embedding_table}") from exc

    def drop(self) -> None:
        """Drop the store's table; for an attached table drop only the embedding column or side
        table (and the sync objects, if installed). The user's rows are never dropped."""
        self._check_open()
        sql = sql_module()
        lay = self.layout
        try:
            with self.client.transaction():
                if lay.attached:
                    drop_sync_objects(self.client, lay.table)  # as sync.uninstall_sync does
                if lay.mode == "column":
                    self.client.execute(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(
                        lay.table.ident, sql.Identifier(lay.embedding_column)))
                else:
                    self.client.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(lay.embedding_table.ident))
        except psycopg_module().Error as exc:
            raise translate_error(exc, f"cannot drop {lay.embedding_table}") from exc

    # ------------------------------------------------------------------ backfill
    def backfill(self, *, batch_size: int = 64, show_progress: bool = False) -> UpsertReport:
        """Embed the rows of an attached table that have no embedding yet.

        Pages through the table by primary key, so a row that fails is reported once and not
        retried in the same run. Returns the :class:`UpsertReport` (ids are primary keys as text),
        also kept as :attr:`backfill_report`.
        """
        self._check_open()
        lay = self.layout
        if not lay.attached:
            raise InputError("backfill applies to attached tables (see attach()); use upsert() for this store")
        total = int(self.client.execute(self._missing_sql(count=True)).fetchone()[0])
        report = pipelined_upsert(_Sized(self._missing_rows(batch_size), total), embedder=self.embedder,
                                  dim=self.dim, write=self.write_vectors, batch_rows=batch_size,
                                  show_progress=show_progress, desc=f"backfill {lay.table}")
        self._backfill_report = report
        return report

    def _missing_sql(self, *, count: bool = False, after: bool = False) -> Any:
        sql = sql_module()
        lay = self.layout
        key = sql.Identifier(lay.key)
        if lay.mode == "column":
            cond = sql.SQL("t.{} IS NULL").format(sql.Identifier(lay.embedding_column))
        else:
            cond = sql.SQL("NOT EXISTS (SELECT 1 FROM {} e WHERE e.{k} = t.{k})").format(lay.embedding_table.ident,
                                                                                         k=key)
        if count:
            return sql.SQL("SELECT count(*) FROM {} t WHERE {}").format(lay.table.ident, cond)
        if after:
            cond = cond + sql.SQL(" AND t.{} > CAST(%(last)s AS {})").format(key, sql.SQL(lay.key_type))
        cols = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in lay.content_columns.values())
        return sql.SQL("SELECT t.{k}, {cols} FROM {t} t WHERE {cond} ORDER BY t.{k} LIMIT %(page)s").format(
            k=key, cols=cols, t=lay.table.ident, cond=cond)

    def _missing_rows(self, page: int) -> Iterator[dict]:
        first, after = self._missing_sql(), self._missing_sql(after=True)
        last: Any = None
        while True:
            with self._io_lock:
                rows = self.client.execute(first if last is None else after,
                                           {"page": page, "last": None if last is None else str(last)}).fetchall()
            for rec in rows:
                yield self.content_row(rec[0], rec[1:])
            if len(rows) < page:
                return
            last = rows[-1][0]

    def content_row(self, key: Any, values: Sequence[Any]) -> dict:
        """A row dict (``id``, ``text``, ``image``, ``video``) from an attached table's content columns."""
        row: dict[str, Any] = {"id": str(key)}
        for kind, value in zip(self.layout.content_columns, values):
            if isinstance(value, memoryview):
                value = value.tobytes()
            if value is not None and value != "":
                row[kind] = value
        return row

    # ------------------------------------------------------------------ search
    def search(self, query: Any, k: int = 10, *, where: str | None = None, params: Any = None,
               filter: Any = None, rerank: Any = None, candidates: int | None = None,
               instruction: str | None = None, ef_search: int | None = None) -> list[Hit]:
        """Nearest rows to ``query`` (an item, embedded as a query, or a precomputed vector).

        Args:
            query: text, image, video, a fused dict, or a vector of the store's dim.
            k: number of hits.
            where: an SQL condition on the table's columns (alias ``t``), with ``%s`` or
                ``%(name)s`` placeholders bound from ``params``. A ``%`` in a string
                (``title LIKE 'a%'``) or an operator (``id % 2 = 0``) is a literal ``%``, as is
                ``%%``. The condition is SQL spliced into the query: for TRUSTED input only
                (it runs in a READ ONLY transaction, so it cannot write, but it can read any
                table the store's role can). Put user input in ``params`` or use a dict filter.
            params: values for ``where`` (a list, or a dict for named placeholders).
            filter: alias of ``where``; a dict ``{column: value}`` means equality on each,
                with the values bound (the safe choice for untrusted input).
            rerank: a :class:`~embedder.Reranker` to rerank ``candidates`` vector hits.
            candidates: vector hits fetched before reranking (default ``max(4k, 20)``, as on every
                store; at least ``k``). A query vector with ``rerank`` is an InputError.
            instruction: query instruction for the embedder.
            ef_search: HNSW search breadth (default: enough for the requested rows).

        The query runs in a READ ONLY transaction: a filter that tries to write (a
        data-modifying function, ``nextval``, ``query_to_xml('DELETE ...')``) fails with
        :class:`~embedder.errors.ConnectorError` and changes nothing. Filtered searches turn on
        ``hnsw.iterative_scan = relaxed_order`` (pgvector >= 0.8) so a selective filter does not
        starve the result. Hits carry ``score`` (cosine similarity)
        and, when reranked, ``rerank_score``; a candidate whose media cannot be loaded keeps
        its vector rank with ``rerank_score=None`` and is logged as a warning.
        """
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        if where is not None and filter is not None:
            raise InputError("pass either where= or filter= (its alias), not both")
        fetch = rerank_candidates(k, candidates)  # one policy, in core; checks a given value
        n = fetch if rerank is not None else k
        check_rerank_query(query, rerank)
        vec = query_vector(self.embedder, query, self.dim, instruction)
        stmt, values, filtered = self._search_sql(vec, n, where if where is not None else filter, params)
        psycopg = psycopg_module()
        from psycopg.rows import dict_row

        try:
            with self.client.transaction(), self.client.cursor(row_factory=dict_row) as cur:
                cur.execute("SET TRANSACTION READ ONLY")  # a raw where= runs with the store's privileges
                self._search_settings(cur, n, filtered, ef_search)
                cur.execute(stmt, values)
                records = cur.fetchall()
        except psycopg.errors.UndefinedColumn as exc:
            if self.layout.attached or where is not None or filter is not None:
                raise translate_error(exc, f"search in {self.table} failed") from exc
            raise NotFoundError(f"search in {self.table} failed: {first_line(exc)}; it is not a table this "
                                "project created, nor one attached with attach() / qvl pg sync: attach it "
                                "first") from exc
        except psycopg.Error as exc:
            raise translate_error(exc, f"search in {self.table} failed") from exc
        hits = [self._hit(r) for r in records]
        if rerank is None:
            return hits
        outcome = rerank_hits(rerank, query, hits, k=k, document_of=self._document_of)
        return outcome.hits

    def explain(self, query: Any, k: int = 10, *, where: str | None = None, params: Any = None,
                analyze: bool = False, force_index: bool = False) -> str:
        """The ``EXPLAIN`` plan of :meth:`search`'s SQL (to check the index is used).

        ``force_index=True`` disables sequential scans for the plan, as on a table too small
        for the planner to prefer the index. Like :meth:`search`, it runs READ ONLY (``analyze``
        executes the query).
        """
        vec = query_vector(self.embedder, query, self.dim)
        stmt, values, filtered = self._search_sql(vec, k, where, params)
        sql = sql_module()
        with self.client.transaction(), self.client.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            self._search_settings(cur, k, filtered, None)
            if force_index:
                cur.execute("SELECT set_config('enable_seqscan', 'off', true)")
            cur.execute(sql.SQL("EXPLAIN {}{}").format(sql.SQL("ANALYZE ") if analyze else sql.SQL(""), stmt), values)
            return "\n".join(r[0] for r in cur.fetchall())

    def _search_settings(self, cur: Any, n: int, filtered: bool, ef_search: int | None) -> None:
        want = ef_search or min(1000, max(40, n * (self.rescore_factor if self.plan.rescore else 1)))
        cur.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(int(want)),))
        if filtered and self.plan.indexed:
            if self.pgvector_version >= _MIN_ITERATIVE_SCAN:
                cur.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
            else:
                log.warning("pgvector %s has no iterative index scans (needs 0.8); a selective filter may return "
                            "fewer than k rows", ".".join(map(str, self.pgvector_version)))

    def _search_sql(self, vec: np.ndarray, n: int, where: Any, params: Any) -> tuple[Any, Any, bool]:
        sql = sql_module()
        lay = self.layout
        bind = Binder(params)
        emb = sql.SQL("t.{}").format(sql.Identifier(lay.embedding_column)) if lay.mode != "side_table" \
            else sql.SQL("e.{}").format(sql.Identifier(lay.embedding_column))
        source = sql.SQL("{} t").format(lay.table.ident) if lay.mode != "side_table" else sql.SQL(
            "{} t JOIN {} e USING ({})").format(
            lay.table.ident, lay.embedding_table.ident, sql.Identifier(lay.key))
        cols = [sql.SQL("t.{}").format(sql.Identifier(c)) if c != lay.key or lay.mode != "side_table"
                else sql.Identifier(c) for c in lay.columns]
        select_cols = sql.SQL(", ").join(cols)

        node = self._parse_filter(where) if isinstance(where, Mapping) else None

        def conditions() -> Any:
            parts = [sql.SQL("{} IS NOT NULL").format(emb)] if lay.mode == "column" else []
            if node is not None:
                parts.append(compile_filter(node, bind, metadata=not lay.attached))
            elif where is not None:
                if not isinstance(where, str):
                    raise InputError(f"where must be an SQL string or a dict, got {type(where).__name__}")
                parts.append(sql.SQL("({})").format(sql.SQL(escape_where(where, placeholders=params is not None))))
                bind.add_user(params)
            return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts) if parts else sql.SQL("")

        if not self.plan.rescore:
            head = sql.SQL("WITH r AS MATERIALIZED (SELECT {cols}, {emb} <=> {q} AS _qvl_distance FROM {src}").format(
                cols=select_cols, emb=emb, q=self.plan.exact_query(bind("q", vec)), src=source)
            cond = conditions()
            tail = sql.SQL(" ORDER BY _qvl_distance LIMIT {}) SELECT * FROM r ORDER BY _qvl_distance").format(
                bind("n", n))
            return head + cond + tail, bind.values, where is not None
        shortlist = max(n * self.rescore_factor, 100)
        head = sql.SQL("WITH s AS MATERIALIZED (SELECT {cols}, {emb} AS _qvl_embedding FROM {src}").format(
            cols=select_cols, emb=emb, src=source)
        cond = conditions()
        mid = sql.SQL(" ORDER BY {} {} {} LIMIT {}) SELECT {}, _qvl_embedding <=> {} AS _qvl_distance FROM s "
                      "ORDER BY _qvl_distance LIMIT {}").format(
            self.plan.index_expression(emb), sql.SQL(self.plan.index_operator),
            self.plan.query_expression(bind("q", vec)), bind("m", shortlist),
            sql.SQL(", ").join(sql.Identifier(c) for c in lay.columns), self.plan.exact_query(bind("q", vec)),
            bind("n", n))
        return head + cond + mid, bind.values, where is not None

    def _parse_filter(self, flt: Mapping[str, Any]) -> Node:
        """Validate a portable filter against this table's columns (see :mod:`connectors.filters`).

        A native table's keys are its declared fields (then metadata keys); an attached
        table's keys are its columns (it has no metadata column).
        """
        lay = self.layout
        types = dict(lay.field_types)
        if lay.attached:
            fields: dict[str, type | None] = {c: None for c in lay.columns}
        else:
            fields = {c: SQL_SCALAR_TYPES.get(t) for c, t in types.items()}
        node = parse(flt, fields)

        def check(n: Node) -> None:
            if isinstance(n, (And, Or)):
                for p in n.parts:
                    check(p)
            elif lay.attached and n.key not in lay.columns:
                raise InputError(f"filter key {n.key!r} is not one of the table's columns {list(lay.columns)} "
                                 "(an attached table has no metadata column)")
            elif not lay.attached and n.key in types and types[n.key] not in SQL_SCALAR_TYPES:
                raise InputError(f"filter key {n.key!r}: the column is {types[n.key]}; the portable filter compares "
                                 "text, numeric and boolean columns (use where= for others)")
        check(node)
        return node

    def _hit(self, rec: Mapping[str, Any]) -> Hit:
        distance = float(rec.pop("_qvl_distance"))
        key = rec[self.layout.key]
        fields = {k: (v.tobytes() if isinstance(v, memoryview) else v) for k, v in rec.items()}
        if not self.layout.attached:
            fields.pop("id", None)
        return Hit(id=str(key), score=1.0 - distance, fields=fields)

    def _document_of(self, hit: Hit) -> dict:
        lay = self.layout
        if not lay.attached:
            return document_item(hit.fields)
        return {kind: hit.fields[col] for kind, col in lay.content_columns.items()
                if hit.fields.get(col) not in (None, "")}

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectorError(f"store for {self.table} is closed")


class _Sized:
    """An iterable with a known length (for progress bars)."""

    def __init__(self, it: Iterable[Any], n: int) -> None:
        self._it, self._n = it, n

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Any]:
        return iter(self._it)

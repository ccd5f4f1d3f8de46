"""The pgvector store: :class:`PgVectorStore`, the store skeleton (:class:`connectors.base.BaseStore`)
on PostgreSQL, for a store's own table and for attached tables (see :mod:`connectors.pgvector`).

The skeleton owns create/upsert/search/rerank and the checks; this module has the primitives
and what is Postgres' own: the binary COPY write path (streamed, or staged and merged with
``INSERT ... ON CONFLICT``), the storage plans' SQL, READ ONLY searches with a raw ``where=``
(and ``params=``), :meth:`PgVectorStore.explain`, and the backfill of attached tables. The
configuration (dim, storage, fingerprint) lives as JSON in the embedding column's comment.
Build a store with :func:`connectors.pgvector.open_store` or :func:`connectors.pgvector.attach`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import re
import threading
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from embedder.contracts import EmbedderLike
from embedder.errors import InputError, NotFoundError, UnavailableError

from ..base import BaseStore, Schema, StoredRow
from ..core import Hit, Row, UpsertReport, bad_vector_reason, document_item, vector_problems
from ..pipeline import dedupe_rows, pipelined_upsert
from ..search import query_vector
from ..filters import And, Node, Or
from . import statements as q
from ..quantization import unsupported
from .schema import (CONFIG_TAG, HALFVEC_INDEX_MAX_DIM, NATIVE_COLUMNS, RESERVED_COLUMNS, Layout, StoragePlan,
                     derived_name, drop_sync_objects, field_sql_type, python_type, quantization_of, read_config,
                     table_columns, validate_identifier)
from .wire import (BYTEA_OID, JSONB_EMPTY, KEY_ARRAY_PREPARE, SQL_SCALAR_TYPES, STREAM_BLOCK, first_line,
                   psycopg_module, sql_module, translate_error, vector_wire)

log = logging.getLogger(__name__)

_MIN_ITERATIVE_SCAN = (0, 8, 0)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


class PgVectorStore(BaseStore):
    """A pgvector-backed store (see :mod:`connectors.pgvector`). Build one with :func:`open_store`
    or :func:`attach`.

    ``search`` takes, besides the skeleton's arguments, ``where=`` (an SQL condition on the
    table's columns, alias ``t``, for TRUSTED input; a string ``filter=`` is the same), ``params=``
    (its bound values: a list for ``%s``, a dict for ``%(name)s``) and ``ef_search=`` (HNSW
    search breadth). Searches run in a READ ONLY transaction. An attached table's fields are
    its columns but the reserved names (``id``, ``text``, ``media``, ``modality``, ``metadata``);
    its ids are its primary key as text.

    Attributes:
        client: the psycopg connection (autocommit; pgvector types registered).
        plan: the :class:`StoragePlan`.
        layout: the :class:`Layout`.
        backfill_report: the :class:`~connectors.core.UpsertReport` of the last backfill (run by
            :func:`attach`, or by calling :meth:`backfill`); None when none ran.
    """

    backend = "pgvector"
    max_bytes = 128 * 1024 * 1024
    native_filter = "an SQL condition string (trusted input; values in params=)"
    text_filter = True
    quantizations = ("float32", "float16", "binary")  # vector/subvector, halfvec, bit + exact re-scoring

    def __init__(self, conn: Any, *, layout: Layout, plan: StoragePlan, embedder: EmbedderLike | None = None,
                 owned: bool = True,
                 rescore_factor: int = 4, allow_mismatch: bool = False, quantization: str | None = None) -> None:
        super().__init__(collection=str(layout.table), embedder=embedder, dim=plan.dim, allow_mismatch=allow_mismatch,
                         quantization=quantization or quantization_of(plan.storage))
        self._conn = conn
        self.layout = layout
        self.plan = plan
        self.rescore_factor = max(1, int(rescore_factor))
        self._backfill_report: UpsertReport | None = None
        #: how the table's name was resolved when it is not spelled as given (see resolve_table)
        self.name_note: str | None = None
        self._owned = owned
        self._oids: dict[str, int] = {}
        self._field_sql: dict[str, str] = {}  # the SQL spelling of the fields being created
        # held by a write transaction and by backfill page reads: the writer thread of
        # pipelined_upsert and the reading generator share the one connection.
        self._io_lock = threading.RLock()
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        self.pgvector_version = _version_tuple(row[0]) if row else (0,)
        self.open_existing()

    @property
    def client(self) -> Any:
        """The psycopg connection."""
        return self._conn

    @property
    def table(self) -> str:
        """The (user's or store's) table name."""
        return str(self.layout.table)

    @property
    def backfill_report(self) -> UpsertReport | None:
        """The report of the last backfill: ``written`` keys and ``(key, reason)`` failures, or
        None when no backfill ran (``attach(..., backfill=False)`` or ``create=False``)."""
        return self._backfill_report

    # ------------------------------------------------------------------ errors
    def _translate(self, exc: BaseException, what: str) -> Exception:
        psycopg = psycopg_module()
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) and (
                self._conn.broken or self._conn.closed):
            return UnavailableError(f"{what}: lost the connection: {first_line(exc)}")
        return translate_error(exc, what)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except psycopg_module().Error as exc:
            raise self._translate(exc, f"{what} {self.table}") from exc

    # ------------------------------------------------------------------ schema
    def _exists(self) -> bool:
        with self._errors("cannot read"):
            cols = table_columns(self._conn, self.layout.embedding_table)
        return any(c.name == self.layout.embedding_column for c in cols) if self.layout.attached else bool(cols)

    def _describe(self) -> Schema:
        lay = self.layout
        with self._errors("cannot read"):
            cols = {c.name: c for c in table_columns(self._conn, lay.embedding_table)}
            if lay.attached:  # its columns, but those a store reserves (a migration declares the fields)
                fields = {c.name: python_type(c.type) for c in table_columns(self._conn, lay.table)
                          if c.name in lay.columns and c.name not in RESERVED_COLUMNS | {"vector"}}
        emb = cols.get(lay.embedding_column)
        if not lay.attached:
            if emb is None or not set(NATIVE_COLUMNS) <= set(cols):
                raise NotFoundError(f"table {self.table} is not a table this project created, nor one attached with "
                                    "attach() / qvl pg sync: attach it first")
            self._refresh_layout(list(cols.values()))
            fields = {n: python_type(t) for n, t in self.layout.field_types}
        match = re.match(r"(?:vector|halfvec)\((\d+)\)", emb.type) if emb is not None else None
        config = read_config(emb.comment) if emb is not None else None
        storage = (config or {}).get("storage") or ("halfvec" if emb is not None and emb.type.startswith("halfvec")
                                                    else "vector")
        return Schema(int(match.group(1)) if match else self.plan.dim, fields, (config or {}).get("fingerprint"),
                      quantization_of(storage))

    def _check_quantization(self, precision: str, dim: int) -> None:
        if precision == "int8":
            raise unsupported(self.backend, precision, self.quantizations, "pgvector has no int8 vector type")
        super()._check_quantization(precision, dim)
        if quantization_of(self.plan.storage) != precision:  # float16 above halfvec's index limit
            raise unsupported(self.backend, precision, self.quantizations,
                              f"pgvector indexes halfvec up to {HALFVEC_INDEX_MAX_DIM} dims, this table has {dim}")

    def _check_fields(self, fields: Mapping[str, Any] | None) -> dict[str, type]:
        if fields is not None and not isinstance(fields, Mapping):
            raise InputError(f"fields must be a dict {{name: type}}, got {type(fields).__name__}")
        if self.layout.attached:
            if fields:
                raise InputError("fields are the existing table's own columns; pass fields=None for an "
                                 "attached table")
            return dict(self._fields)
        self._field_sql = {}
        out: dict[str, type] = {}
        for name, typ in (fields or {}).items():
            validate_identifier(name, what="field name")
            if name in RESERVED_COLUMNS:
                raise InputError(f"field name {name!r} is reserved; reserved names are {sorted(RESERVED_COLUMNS)}")
            self._field_sql[name] = field_sql_type(name, typ)
            out[name] = python_type(self._field_sql[name])
        return out

    def _create(self, schema: Schema) -> None:
        if self.layout.attached:
            with self._errors("cannot create storage for"):
                self._ensure_attached_storage(fingerprint=schema.fingerprint)
                self._ensure_index()
            return
        declared = [(n, self._field_sql.get(n) or field_sql_type(n, t)) for n, t in schema.fields.items()]
        config = {"mode": "table", **self.plan.to_config()}
        if schema.fingerprint:
            config["fingerprint"] = schema.fingerprint
        with self._errors("cannot create"), self._conn.transaction():
            self._conn.execute(q.create_table(self.layout, self.plan, declared))
            self._conn.execute(q.comment_config(self.layout, json.dumps({CONFIG_TAG: config})))
            self._ensure_index()
        self._refresh_layout(table_columns(self._conn, self.layout.table))

    def _refresh_layout(self, cols: list[Any]) -> None:
        """Take a store's own table's user fields (and their COPY type oids) from its columns."""
        fields = tuple((c.name, c.type) for c in cols if c.name not in RESERVED_COLUMNS)
        self.layout = dataclasses.replace(self.layout, field_types=fields,
                                          columns=NATIVE_COLUMNS + tuple(n for n, _ in fields))
        self._oids = {c.name: c.oid for c in cols}

    def _ensure_index(self) -> None:
        if self.plan.indexed:
            self._conn.execute(q.create_index(self.layout, self.plan))

    def _ensure_attached_storage(self, *, fingerprint: dict | None) -> None:
        """Add the embedding column or side table (idempotent). A new one records ``fingerprint``
        in its configuration; an existing one keeps the fingerprint it recorded (or none)."""
        lay = self.layout
        emb = {c.name: c for c in table_columns(self._conn, lay.embedding_table)}.get(lay.embedding_column)
        if emb is not None:
            fingerprint = (read_config(emb.comment) or {}).get("fingerprint")
        config = {"mode": lay.mode, **self.plan.to_config(), "key": lay.key, "text_column": lay.text_column,
                  "image_column": lay.image_column, "video_column": lay.video_column}
        if fingerprint:
            config["fingerprint"] = fingerprint
        with self._conn.transaction():
            self._conn.execute(q.add_storage(lay, self.plan))
            self._conn.execute(q.comment_config(lay, json.dumps({CONFIG_TAG: config})))

    # ------------------------------------------------------------------ writing
    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[tuple[str, str]]:
        return self.write_vectors(rows, vectors)

    def _write_stream(self, rows: Iterator[Row]) -> list[tuple[str, str]]:
        """Write rows that carry their vectors, COPied straight into the table as they are read.

        One binary COPY in one transaction, fed ``STREAM_BLOCK`` rows at a time, so that
        validating the next rows (``rows`` validates lazily) overlaps the server storing the
        previous ones, as in a plain COPY. When the first id is already present, or the COPY
        fails (a present or repeated id, a value the server refuses), nothing of it is kept
        and the rows go through :meth:`write_vectors` (merge, and isolation of bad rows).
        A vector that cannot be searched (all zeros, NaN or infinity) fails its row only.
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
                        with self._conn.transaction():
                            self._copy(self.layout.table.ident, names, oids, values())
                        return rejected
            except Exception as exc:  # noqa: BLE001 - a value psycopg or the server refuses: isolated below
                if isinstance(exc, psycopg.Error) and (self._conn.broken or self._conn.closed):
                    raise self._translate(exc, f"cannot write to {self.table}") from exc
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
        NaN or infinity) fails its row with the reason; the other rows are written. The sync
        worker writes through this.
        """
        if not rows:
            return []
        bad = vector_problems(np.asarray(vectors))
        if not bad.any():
            return self._write_batch(rows, vectors, direct)
        failed = [(rows[i].id, bad_vector_reason(vectors[i]) or "bad vector") for i in np.flatnonzero(bad)]
        keep = np.flatnonzero(~bad)
        if not len(keep):
            return failed
        return failed + self._write_batch([rows[i] for i in keep], np.asarray(vectors)[keep], direct)

    def _write_batch(self, rows: Sequence[Row], vectors: np.ndarray, direct: bool) -> list[tuple[str, str]]:
        psycopg = psycopg_module()
        if not rows:
            return []
        try:
            with self._io_lock, self._conn.transaction():
                return self._copy_merge(rows, vectors, direct=direct)
        except Exception as exc:  # noqa: BLE001 - isolate the bad rows, report them by id
            if isinstance(exc, psycopg.Error):
                err = self._translate(exc, f"cannot write to {self.table}")
                if isinstance(exc, (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn)) or (
                        isinstance(err, UnavailableError) and not (exc.sqlstate or "").startswith("54")):
                    raise err from exc  # the table is gone, or the server: not the rows' fault
            if len(rows) == 1:
                log.debug("row %s failed: %s", rows[0].id, exc)
                return [(rows[0].id, first_line(exc))]
            mid = len(rows) // 2
            return self._write_batch(rows[:mid], vectors[:mid], direct) + \
                self._write_batch(rows[mid:], vectors[mid:], direct)

    def _copy_merge(self, rows: Sequence[Row], vectors: np.ndarray, *, direct: bool) -> list[tuple[str, str]]:
        sql = sql_module()
        lay = self.layout
        conn = self._conn
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
            cur.execute(q.merge(lay, self.plan, stage, names))
            if not lay.attached:
                return []
            landed = {r[0] for r in cur.fetchall()}
        return [(r.id, f"no row with {lay.key} = {r.id!r} in {lay.table}") for r in rows if r.id not in landed]

    def _native_copy_spec(self) -> tuple[list[str], list[int], list[tuple[str, str]], set[str]]:
        """Columns, COPY type oids, declared fields and their names of a store's own table."""
        fields = list(self.layout.field_types)
        names = list(NATIVE_COLUMNS) + [n for n, _ in fields] + ["embedding"]
        info = self._oids or {c.name: c.oid for c in table_columns(self._conn, self.layout.table)}
        oids = [25, 25, 25, 25, BYTEA_OID] + [info[n] for n, _ in fields] + [BYTEA_OID]  # see _native_values
        return names, oids, fields, {n for n, _ in fields}

    def _copy(self, target: Any, names: list[str], oids: list[int], values: Iterable[Sequence[Any]]) -> None:
        """``COPY target (names) FROM STDIN (FORMAT BINARY)`` of ``values``."""
        sql = sql_module()
        with self._conn.cursor() as cur, cur.copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
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
        found = self._conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE id = %s)").format(
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

    # ------------------------------------------------------------------ reading, deleting
    def _existing(self, ids: list[str]) -> Iterable[str]:
        with self._errors("cannot look up ids in"):
            return {r[0] for r in self._conn.execute(q.existing(self.layout), (ids,), prepare=KEY_ARRAY_PREPARE)}

    def _delete(self, ids: list[str]) -> None:
        """Delete rows by id (an attached table: remove their embeddings; the rows stay)."""
        with self._errors("cannot delete from"):
            self._conn.execute(q.delete(self.layout), (ids,), prepare=KEY_ARRAY_PREPARE)

    def _count(self) -> int:
        """Number of rows that have an embedding."""
        with self._errors("cannot count"):
            return int(self._conn.execute(q.count(self.layout)).fetchone()[0])

    def _drop(self) -> None:
        """Drop the store's table; for an attached table drop only the embedding column or side
        table (and the sync objects, if installed). The user's rows are never dropped."""
        with self._errors("cannot drop the embeddings of"), self._conn.transaction():
            if self.layout.attached:
                drop_sync_objects(self._conn, self.layout.table)  # as sync.uninstall_sync does
            self._conn.execute(q.drop_storage(self.layout))

    def _close(self) -> None:
        if self._owned:
            self._conn.close()

    def _page(self, cursor: str | None, limit: int) -> tuple[list[StoredRow], str | None]:
        """Keyset pagination on the primary key, compared in its own type (the cursor is its text form)."""
        from psycopg.rows import dict_row

        with self._errors("cannot read"), self._conn.cursor(row_factory=dict_row) as cur:
            records = cur.execute(q.page(self.layout, after=cursor is not None),
                                  {"cursor": cursor, "n": limit + 1}).fetchall()
        rows = []
        for rec in records[:limit]:
            rid, vec = rec.pop("_qvl_key"), rec.pop("_qvl_vector")
            vec = np.asarray(vec.to_numpy() if hasattr(vec, "to_numpy") else vec, dtype=np.float32)
            rows.append(StoredRow(rid, vec, self._hit_fields(rec)))
        return rows, (rows[-1].id if len(records) > limit else None)

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
        total = int(self._conn.execute(q.missing(lay, count=True)).fetchone()[0])
        report = pipelined_upsert(_Sized(self._missing_rows(batch_size), total), embedder=self.embedder,
                                  dim=self.dim, write=self.write_vectors, batch_rows=batch_size,
                                  show_progress=show_progress, desc=f"backfill {lay.table}")
        self._backfill_report = report
        return report

    def _missing_rows(self, page: int) -> Iterator[dict]:
        first, after = q.missing(self.layout), q.missing(self.layout, after=True)
        last: Any = None
        while True:
            with self._io_lock:
                rows = self._conn.execute(first if last is None else after,
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
    def _compile(self, node: Node) -> Node:
        """The portable filter, checked against the table's columns (:func:`statements.search` binds it).

        A store's own table filters its fields (text, numeric and boolean columns), then
        metadata keys; an attached table filters its columns (it has no metadata column).
        """
        lay = self.layout
        types = dict(lay.field_types)

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

    def _native_filter(self, flt: Any) -> str:
        if not isinstance(flt, str):
            return super()._native_filter(flt)
        return flt

    def _nearest(self, vector: np.ndarray, n: int, flt: Any, *, content: bool, where: Any = None,
                 params: Any = None, ef_search: int | None = None) -> list[Hit]:
        if where is not None:
            if flt is not None:
                raise InputError("pass either where= or filter= (its alias), not both")
            flt = self._filter(where)
        stmt, values = q.search(self.layout, self.plan, vector, n, flt, params, rescore_factor=self.rescore_factor)
        from psycopg.rows import dict_row

        with self._errors("search failed in"), self._conn.transaction(), \
                self._conn.cursor(row_factory=dict_row) as cur:
            cur.execute("SET TRANSACTION READ ONLY")  # a raw where= runs with the store's privileges
            self._search_settings(cur, n, flt is not None, ef_search)
            cur.execute(stmt, values)
            records = cur.fetchall()
        return [self._hit(r) for r in records]

    def explain(self, query: Any, k: int = 10, *, where: Any = None, params: Any = None,
                analyze: bool = False, force_index: bool = False) -> str:
        """The ``EXPLAIN`` plan of :meth:`search`'s SQL (to check the index is used).

        ``where`` is a filter as in :meth:`search` (a dict, or SQL with ``params``).
        ``force_index=True`` disables sequential scans for the plan, as on a table too small
        for the planner to prefer the index. Like :meth:`search`, it runs READ ONLY (``analyze``
        executes the query).
        """
        self._require_collection()
        vec = query_vector(self.embedder, query, self.dim)
        flt = self._filter(where)
        stmt, values = q.search(self.layout, self.plan, vec, k, flt, params, rescore_factor=self.rescore_factor)
        sql = sql_module()
        with self._errors("explain failed in"), self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            self._search_settings(cur, k, flt is not None, None)
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

    def _hit_fields(self, rec: Mapping[str, Any]) -> dict:
        """A row's fields as a hit carries them: an attached table's columns; a store's own
        table's text, media, modality, metadata and declared fields."""
        fields = {k: (v.tobytes() if isinstance(v, memoryview) else v) for k, v in rec.items()}
        if not self.layout.attached:
            fields.pop("id", None)
        return fields

    def _hit(self, rec: dict) -> Hit:
        distance = float(rec.pop("_qvl_distance"))
        return Hit(id=str(rec[self.layout.key]), score=1.0 - distance, fields=self._hit_fields(rec))

    def _document_of(self, hit: Hit) -> dict:
        lay = self.layout
        if not lay.attached:
            return document_item(hit.fields)
        return {kind: hit.fields[col] for kind, col in lay.content_columns.items()
                if hit.fields.get(col) not in (None, "")}


class _Sized:
    """An iterable with a known length (for progress bars)."""

    def __init__(self, it: Iterable[Any], n: int) -> None:
        self._it, self._n = it, n

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[Any]:
        return iter(self._it)

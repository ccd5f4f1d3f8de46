"""Postgres/pgvector connector: multimodal search in new tables and in the tables you already have.

Two layouts share one store class, :class:`PgVectorStore`:

* **a new table** (``open_store(url, table="photos", embedder=emb, dim=1024).create()``): columns
  ``id text PRIMARY KEY, text, media, modality, metadata jsonb``, the declared fields, and
  ``embedding``;
* **an existing table** (:func:`attach`): an embedding column added to the table
  (``mode="column"``) or a side table keyed by its primary key (``mode="side_table"``), its
  index, and a backfill of the rows that have no embedding yet. :mod:`connectors.pgvector_sync`
  then keeps it in sync with triggers and a worker.

The storage follows the dimension and pgvector's index limits (see :func:`plan_storage`):

=================  ====================  ==========================================
dim                column                index
=================  ====================  ==========================================
<= 2000            ``vector(d)``         HNSW ``vector_cosine_ops``
2001..4000         ``halfvec(d)``        HNSW ``halfvec_cosine_ops``
> 4000             ``vector(d)``         HNSW on ``subvector(embedding, 1, p)`` (MRL
                                         prefix), shortlist re-scored exactly
``binary``         ``vector(d)``         HNSW on ``binary_quantize(embedding)::bit(d)``,
                                         shortlist re-scored exactly
``exact``          ``vector(d)``         none (exact scan)
=================  ====================  ==========================================

Identifiers are validated against :data:`IDENTIFIER_RE` and quoted with ``psycopg.sql``;
values are bound parameters. ``psycopg``, ``pgvector`` and ``sqlalchemy`` are imported only
inside the functions that need them. The SQLAlchemy helpers (:func:`embedding_type`,
:func:`embedding_mixin`, :func:`cosine_distance`, :func:`index_distance`,
:func:`register_vector_on`) return plain SQLAlchemy objects to compose with your own queries.

Example::

    from connectors.pgvector import attach
    store = attach("postgresql://app@db/shop", table="products", primary_key="id",
                   text_column="title", image_column="photo_path", embedder=emb, dim=1024)
    hits = store.search("red running shoes", k=5, where="price < %(max)s", params={"max": 100})
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import re
import struct
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from embedder.errors import (ConnectorError, InputError, MissingDependencyError, NotFoundError,
                             SchemaMismatchError, UnavailableError)

from .core import (Hit, Row, UpsertReport, bad_vector_reason, check_dim, check_rerank_query, dedupe_rows,
                   document_item, pipelined_upsert, query_vector, rerank_candidates, rerank_hits, vector_problems)
from .filters import And, Cond, Node, Or, parse

log = logging.getLogger(__name__)

IDENTIFIER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
VECTOR_INDEX_MAX_DIM = 2000
HALFVEC_INDEX_MAX_DIM = 4000
BIT_INDEX_MAX_DIM = 64000
VECTOR_MAX_DIM = 16000
STORAGES = ("auto", "vector", "halfvec", "subvector", "binary", "exact")
MODES = ("column", "side_table")
DEFAULT_PREFIX_DIM = 1024
NATIVE_COLUMNS = ("id", "text", "media", "modality", "metadata")
RESERVED_COLUMNS = frozenset(NATIVE_COLUMNS + ("embedding",))
# Lookups of a batch of keys (``key = ANY(%s)``) are never server-prepared: psycopg prepares a
# query after 5 runs, PostgreSQL then settles on a generic plan made while the table was small
# (a sequential scan testing every row against the whole array), and a bulk load into a fresh
# table turns quadratic: the new-rows probe of an upsert took 0.75 s per 4096-row batch at
# 16k rows instead of 5 ms.
KEY_ARRAY_PREPARE = False
BYTEA_OID = 17
JSONB_EMPTY = b"\x01{}"
STREAM_BLOCK = 512  # rows validated and converted at a time while a COPY streams

CONFIG_TAG = "qvl"
_MIN_ITERATIVE_SCAN = (0, 8, 0)

FIELD_TYPES: dict[Any, str] = {str: "text", int: "bigint", float: "double precision", bool: "boolean",
                               dict: "jsonb", list: "jsonb", bytes: "bytea"}
SQL_FIELD_TYPES = ("text", "bigint", "integer", "smallint", "double precision", "real", "boolean", "jsonb",
                   "bytea", "timestamptz", "timestamp", "date", "numeric", "uuid")


# ---------------------------------------------------------------------------- wire format
def vector_wire(vectors: np.ndarray, *, block: int = STREAM_BLOCK) -> Iterator[memoryview]:
    """Each row of ``vectors`` in pgvector's binary format (uint16 dim, uint16 0, big-endian
    float32s), converted ``block`` rows at a time (one numpy pass instead of one Python call
    per row, and lazily, so the conversion overlaps the server reading the rows before)."""
    n, dim = vectors.shape
    head = np.frombuffer(struct.pack(">HH", dim, 0), dtype=np.uint8)
    for start in range(0, n, block):
        part = vectors[start:start + block]
        buf = np.empty((len(part), dim + 1), dtype=">f4")
        buf[:, 1:] = part
        raw = buf.view(np.uint8).reshape(len(part), 4 * (dim + 1))
        raw[:, :4] = head
        for row in raw:
            yield row.data


# ---------------------------------------------------------------------------- lazy imports
def _psycopg() -> Any:
    try:
        import psycopg
        import pgvector.psycopg  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "psycopg", "pgvector", "The Postgres connector") from exc
    return psycopg


def _sql() -> Any:
    return _psycopg().sql


# ---------------------------------------------------------------------------- identifiers
def validate_identifier(name: Any, *, what: str = "identifier") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise :class:`InputError`.

    Allowed: letters, digits and underscores, starting with a letter or underscore, at most
    63 characters (Postgres' limit). Example: ``validate_identifier("x; drop table y")`` raises.
    """
    if not isinstance(name, str) or not IDENTIFIER_RE.match(name):
        raise InputError(f"{what} {name!r} is not a valid identifier: use letters, digits and underscores, "
                         "starting with a letter or underscore, at most 63 characters")
    return name


@dataclass(frozen=True)
class TableName:
    """A validated, optionally schema-qualified table name (``"table"`` or ``"schema.table"``)."""

    name: str
    schema: str | None = None

    @classmethod
    def parse(cls, value: Any, *, what: str = "table") -> "TableName":
        """Parse and validate ``"table"`` or ``"schema.table"``."""
        if isinstance(value, TableName):
            return value
        if not isinstance(value, str):
            raise InputError(f"{what} must be a string like 'items' or 'public.items', got {value!r}")
        parts = value.split(".")
        if len(parts) > 2:
            raise InputError(f"{what} {value!r} is not a valid name: use 'table' or 'schema.table'")
        for p in parts:
            validate_identifier(p, what=what)
        return cls(parts[-1], parts[0] if len(parts) == 2 else None)

    @property
    def ident(self) -> Any:
        sql = _sql()
        return sql.Identifier(self.schema, self.name) if self.schema else sql.Identifier(self.name)

    @property
    def text(self) -> str:
        """The quoted name, for ``to_regclass(%s)``."""
        quote = lambda s: '"' + s.replace('"', '""') + '"'  # noqa: E731
        return f"{quote(self.schema)}.{quote(self.name)}" if self.schema else quote(self.name)

    def sibling(self, name: str) -> "TableName":
        """A table in the same schema (name shortened with a hash if over 63 characters)."""
        return TableName(derived_name(name), self.schema)

    def __str__(self) -> str:
        shown = lambda s: s if _PLAIN_NAME_RE.match(s) else '"' + s + '"'  # noqa: E731 - as psql shows it
        return f"{shown(self.schema)}.{shown(self.name)}" if self.schema else shown(self.name)


_PLAIN_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_RELATION_SQL = ("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                 "WHERE c.oid = to_regclass(%s)")


def resolve_table(conn: Any, name: TableName) -> tuple[TableName, str | None]:
    """The existing table that ``name`` means, schema-qualified, and a note when it is not
    spelled as given (None when the name matched exactly, or nothing was found).

    The lookup follows PostgreSQL's own identifier rules, with the catalog deciding what
    stays open: the name as given (a quoted identifier, ``"MixedCase"``) first; then the name
    folded to lower case (how PostgreSQL reads an unquoted ``MixedCase``); then, when neither
    exists, the one table on the search path (or in the given schema) whose name differs
    only in case (``mixedcase`` finds ``"MixedCase"``). When several tables differ only in
    case, none is guessed: :class:`NotFoundError` lists them. A table not found at all comes
    back as given (unqualified), for the caller to create or report.
    """
    row = conn.execute(_RELATION_SQL, (name.text,)).fetchone()
    if row:
        return TableName(row[1], row[0]), None
    folded = TableName(name.name.lower(), name.schema.lower() if name.schema else None)
    if folded != name:
        row = conn.execute(_RELATION_SQL, (folded.text,)).fetchone()
        if row:
            found = TableName(row[1], row[0])
            return found, (f"no table {name.text}; using {found} (PostgreSQL folds an unquoted name to lower "
                           "case)")
    if name.schema:
        scope, params = "lower(n.nspname) = lower(%s)", [name.schema]
    else:
        scope, params = "pg_table_is_visible(c.oid)", []
    rows = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND lower(c.relname) = lower(%s) AND {scope} "
        "ORDER BY 1, 2", [name.name, *params]).fetchall()
    if len(rows) == 1:
        found = TableName(rows[0][1], rows[0][0])
        return found, (f"no table {name.text}; using {found}, the only table whose name differs from "
                       f"{str(name)!r} only in case")
    if len(rows) > 1:
        names = ", ".join(str(TableName(r[1], r[0])) for r in rows)
        raise NotFoundError(f"table {name.text} does not exist, and several tables differ from it only in case: "
                            f"{names}; pass the exact name (as it is spelled in the catalog)")
    return name, None


def derived_name(name: str) -> str:
    """An identifier built from others, shortened with a stable hash to fit 63 characters."""
    if len(name) <= 63:
        return name
    return name[:54] + "_" + hashlib.sha256(name.encode()).hexdigest()[:8]


# ---------------------------------------------------------------------------- storage plan
@dataclass(frozen=True)
class StoragePlan:
    """How embeddings of one dimension are stored, indexed and searched.

    Attributes:
        dim: stored dimension.
        storage: ``vector``, ``halfvec``, ``subvector``, ``binary`` or ``exact``.
        index_dim: dimension of the indexed expression (the MRL prefix for ``subvector``).
        m, ef_construction: HNSW build parameters.
    """

    dim: int
    storage: str
    index_dim: int
    m: int = 16
    ef_construction: int = 64

    @property
    def column_type(self) -> str:
        """``halfvec`` for ``storage="halfvec"``, else ``vector`` (the full vector is kept)."""
        return "halfvec" if self.storage == "halfvec" else "vector"

    @property
    def column_sql(self) -> str:
        return f"{self.column_type}({self.dim})"

    @property
    def rescore(self) -> bool:
        """True when the index ranks an approximation and the shortlist is re-scored exactly."""
        return self.storage in ("subvector", "binary")

    @property
    def indexed(self) -> bool:
        return self.storage != "exact"

    @property
    def prefix_type(self) -> str:
        return "vector" if self.index_dim <= VECTOR_INDEX_MAX_DIM else "halfvec"

    @property
    def opclass(self) -> str:
        return {"vector": "vector_cosine_ops", "halfvec": "halfvec_cosine_ops", "binary": "bit_hamming_ops",
                "subvector": f"{self.prefix_type}_cosine_ops"}[self.storage]

    @property
    def index_operator(self) -> str:
        return "<~>" if self.storage == "binary" else "<=>"

    def index_expression(self, column: Any) -> Any:
        """The indexed SQL expression over ``column`` (a ``psycopg.sql`` Composable)."""
        sql = _sql()
        if self.storage == "subvector":
            return sql.SQL("(subvector({}, 1, {})::{}({}))").format(
                column, sql.Literal(self.index_dim), sql.SQL(self.prefix_type), sql.Literal(self.index_dim))
        if self.storage == "binary":
            return sql.SQL("(binary_quantize({})::bit({}))").format(column, sql.Literal(self.dim))
        return column

    def query_expression(self, param: Any) -> Any:
        """The query side matching :meth:`index_expression` for a bound query vector."""
        if not self.rescore:
            return self.exact_query(param)
        sql = _sql()
        return self.index_expression(sql.SQL("{}::vector({})").format(param, sql.Literal(self.dim)))

    def exact_query(self, param: Any) -> Any:
        """The query vector cast to the stored column type."""
        sql = _sql()
        q = sql.SQL("{}::vector({})").format(param, sql.Literal(self.dim))
        if self.column_type == "halfvec":
            q = sql.SQL("{}::halfvec({})").format(q, sql.Literal(self.dim))
        return q

    def to_config(self) -> dict:
        return {"dim": self.dim, "storage": self.storage, "index_dim": self.index_dim}


def plan_storage(dim: int, storage: str = "auto", *, index_dim: int | None = None, m: int = 16,
                 ef_construction: int = 64) -> StoragePlan:
    """Choose the column type and index for ``dim`` within pgvector's limits.

    Args:
        dim: the embedding dimension.
        storage: ``auto`` (``vector`` up to 2000 dims, ``halfvec`` up to 4000, ``subvector``
            above), or one of ``vector``, ``halfvec``, ``subvector``, ``binary``, ``exact``.
        index_dim: MRL prefix indexed by ``subvector`` (default 1024, at most 4000).

    Raises:
        InputError: unknown storage, or a dimension the chosen storage cannot hold.

    Example:
        >>> plan_storage(4096).storage
        'subvector'
    """
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InputError(f"dim must be a positive integer, got {dim!r}")
    dim = int(dim)
    if storage not in STORAGES:
        raise InputError(f"storage must be one of {list(STORAGES)}, got {storage!r}")
    if storage == "auto":
        storage = "vector" if dim <= VECTOR_INDEX_MAX_DIM else "halfvec" if dim <= HALFVEC_INDEX_MAX_DIM \
            else "subvector"
    limits = {"vector": VECTOR_INDEX_MAX_DIM, "halfvec": HALFVEC_INDEX_MAX_DIM, "binary": BIT_INDEX_MAX_DIM,
              "subvector": VECTOR_MAX_DIM, "exact": VECTOR_MAX_DIM}
    if storage in ("binary", "subvector", "exact"):
        limits[storage] = min(limits[storage], VECTOR_MAX_DIM)  # the full vector is stored as vector(d)
    if dim > limits[storage]:
        raise InputError(f"storage {storage!r} holds at most {limits[storage]} dims, got dim={dim}; "
                         "use storage='halfvec' (<= 4000), 'subvector' or 'binary' (<= 16000)")
    if storage == "subvector":
        index_dim = int(index_dim or min(DEFAULT_PREFIX_DIM, dim))
        if not 1 <= index_dim <= min(dim, HALFVEC_INDEX_MAX_DIM):
            raise InputError(f"index_dim must be from 1 to {min(dim, HALFVEC_INDEX_MAX_DIM)}, got {index_dim}")
    else:
        if index_dim not in (None, dim):
            raise InputError(f"index_dim applies to storage='subvector' only, got index_dim={index_dim} "
                             f"with storage={storage!r}")
        index_dim = dim
    return StoragePlan(dim=dim, storage=storage, index_dim=index_dim, m=m, ef_construction=ef_construction)


# ---------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """Where a store's rows and embeddings live.

    Attributes:
        mode: ``table`` (a table owned by the store), ``column`` or ``side_table`` (attached).
        table: the main (or user's) table.
        key: its primary-key column; ``key_type`` its SQL type.
        embedding_table: the table holding the embedding column (``table`` or the side table).
        embedding_column: the embedding column's name.
        text_column, image_column, video_column: content columns of an attached table.
        columns: the table's columns returned in ``Hit.fields`` (without the embedding).
        field_types: declared user fields of a ``table`` store and their SQL types.
    """

    mode: str
    table: TableName
    key: str
    key_type: str
    embedding_table: TableName
    embedding_column: str = "embedding"
    text_column: str | None = None
    image_column: str | None = None
    video_column: str | None = None
    columns: tuple[str, ...] = ()
    field_types: tuple[tuple[str, str], ...] = ()

    @property
    def attached(self) -> bool:
        return self.mode != "table"

    @property
    def content_columns(self) -> dict[str, str]:
        pairs = {"text": self.text_column, "image": self.image_column, "video": self.video_column}
        return {k: v for k, v in pairs.items() if v}


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    type: str
    oid: int
    comment: str | None


def table_columns(conn: Any, table: TableName) -> list[ColumnInfo]:
    """The columns of ``table`` (empty when the table does not exist)."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.atttypid::int, col_description(a.attrelid, a.attnum)"
        " FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped"
        " ORDER BY a.attnum", (table.text,)).fetchall()
    return [ColumnInfo(*r) for r in rows]


def primary_key_of(conn: Any, table: TableName) -> list[str]:
    """Primary-key column names of ``table``."""
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
        " WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        (table.text,)).fetchall()
    return [r[0] for r in rows]


def _read_config(comment: str | None) -> dict | None:
    if not comment:
        return None
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    return data.get(CONFIG_TAG) if isinstance(data, dict) else None


# ---------------------------------------------------------------------------- connections
def connect_pg(target: Any, *, connect_timeout: float = 10.0, create_extension: bool = True) -> tuple[Any, bool]:
    """A psycopg connection (autocommit, pgvector types registered) and whether we own it.

    ``target`` is a URL (``postgresql://``, ``postgres://``, ``postgresql+psycopg://``), a
    libpq conninfo string, or an open psycopg connection opened with ``autocommit=True``.
    With ``create_extension=False`` nothing is created: a missing ``vector`` extension is an
    error (the read-only path of ``attach(create=False)``).

    Raises:
        UnavailableError: the server cannot be reached.
        ConnectorError: the ``vector`` extension is missing and cannot (or may not) be created.
    """
    psycopg = _psycopg()
    from pgvector.psycopg import register_vector

    owned = not isinstance(target, psycopg.Connection)
    if owned:
        if not isinstance(target, str):
            raise InputError(f"target must be a postgresql:// URL or a psycopg Connection, got {type(target).__name__}")
        url = re.sub(r"^(postgres(?:ql)?)\+\w+://", r"\1://", target)
        try:
            conn = psycopg.connect(url, autocommit=True, connect_timeout=int(max(1, connect_timeout)))
        except psycopg.OperationalError as exc:
            raise UnavailableError(f"cannot connect to PostgreSQL at {_redact(url)}: {_whole(exc)}") from exc
    else:
        conn = target
        if not conn.autocommit:
            raise InputError("pass a psycopg connection opened with autocommit=True (got autocommit=False): "
                             "the store manages its own transactions")
    try:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
            if not create_extension:
                if owned:
                    conn.close()
                raise ConnectorError("the pgvector extension is not installed in this database and "
                                     "create_extension=False (read-only); run CREATE EXTENSION vector first")
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(conn)
    except psycopg.Error as exc:
        if owned:
            conn.close()
        raise ConnectorError(f"the pgvector extension is not available ({str(exc).strip()}); install pgvector "
                             "on the server and run CREATE EXTENSION vector as a privileged user") from exc
    return conn, owned


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _whole(exc: BaseException) -> str:
    """The driver's whole message on one line (libpq puts the cause and the hint on separate lines)."""
    return " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())


def _translate(exc: Exception, what: str) -> Exception:
    """A project error for a psycopg error (use as ``raise _translate(exc, ...) from exc``)."""
    psycopg = _psycopg()
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return NotFoundError(f"{what}: {_first_line(exc)}")
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return ConnectorError(f"{what}: {_first_line(exc)} (searches run in a READ ONLY transaction: a where= "
                              "filter may only read)")
    if isinstance(exc, psycopg.OperationalError):
        return UnavailableError(f"{what}: {type(exc).__name__}: {_whole(exc)}")
    return ConnectorError(f"{what}: {_first_line(exc)}")


_PLACEHOLDER_RE = re.compile(r"%(?:[sbt]|\([^)]*\)[sbt])")


def escape_where(where: str, *, placeholders: bool) -> str:
    """A raw SQL condition made safe to compose into a query that has bound parameters.

    psycopg reads every ``%`` of a query as the start of a placeholder, so a plain
    ``title LIKE 'a%'`` failed. Every ``%`` inside a quoted string or identifier is doubled
    (a literal); ``%%`` stays as written (one literal ``%``, as documented before); with
    ``placeholders`` (the caller passed ``params``) ``%s`` / ``%(name)s`` outside quotes stay
    placeholders; every other ``%`` (the modulo operator, a pattern) is doubled.

    Example:
        >>> escape_where("title LIKE 'a%' AND price < %s", placeholders=True)
        "title LIKE 'a%%' AND price < %s"
    """
    out: list[str] = []
    i, n = 0, len(where)
    quote: str | None = None
    while i < n:
        ch = where[i]
        if ch == "%" and where.startswith("%%", i):
            out.append("%%")
            i += 2
            continue
        if quote is not None:
            if ch == quote:
                if i + 1 < n and where[i + 1] == quote:  # '' or "" inside a quoted run
                    out.append(ch * 2)
                    i += 2
                    continue
                quote = None
            out.append("%%" if ch == "%" else ch)
            i += 1
            continue
        if ch in ("'", '"'):
            quote = ch
            out.append(ch)
            i += 1
            continue
        if ch == "%":
            match = _PLACEHOLDER_RE.match(where, i) if placeholders else None
            if match:
                out.append(match.group(0))
                i = match.end()
                continue
            out.append("%%")
            i += 1
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class _Binder:
    """Placeholders in text order, positional or named to match the user's ``params``."""

    def __init__(self, user_params: Any) -> None:
        self.named = isinstance(user_params, Mapping)
        self.values: Any = {} if self.named else []

    def __call__(self, name: str, value: Any) -> Any:
        sql = _sql()
        if self.named:
            self.values[f"_qvl_{name}"] = value
            return sql.Placeholder(f"_qvl_{name}")
        self.values.append(value)
        return sql.Placeholder()

    def add_user(self, params: Any) -> None:
        if params is None:
            return
        if self.named:
            clash = [k for k in params if str(k).startswith("_qvl_")]
            if clash:
                raise InputError(f"parameter names starting with '_qvl_' are reserved, got {clash}")
            self.values.update(params)
        elif isinstance(params, (list, tuple)):
            self.values.extend(params)
        else:
            raise InputError(f"params must be a dict (for %(name)s) or a list (for %s), got {type(params).__name__}")


_SQL_OPS = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
_SQL_SCALAR_TYPES = {"text": str, "bigint": int, "integer": int, "smallint": int, "double precision": float,
                     "real": float, "numeric": float, "boolean": bool}


def _jsonb_value(bind: "_Binder", name: str, value: Any) -> Any:
    """``to_jsonb(<bound value>::type)``: a filter value as jsonb, typed by its Python kind."""
    sql = _sql()
    cast = "boolean" if isinstance(value, bool) else "text" if isinstance(value, str) else "numeric"
    return sql.SQL("to_jsonb({}::{})").format(bind(name, value), sql.SQL(cast))


def compile_filter(node: Node, bind: "_Binder", *, metadata: bool = True, names: Iterator[int] | None = None) -> Any:
    """A portable filter tree (:func:`connectors.filters.parse`) as an SQL condition on alias ``t``.

    Columns are quoted identifiers and every value (and metadata key) a bound parameter. A
    metadata key compares ``t.metadata -> key`` as jsonb, checked to be of the value's JSON
    type first, so a string never equals a number and a range only matches numbers.
    """
    sql = _sql()
    names = names if names is not None else itertools.count()
    if isinstance(node, (And, Or)):
        if not node.parts:
            return sql.SQL("TRUE")
        joiner = sql.SQL(" AND " if isinstance(node, And) else " OR ")
        return sql.SQL("({})").format(joiner.join(compile_filter(p, bind, metadata=metadata, names=names)
                                                  for p in node.parts))
    if node.op == "$in":
        return compile_filter(Or(tuple(Cond(node.key, "$eq", v, node.metadata) for v in node.value)), bind,
                              metadata=metadata, names=names)
    op = sql.SQL(_SQL_OPS[node.op])
    if not node.metadata:
        return sql.SQL("(t.{} {} {})").format(sql.Identifier(node.key), op, bind(f"f{next(names)}", node.value))
    if not metadata:
        raise InputError(f"filter key {node.key!r} is not a column of this table and it has no metadata column")
    key = bind(f"f{next(names)}", node.key)
    if node.op == "$ne":
        kinds = sql.SQL("IN ('string', 'number', 'boolean')")
    else:
        kinds = sql.SQL("= {}").format(sql.Literal(
            "boolean" if isinstance(node.value, bool) else "string" if isinstance(node.value, str) else "number"))
    key2 = bind(f"f{next(names)}", node.key)
    return sql.SQL("(jsonb_typeof(t.metadata -> {}) {} AND t.metadata -> {} {} {})").format(
        key, kinds, key2, op, _jsonb_value(bind, f"f{next(names)}", node.value))


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text)[:3])


# ---------------------------------------------------------------------------- the store
class PgVectorStore:
    """A pgvector-backed store (see the module docstring). Build one with :func:`open_store`
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
        except _psycopg().Error as exc:
            raise _translate(exc, f"cannot create {self.table}") from exc

    def _create_table(self, fields: Mapping[str, Any], exist_ok: bool) -> None:
        sql = _sql()
        declared = []
        for name, typ in fields.items():
            validate_identifier(name, what="field name")
            if name in RESERVED_COLUMNS:
                raise InputError(f"field name {name!r} is reserved; reserved names are {sorted(RESERVED_COLUMNS)}")
            declared.append((name, _field_sql_type(name, typ)))
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
        sql = _sql()
        lay = self.layout
        expr = self.plan.index_expression(sql.Identifier(lay.embedding_column))
        self.client.execute(sql.SQL(
            "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw ({} {}) WITH (m = {}, ef_construction = {})").format(
            sql.Identifier(self._index_name()), lay.embedding_table.ident, expr, sql.SQL(self.plan.opclass),
            sql.Literal(self.plan.m), sql.Literal(self.plan.ef_construction)))

    def _ensure_attached_storage(self, *, exist_ok: bool) -> None:
        sql = _sql()
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
        psycopg = _psycopg()
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
                                           f"{_first_line(exc)}") from exc
                log.debug("streamed COPY into %s failed (%s); merging instead", self.table, _first_line(exc))
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
        psycopg = _psycopg()
        if not rows:
            return []
        try:
            with self._io_lock, self.client.transaction():
                return self._copy_merge(rows, vectors, direct=direct)
        except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as exc:
            raise _translate(exc, f"cannot write to {self.table}") from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            if self.client.broken or self.client.closed:
                raise UnavailableError(f"lost the connection while writing to {self.table}: "
                                       f"{_first_line(exc)}") from exc
            return self._split(rows, vectors, exc, direct)
        except Exception as exc:  # noqa: BLE001 - isolate the bad rows, report them by id
            return self._split(rows, vectors, exc, direct)

    def _split(self, rows: Sequence[Row], vectors: np.ndarray, exc: Exception, direct: bool) -> list[tuple[str, str]]:
        if len(rows) == 1:
            log.debug("row %s failed: %s", rows[0].id, exc)
            return [(rows[0].id, _first_line(exc))]
        mid = len(rows) // 2
        return self._write(rows[:mid], vectors[:mid], direct) + self._write(rows[mid:], vectors[mid:], direct)

    def _copy_merge(self, rows: Sequence[Row], vectors: np.ndarray, *, direct: bool) -> list[tuple[str, str]]:
        sql = _sql()
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
                except _psycopg().errors.UniqueViolation:
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
        sql = _sql()
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
        sql = _sql()
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
        sql = _sql()
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
        sql = _sql()
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
        except _psycopg().Error as exc:
            raise _translate(exc, f"cannot delete from {self.table}") from exc

    def existing_ids(self, ids: Sequence[Any]) -> set[str]:
        """Which of ``ids`` already have an embedding (lets an ingest skip what landed)."""
        self._check_open()
        sql = _sql()
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
        except _psycopg().Error as exc:
            raise _translate(exc, f"cannot look up ids in {lay.embedding_table}") from exc

    def count(self) -> int:
        """Number of rows that have an embedding."""
        self._check_open()
        sql = _sql()
        lay = self.layout
        where = sql.SQL(" WHERE {} IS NOT NULL").format(sql.Identifier(lay.embedding_column)) \
            if lay.mode == "column" else sql.SQL("")
        try:
            return int(self.client.execute(sql.SQL("SELECT count(*) FROM {}{}").format(
                lay.embedding_table.ident, where)).fetchone()[0])
        except _psycopg().Error as exc:
            raise _translate(exc, f"cannot count {lay.embedding_table}") from exc

    def drop(self) -> None:
        """Drop the store's table; for an attached table drop only the embedding column or side
        table (and the sync objects, if installed). The user's rows are never dropped."""
        self._check_open()
        sql = _sql()
        lay = self.layout
        try:
            with self.client.transaction():
                if lay.attached:
                    from .pgvector_sync import uninstall_sync

                    uninstall_sync(self)
                if lay.mode == "column":
                    self.client.execute(sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(
                        lay.table.ident, sql.Identifier(lay.embedding_column)))
                else:
                    self.client.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(lay.embedding_table.ident))
        except _psycopg().Error as exc:
            raise _translate(exc, f"cannot drop {lay.embedding_table}") from exc

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
        sql = _sql()
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
        psycopg = _psycopg()
        from psycopg.rows import dict_row

        try:
            with self.client.transaction(), self.client.cursor(row_factory=dict_row) as cur:
                cur.execute("SET TRANSACTION READ ONLY")  # a raw where= runs with the store's privileges
                self._search_settings(cur, n, filtered, ef_search)
                cur.execute(stmt, values)
                records = cur.fetchall()
        except psycopg.errors.UndefinedColumn as exc:
            if self.layout.attached or where is not None or filter is not None:
                raise _translate(exc, f"search in {self.table} failed") from exc
            raise NotFoundError(f"search in {self.table} failed: {_first_line(exc)}; it is not a table this "
                                "project created, nor one attached with attach() / qvl pg sync: attach it "
                                "first") from exc
        except psycopg.Error as exc:
            raise _translate(exc, f"search in {self.table} failed") from exc
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
        sql = _sql()
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
        sql = _sql()
        lay = self.layout
        bind = _Binder(params)
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
            fields = {c: _SQL_SCALAR_TYPES.get(t) for c, t in types.items()}
        node = parse(flt, fields)

        def check(n: Node) -> None:
            if isinstance(n, (And, Or)):
                for p in n.parts:
                    check(p)
            elif lay.attached and n.key not in lay.columns:
                raise InputError(f"filter key {n.key!r} is not one of the table's columns {list(lay.columns)} "
                                 "(an attached table has no metadata column)")
            elif not lay.attached and n.key in types and types[n.key] not in _SQL_SCALAR_TYPES:
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


def _field_sql_type(name: str, typ: Any) -> str:
    import datetime

    mapping = {**FIELD_TYPES, datetime.datetime: "timestamptz", datetime.date: "date"}
    if isinstance(typ, str):
        low = typ.strip().lower()
        if low not in SQL_FIELD_TYPES:
            raise InputError(f"field {name!r}: SQL type {typ!r} is not one of {list(SQL_FIELD_TYPES)}")
        return {"timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone"}.get(low, low)
    if typ in mapping:
        return mapping[typ]
    raise InputError(f"field {name!r}: type {typ!r} is not one of {[t.__name__ for t in mapping]} "
                     f"or an SQL type name {list(SQL_FIELD_TYPES)}")


# ---------------------------------------------------------------------------- factories
def open_store(target: Any, *, table: str | None = None, collection: str | None = None, embedder: Any = None,
               dim: int | None = None, storage: str = "auto", index_dim: int | None = None, m: int = 16,
               ef_construction: int = 64, rescore_factor: int = 4, connect_timeout: float = 10.0) -> PgVectorStore:
    """Open a store over a table owned by the store (call :meth:`PgVectorStore.create` to make it).

    A table of yours that :func:`attach` (or ``qvl pg sync``) gave embeddings, in either
    mode, is opened as :func:`attach` with ``create=False`` opens it (no DDL): its hits carry
    the table's own columns as fields. The name is looked up with PostgreSQL's identifier
    rules (see :func:`resolve_table`).

    Args:
        target: ``postgresql://user:pass@host:5432/db`` (or ``postgres://``,
            ``postgresql+psycopg://``), or a psycopg connection with ``autocommit=True``.
        table: table name, optionally ``schema.table``; ``collection`` is an alias.
        embedder: an :class:`~embedder.Embedder` (or remote twin) for items; optional if every
            row and query carries a vector.
        dim: embedding dimension; default: the existing table's, else ``embedder.dim``.
        storage, index_dim: see :func:`plan_storage`; default: the existing table's choice.
        m, ef_construction: HNSW build parameters.
        rescore_factor: shortlist size multiplier for re-scored storages.

    Raises:
        UnavailableError, ConnectorError, InputError, SchemaMismatchError (existing table with a
        different dim or storage).

    Example:
        >>> store = open_store("postgresql://localhost/app", table="photos", embedder=emb, dim=1024)  # doctest: +SKIP
        >>> store.create(fields={"album": str}, exist_ok=True)  # doctest: +SKIP
    """
    if table is not None and collection is not None and table != collection:
        raise InputError(f"pass table= or collection= (its alias), not both ({table!r} != {collection!r})")
    name = TableName.parse(table if table is not None else collection, what="table")
    conn, owned = connect_pg(target, connect_timeout=connect_timeout)
    try:
        resolved, note = resolve_table(conn, name)
        if note:
            log.warning("%s", note)
            name = resolved
        cols = {c.name: c for c in table_columns(conn, name)}
        config = _read_config(cols["embedding"].comment) if "embedding" in cols else None
        attached = _attached_embedding(conn, resolved, cols) if cols and (config or {}).get("mode") != "table" \
            else None
        if attached is not None:  # a table of yours, attached with attach() / qvl pg sync: searchable as it is
            found_mode, column, side = attached
            return _attach_on(conn, owned, resolved, side or resolved.sibling(f"{resolved.name}_embeddings"),
                              mode=found_mode, embedding_column=column, embedder=embedder, dim=dim, storage=storage,
                              index_dim=index_dim, m=m, ef_construction=ef_construction,
                              rescore_factor=rescore_factor, create=False)
        plan = _resolve_plan(str(name), config, cols.get("embedding"), dim=dim, storage=storage, index_dim=index_dim,
                             embedder=embedder, m=m, ef_construction=ef_construction)
        layout = Layout(mode="table", table=name, key="id", key_type="text", embedding_table=name,
                        columns=NATIVE_COLUMNS)
        store = PgVectorStore(conn, layout=layout, plan=plan, embedder=embedder, owned=owned,
                              rescore_factor=rescore_factor)
        if cols:
            store._refresh_layout()
        return store
    except BaseException:
        if owned:
            conn.close()
        raise


def _resolve_plan(where: str, config: dict | None, column: ColumnInfo | None, *, dim: int | None, storage: str,
                  index_dim: int | None, embedder: Any, m: int, ef_construction: int) -> StoragePlan:
    if config:
        existing = plan_storage(config["dim"], config["storage"], index_dim=config.get("index_dim"), m=m,
                                ef_construction=ef_construction)
        if dim is not None and dim != existing.dim:
            raise SchemaMismatchError(f"{where} stores dim={existing.dim}, requested dim={dim}")
        if storage not in ("auto", existing.storage):
            raise SchemaMismatchError(f"{where} uses storage={existing.storage!r}, requested storage={storage!r}")
        if index_dim is not None and existing.storage == "subvector" and index_dim != existing.index_dim:
            raise SchemaMismatchError(f"{where} indexes a {existing.index_dim}-dim prefix, requested {index_dim}")
        return existing
    if column is not None and dim is None:
        match = re.match(r"(vector|halfvec)\((\d+)\)", column.type)
        if match:
            dim = int(match.group(2))
            if storage == "auto" and match.group(1) == "vector" and dim > VECTOR_INDEX_MAX_DIM:
                storage = "subvector"
            return plan_storage(dim, storage, index_dim=index_dim, m=m, ef_construction=ef_construction)
    if dim is None:
        if embedder is None:
            raise InputError(f"{where}: pass dim= (or an embedder, whose full dim is used)")
        dim = int(embedder.dim)
    dim = check_dim(dim, embedder)  # before anything is created: 64..the model's full dim
    return plan_storage(dim, storage, index_dim=index_dim, m=m, ef_construction=ef_construction)


def attach(conn_or_url: Any, *, table: str, primary_key: str | None = None, text_column: str | None = None,
           image_column: str | None = None, video_column: str | None = None, embedder: Any = None,
           dim: int | None = None, mode: str | None = None, storage: str = "auto", index_dim: int | None = None,
           embedding_column: str = "embedding", side_table: str | None = None, backfill: bool = True,
           batch_size: int = 64, show_progress: bool = False, m: int = 16, ef_construction: int = 64,
           rescore_factor: int = 4, create: bool = True) -> PgVectorStore:
    """Add multimodal search to an existing table (or, with ``create=False``, open one that has it).

    Adds an embedding column (``mode="column"``, default) or a side table keyed by the primary
    key (``mode="side_table"``, named ``<table>_embeddings`` unless ``side_table`` is given),
    backfills the rows without an embedding (with a progress bar if asked), then builds the
    HNSW index. Calling it again is cheap: it reuses what exists and backfills only new rows.
    Arguments left out (mode, dim, storage, content columns) are read back from a previous
    attach when there is one.

    ``create=False`` is the read-only path (monitoring, workers, read replicas): it runs no DDL
    at all (no ``CREATE EXTENSION``, ``ALTER TABLE``, ``COMMENT`` or ``CREATE INDEX``, so it takes
    no ``ACCESS EXCLUSIVE`` lock on your table and needs only ``SELECT``), and no backfill; it
    raises :class:`NotFoundError` when the table has no embeddings yet.

    Args:
        conn_or_url: a URL or an autocommit psycopg connection.
        table: the existing table (``table`` or ``schema.table``).
        primary_key: its single-column primary key (default: detected).
        text_column, image_column, video_column: columns holding text and media paths/URLs/bytes;
            at least one. A row's columns are fused into one item.
        embedder, dim, storage, index_dim: as for :func:`open_store`.
        backfill: embed the rows that have none now (ignored with ``create=False``).
        create: add the embedding storage and index when missing (default); False opens
            existing storage read-only, as described above.

    Returns:
        The :class:`PgVectorStore` (a context manager, like :func:`open_store`). The backfill's
        :class:`~connectors.core.UpsertReport` is ``store.backfill_report``: ``written`` holds the
        primary keys (as text) embedded now, ``failed`` the ``(key, reason)`` pairs; failures are
        also logged as a warning. It is None when no backfill ran. To drive the backfill yourself,
        pass ``backfill=False`` and call ``report = store.backfill(show_progress=True)``.

    Raises:
        NotFoundError: the table or a column does not exist (or, with ``create=False``, the
            embedding column / side table).
        SchemaMismatchError: an existing embedding column/side table differs.
        InputError: bad identifiers, no content column, a composite primary key.

    Example:
        >>> store = attach(url, table="products", text_column="title", image_column="photo",
        ...                embedder=emb, dim=1024, show_progress=True)  # doctest: +SKIP
        >>> store.backfill_report.failed  # doctest: +SKIP
        [('17', 'cannot open image /data/missing.jpg: ...')]
    """
    name = TableName.parse(table, what="table")
    validate_identifier(embedding_column, what="embedding_column")
    for what, col in (("primary_key", primary_key), ("text_column", text_column), ("image_column", image_column),
                      ("video_column", video_column)):
        if col is not None:
            validate_identifier(col, what=what)
    if mode is not None and mode not in MODES:
        raise InputError(f"mode must be one of {list(MODES)}, got {mode!r}")
    side = TableName.parse(side_table, what="side_table") if side_table else None
    conn, owned = connect_pg(conn_or_url, create_extension=create)
    try:
        resolved, note = resolve_table(conn, name)
        if note:
            log.warning("attach: %s", note)
        if side is None:
            side = resolved.sibling(f"{resolved.name}_embeddings")
        elif side.schema is None and resolved.schema:
            side = TableName(side.name, resolved.schema)  # next to the table, whatever the search_path
        return _attach_on(conn, owned, resolved, side, primary_key=primary_key, text_column=text_column,
                          image_column=image_column, video_column=video_column, embedder=embedder, dim=dim,
                          mode=mode, storage=storage, index_dim=index_dim, embedding_column=embedding_column,
                          backfill=backfill, batch_size=batch_size, show_progress=show_progress, m=m,
                          ef_construction=ef_construction, rescore_factor=rescore_factor, create=create,
                          note=note)
    except BaseException:
        if owned:
            conn.close()
        raise


def _attached_embedding(conn: Any, table: TableName, cols: Mapping[str, ColumnInfo]
                        ) -> tuple[str, str, TableName | None] | None:
    """``(mode, embedding column, side table or None)`` of a table that :func:`attach` gave
    embeddings (read from the configuration it leaves in the column's comment), else None."""
    for col in cols.values():
        if (_read_config(col.comment) or {}).get("mode") == "column":
            return "column", col.name, None
    side = table.sibling(f"{table.name}_embeddings")
    for col in table_columns(conn, side):
        if (_read_config(col.comment) or {}).get("mode") == "side_table":
            return "side_table", col.name, side
    return None


def _attach_on(conn: Any, owned: bool, name: TableName, side_name: TableName, *, primary_key: str | None = None,
               text_column: str | None = None, image_column: str | None = None, video_column: str | None = None,
               embedder: Any = None, dim: int | None = None, mode: str | None = None, storage: str = "auto",
               index_dim: int | None = None, embedding_column: str = "embedding", backfill: bool = False,
               batch_size: int = 64, show_progress: bool = False, m: int = 16, ef_construction: int = 64,
               rescore_factor: int = 4, create: bool = True, note: str | None = None) -> PgVectorStore:
    """:func:`attach` on an open connection, for the resolved (schema-qualified) ``name``."""
    try:
        cols = {c.name: c for c in table_columns(conn, name)}
        if not cols:
            raise NotFoundError(f"table {name} does not exist")
        side_cols = {c.name: c for c in table_columns(conn, side_name)}
        found_mode, found = None, None
        if embedding_column in cols:
            found_mode, found = "column", cols[embedding_column]
        elif embedding_column in side_cols:
            found_mode, found = "side_table", side_cols[embedding_column]
        if not create and found is None:
            where = f"{name}.{embedding_column}" if mode != "side_table" else f"{side_name}.{embedding_column}"
            raise NotFoundError(f"{where} does not exist and create=False: attach the table first "
                                "(attach(...) or qvl pg sync)")
        config = _read_config(found.comment) if found else None
        if mode is not None and found_mode is not None and mode != found_mode:
            raise SchemaMismatchError(f"{name} already has embeddings in mode={found_mode!r}; requested mode={mode!r}")
        mode = mode or found_mode or "column"
        config = config or {}
        text_column = text_column or config.get("text_column")
        image_column = image_column or config.get("image_column")
        video_column = video_column or config.get("video_column")
        if not (text_column or image_column or video_column):
            raise InputError("pass at least one of text_column, image_column, video_column")
        for col in (text_column, image_column, video_column):
            if col and col not in cols:
                raise NotFoundError(f"column {col!r} does not exist in {name}; its columns are {sorted(cols)}")
        pk = primary_key_of(conn, name)
        if primary_key is None:
            if len(pk) != 1:
                raise InputError(f"table {name} has no single-column primary key (found {pk}); attach needs one: "
                                 "pass primary_key= naming a unique, non-null column")
            primary_key = pk[0]
        elif primary_key not in cols:
            raise NotFoundError(f"column {primary_key!r} does not exist in {name}; its columns are {sorted(cols)}")
        elif mode == "side_table" and pk != [primary_key]:
            raise InputError(f"side_table mode needs {primary_key!r} to be the primary key of {name} (it is {pk})")
        plan = _resolve_plan(str(name), config or None, found, dim=dim, storage=storage, index_dim=index_dim,
                             embedder=embedder, m=m, ef_construction=ef_construction)
        layout = Layout(mode=mode, table=name, key=primary_key, key_type=cols[primary_key].type,
                        embedding_table=name if mode == "column" else side_name, embedding_column=embedding_column,
                        text_column=text_column, image_column=image_column, video_column=video_column,
                        columns=tuple(c for c in cols if not (mode == "column" and c == embedding_column)))
        store = PgVectorStore(conn, layout=layout, plan=plan, embedder=embedder, owned=owned,
                              rescore_factor=rescore_factor)
        store.name_note = note
        if not create:
            if found is not None and found.type != plan.column_sql:
                raise SchemaMismatchError(f"{layout.embedding_table}.{embedding_column} is {found.type}, "
                                          f"requested {plan.column_sql} (dim={plan.dim}, storage={plan.storage!r})")
            return store
        try:
            store._ensure_attached_storage(exist_ok=True)
            if backfill:
                report = store.backfill(batch_size=batch_size, show_progress=show_progress)
                if report.failed:
                    log.warning("attach %s: %d rows embedded, %d failed (see store.backfill_report.failed)", name,
                                len(report.written), len(report.failed))
            store._ensure_index()
        except _psycopg().Error as exc:
            raise _translate(exc, f"cannot attach to {name}") from exc
        return store
    except BaseException:
        if owned:
            conn.close()
        raise


# ---------------------------------------------------------------------------- SQLAlchemy
def _sqlalchemy() -> Any:
    try:
        import sqlalchemy
        import pgvector.sqlalchemy  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "sqlalchemy", "pgvector", "The SQLAlchemy helpers") from exc
    return sqlalchemy


def embedding_type(dim: int, *, storage: str = "auto") -> Any:
    """The SQLAlchemy column type for embeddings of ``dim`` (``VECTOR(d)`` or ``HALFVEC(d)``).

    Example:
        >>> embedding_type(3000)  # doctest: +SKIP
        HALFVEC(dim=3000)
    """
    _sqlalchemy()
    from pgvector.sqlalchemy import HALFVEC, VECTOR

    plan = plan_storage(dim, storage)
    return HALFVEC(plan.dim) if plan.column_type == "halfvec" else VECTOR(plan.dim)


def embedding_index(table_name: str, *, dim: int, storage: str = "auto", column: str = "embedding",
                    index_dim: int | None = None, m: int = 16, ef_construction: int = 64) -> Any:
    """An SQLAlchemy ``Index`` (HNSW, cosine) for an embedding column; put it in ``__table_args__``."""
    sa = _sqlalchemy()
    plan = plan_storage(dim, storage, index_dim=index_dim, m=m, ef_construction=ef_construction)
    validate_identifier(column, what="column")
    name = derived_name(f"{table_name}_{column}_{plan.storage}_idx")
    opts = {"postgresql_using": "hnsw", "postgresql_with": {"m": plan.m, "ef_construction": plan.ef_construction}}
    if plan.storage in ("vector", "halfvec"):
        return sa.Index(name, column, postgresql_ops={column: plan.opclass}, **opts)
    expr = {"subvector": f"(subvector({column}, 1, {plan.index_dim})::{plan.prefix_type}({plan.index_dim}))",
            "binary": f"(binary_quantize({column})::bit({plan.dim}))"}[plan.storage]
    return sa.Index(name, sa.text(f"{expr} {plan.opclass}"), **opts)


def embedding_mixin(dim: int, *, storage: str = "auto", column: str = "embedding", nullable: bool = True,
                    index: bool = True, index_dim: int | None = None) -> type:
    """A declarative mixin giving an ORM model an embedding column of the right type (and index).

    The mixin defines ``__table_args__`` with the HNSW index when ``index=True``; a model with its
    own ``__table_args__`` should add :func:`embedding_index` there instead.

    Example:
        >>> class Product(embedding_mixin(1024), Base):  # doctest: +SKIP
        ...     __tablename__ = "products"
        ...     id: Mapped[int] = mapped_column(primary_key=True)
        >>> select(Product).order_by(Product.embedding.cosine_distance(vec)).limit(5)  # doctest: +SKIP
    """
    _sqlalchemy()
    from sqlalchemy.orm import declared_attr, mapped_column

    validate_identifier(column, what="column")
    plan = plan_storage(dim, storage, index_dim=index_dim)
    col_type = embedding_type(dim, storage=storage)
    attrs: dict[str, Any] = {
        column: declared_attr(lambda cls: mapped_column(column, col_type, nullable=nullable)),
        "__qvl_plan__": plan,
        "__doc__": f"Mixin: a {plan.column_sql} column {column!r} (storage {plan.storage!r}).",
    }
    if index:
        attrs["__table_args__"] = declared_attr.directive(lambda cls: (embedding_index(
            cls.__tablename__, dim=dim, storage=storage, column=column, index_dim=index_dim),))
    return type(f"EmbeddingMixin{plan.dim}", (), attrs)


def cosine_distance(column: Any, vector: Any) -> Any:
    """``column <=> vector`` as an SQLAlchemy expression (exact cosine distance)."""
    _sqlalchemy()
    return column.cosine_distance(np.asarray(vector, dtype=np.float32))


def cosine_similarity(column: Any, vector: Any) -> Any:
    """``1 - (column <=> vector)``, labelled ``score``."""
    return (1 - cosine_distance(column, vector)).label("score")


def index_distance(column: Any, vector: Any, *, dim: int, storage: str = "auto", index_dim: int | None = None) -> Any:
    """The distance the HNSW index ranks by, to ``ORDER BY`` a shortlist.

    Equal to :func:`cosine_distance` for ``vector``/``halfvec`` storage; for ``subvector`` and
    ``binary`` storage it is the indexed approximation (prefix cosine or Hamming distance): order
    a shortlist by it, then order the shortlist by :func:`cosine_distance`.
    """
    sa = _sqlalchemy()
    from pgvector.sqlalchemy import BIT, HALFVEC, VECTOR

    plan = plan_storage(dim, storage, index_dim=index_dim)
    vec = np.asarray(vector, dtype=np.float32)
    if plan.storage == "subvector":
        typ = VECTOR(plan.index_dim) if plan.prefix_type == "vector" else HALFVEC(plan.index_dim)
        prefix = lambda e: sa.cast(sa.func.subvector(e, 1, plan.index_dim, type_=VECTOR()), typ)  # noqa: E731
        return prefix(column).op("<=>", return_type=sa.Float)(prefix(sa.cast(vec, VECTOR(plan.dim))))
    if plan.storage == "binary":
        quant = lambda e: sa.cast(sa.func.binary_quantize(e, type_=BIT()), BIT(plan.dim))  # noqa: E731
        return quant(column).op("<~>", return_type=sa.Float)(sa.func.binary_quantize(sa.cast(vec, VECTOR(plan.dim)),
                                                                                        type_=BIT()))
    return cosine_distance(column, vec)


def register_vector_on(engine: Any) -> Any:
    """Register pgvector's psycopg types on every connection of a SQLAlchemy engine (sync or
    async, ``postgresql+psycopg://``), so vectors can be bound and read as pgvector objects.
    Returns the engine.

    Example:
        >>> engine = register_vector_on(create_async_engine("postgresql+psycopg://localhost/app"))  # doctest: +SKIP
    """
    sa = _sqlalchemy()
    sync_engine = getattr(engine, "sync_engine", engine)

    @sa.event.listens_for(sync_engine, "connect")
    def _register(dbapi_connection: Any, _record: Any) -> None:
        if hasattr(dbapi_connection, "run_async"):
            from pgvector.psycopg import register_vector_async

            dbapi_connection.run_async(register_vector_async)
        else:
            from pgvector.psycopg import register_vector

            register_vector(dbapi_connection)

    return engine


__all__ = ["PgVectorStore", "StoragePlan", "Layout", "TableName", "open_store", "attach", "plan_storage",
           "validate_identifier", "connect_pg", "embedding_type", "embedding_index", "embedding_mixin",
           "cosine_distance", "cosine_similarity", "index_distance", "register_vector_on"]

"""What a pgvector store is made of in the database: names, storage plans, layouts, columns.

* identifiers: :func:`validate_identifier`, :class:`TableName`, :func:`resolve_table` (which
  table a name means, by PostgreSQL's rules), :func:`derived_name`;
* storage: :class:`StoragePlan` and :func:`plan_storage` (column type and index within
  pgvector's limits), :func:`resolve_plan` (a requested plan checked against a table's),
  :func:`storage_for` and :func:`quantization_of` (the ``quantization=`` option as a storage);
* :class:`Layout`: where a store's rows and embeddings live;
* introspection: :func:`table_columns`, :func:`primary_key_of`, :func:`read_config` (the
  configuration a store leaves in its embedding column's comment);
* :func:`field_sql_type`: the SQL type of a declared field;
* the names of the sync objects (:func:`sync_names`) and :func:`drop_sync_objects`, which a
  store's ``drop()`` needs below :mod:`connectors.pgvector.sync`.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from embedder.contracts import EmbedderLike
from embedder.errors import InputError, NotFoundError, SchemaMismatchError

from ..core import check_dim
from .wire import sql_module

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

CONFIG_TAG = "qvl"

FIELD_TYPES: dict[Any, str] = {str: "text", int: "bigint", float: "double precision", bool: "boolean",
                               dict: "jsonb", list: "jsonb", bytes: "bytea"}
SQL_FIELD_TYPES = ("text", "bigint", "integer", "smallint", "double precision", "real", "boolean", "jsonb",
                   "bytea", "timestamptz", "timestamp", "date", "numeric", "uuid")


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
        sql = sql_module()
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
        sql = sql_module()
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
        sql = sql_module()
        return self.index_expression(sql.SQL("{}::vector({})").format(param, sql.Literal(self.dim)))

    def exact_query(self, param: Any) -> Any:
        """The query vector cast to the stored column type."""
        sql = sql_module()
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


# ---------------------------------------------------------------------------- quantization
def storage_for(quantization: str | None, storage: str, dim: int) -> str:
    """The storage that honours ``quantization`` at ``dim`` (``storage`` when none is asked for).

    float32: ``vector`` up to 2000 dims, else ``subvector`` (an indexed prefix, re-scored on the
    float vector); float16: ``halfvec`` up to 4000 dims; binary: ``binary`` (a ``bit`` index,
    re-scored exactly). What pgvector cannot do (int8, float16 above 4000 dims) keeps ``storage``
    and is refused at ``create``.

    Raises:
        InputError: both ``storage`` and ``quantization`` given, and they disagree.
    """
    if quantization is None:
        return storage
    wanted = {"float32": "vector" if dim <= VECTOR_INDEX_MAX_DIM else "subvector",
              "float16": "halfvec" if dim <= HALFVEC_INDEX_MAX_DIM else None, "binary": "binary"}.get(quantization)
    if storage == "auto":
        return wanted or storage
    if quantization_of(storage) != quantization:
        raise InputError(f"storage={storage!r} stores {quantization_of(storage)} vectors, not "
                         f"quantization={quantization!r}; pass one of them")
    return storage


def quantization_of(storage: str) -> str:
    """The ``quantization=`` name of a storage: halfvec is float16, binary is binary, the rest float32."""
    return {"halfvec": "float16", "binary": "binary"}.get(storage, "float32")


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


def read_config(comment: str | None) -> dict | None:
    if not comment:
        return None
    try:
        data = json.loads(comment)
    except ValueError:
        return None
    return data.get(CONFIG_TAG) if isinstance(data, dict) else None


# The Python type of a field column (``BaseStore.fields``): jsonb reads back as dict, so a
# ``list`` field is reported as ``dict``; a type this map lacks reads back as ``str``.
PYTHON_TYPES: dict[str, type] = {
    "text": str, "bigint": int, "integer": int, "smallint": int, "double precision": float, "real": float,
    "numeric": float, "boolean": bool, "jsonb": dict, "bytea": bytes, "timestamp with time zone": datetime.datetime,
    "timestamp without time zone": datetime.datetime, "date": datetime.date, "uuid": uuid.UUID}


def python_type(sql_type: str) -> type:
    """The Python type a column of ``sql_type`` holds (see :data:`PYTHON_TYPES`)."""
    return PYTHON_TYPES.get(sql_type, str)


def field_sql_type(name: str, typ: Any) -> str:
    mapping = {**FIELD_TYPES, datetime.datetime: "timestamptz", datetime.date: "date", uuid.UUID: "uuid"}
    if isinstance(typ, str):
        low = typ.strip().lower()
        if low not in SQL_FIELD_TYPES:
            raise InputError(f"field {name!r}: SQL type {typ!r} is not one of {list(SQL_FIELD_TYPES)}")
        return {"timestamptz": "timestamp with time zone", "timestamp": "timestamp without time zone"}.get(low, low)
    if typ in mapping:
        return mapping[typ]
    raise InputError(f"field {name!r}: type {typ!r} is not one of {[t.__name__ for t in mapping]} "
                     f"or an SQL type name {list(SQL_FIELD_TYPES)}")


def resolve_plan(where: str, config: dict | None, column: ColumnInfo | None, *, dim: int | None, storage: str,
                  index_dim: int | None, embedder: EmbedderLike | None, m: int, ef_construction: int,
                  quantization: str | None = None) -> StoragePlan:
    if config:
        existing = plan_storage(config["dim"], config["storage"], index_dim=config.get("index_dim"), m=m,
                                ef_construction=ef_construction)
        if dim is not None and dim != existing.dim:
            raise SchemaMismatchError(f"table {where} stores vectors of dim {existing.dim}, but dim={dim} was "
                                      f"requested; open it with dim={existing.dim} or use another table")
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
    return plan_storage(dim, storage_for(quantization, storage, dim), index_dim=index_dim, m=m,
                        ef_construction=ef_construction)


# ---------------------------------------------------------------------------- sync objects
@dataclass(frozen=True)
class SyncObjects:
    """Names of the sync objects of a table."""

    queue: TableName
    failed: TableName
    function: TableName
    trigger_upsert: str
    trigger_delete: str
    queue_index: str


def sync_names(t: TableName) -> SyncObjects:
    """The names :func:`~connectors.pgvector.sync.install_sync` uses for table ``t``, in its schema."""
    return SyncObjects(queue=t.sibling(f"{t.name}_qvl_queue"), failed=t.sibling(f"{t.name}_qvl_failed"),
                       function=t.sibling(f"{t.name}_qvl_enqueue"), trigger_upsert=derived_name(f"{t.name}_qvl_upsert"),
                       trigger_delete=derived_name(f"{t.name}_qvl_delete"),
                       queue_index=derived_name(f"{t.name}_qvl_queue_key_idx"))


def drop_sync_objects(conn: Any, table: TableName) -> None:
    """Drop the sync triggers, function, queue and failed-rows table of ``table`` (idempotent;
    :func:`~connectors.pgvector.sync.uninstall_sync` and :meth:`PgVectorStore.drop` call it)."""
    sql = sql_module()
    obj = sync_names(table)
    with conn.transaction():
        if conn.execute("SELECT to_regclass(%s)", (table.text,)).fetchone()[0] is not None:
            for trig in (obj.trigger_upsert, obj.trigger_delete):
                conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(trig),
                                                                               table.ident))
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(obj.function.ident))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(obj.queue.ident, obj.failed.ident))

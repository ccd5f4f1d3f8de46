"""The Postgres wire: connections, driver errors, pgvector's binary format, and filters as SQL.

The bottom of :mod:`connectors.pgvector` (it imports nothing else of the package):

* :func:`psycopg_module` / :func:`sql_module`: ``psycopg`` (and pgvector's psycopg types),
  imported only when a function needs them;
* :func:`connect_pg`: an autocommit connection with the ``vector`` extension and types;
* :func:`translate_error`, :func:`first_line`: a psycopg error as a project error;
* :func:`vector_wire` and the COPY constants: vectors in pgvector's binary COPY format;
* :func:`escape_where`, :class:`Binder`, :func:`compile_filter`: a raw ``where=`` made safe to
  compose, and the portable filter (:mod:`connectors.filters`) as SQL with bound values.
"""
from __future__ import annotations

import itertools
import re
import struct
from typing import Any, Iterator, Mapping

import numpy as np

from embedder.errors import ConnectorError, InputError, MissingDependencyError, NotFoundError, UnavailableError

from ..filters import And, Cond, Node, Or

# Lookups of a batch of keys (``key = ANY(%s)``) are never server-prepared: psycopg prepares a
# query after 5 runs, PostgreSQL then settles on a generic plan made while the table was small
# (a sequential scan testing every row against the whole array), and a bulk load into a fresh
# table turns quadratic: the new-rows probe of an upsert took 0.75 s per 4096-row batch at
# 16k rows instead of 5 ms.
KEY_ARRAY_PREPARE = False
BYTEA_OID = 17
JSONB_EMPTY = b"\x01{}"
STREAM_BLOCK = 512  # rows validated and converted at a time while a COPY streams


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
def psycopg_module() -> Any:
    try:
        import psycopg
        import pgvector.psycopg  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(exc.name or "psycopg", "pgvector", "The Postgres connector") from exc
    return psycopg


def sql_module() -> Any:
    return psycopg_module().sql


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
    psycopg = psycopg_module()
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _whole(exc: BaseException) -> str:
    """The driver's whole message on one line (libpq puts the cause and the hint on separate lines)."""
    return " ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())


def translate_error(exc: Exception, what: str) -> Exception:
    """A project error for a psycopg error (use as ``raise translate_error(exc, ...) from exc``)."""
    psycopg = psycopg_module()
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return NotFoundError(f"{what}: {first_line(exc)}")
    if isinstance(exc, psycopg.errors.ReadOnlySqlTransaction):
        return ConnectorError(f"{what}: {first_line(exc)} (searches run in a READ ONLY transaction: a where= "
                              "filter may only read)")
    if isinstance(exc, psycopg.OperationalError):
        return UnavailableError(f"{what}: {type(exc).__name__}: {_whole(exc)}")
    return ConnectorError(f"{what}: {first_line(exc)}")


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


class Binder:
    """Placeholders in text order, positional or named to match the user's ``params``."""

    def __init__(self, user_params: Any) -> None:
        self.named = isinstance(user_params, Mapping)
        self.values: Any = {} if self.named else []

    def __call__(self, name: str, value: Any) -> Any:
        sql = sql_module()
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
SQL_SCALAR_TYPES = {"text": str, "bigint": int, "integer": int, "smallint": int, "double precision": float,
                     "real": float, "numeric": float, "boolean": bool}


def _jsonb_value(bind: "Binder", name: str, value: Any) -> Any:
    """``to_jsonb(<bound value>::type)``: a filter value as jsonb, typed by its Python kind."""
    sql = sql_module()
    cast = "boolean" if isinstance(value, bool) else "text" if isinstance(value, str) else "numeric"
    return sql.SQL("to_jsonb({}::{})").format(bind(name, value), sql.SQL(cast))


def compile_filter(node: Node, bind: "Binder", *, metadata: bool = True, names: Iterator[int] | None = None) -> Any:
    """A portable filter tree (:func:`connectors.filters.parse`) as an SQL condition on alias ``t``.

    Columns are quoted identifiers and every value (and metadata key) a bound parameter. A
    metadata key compares ``t.metadata -> key`` as jsonb, checked to be of the value's JSON
    type first, so a string never equals a number and a range only matches numbers.
    """
    sql = sql_module()
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

"""The SQLite side of the Faiss store: the schema record, the rows table, and the portable
filter compiled to a parameterised SQL condition on it.

One SQLite file per folder (``store.sqlite``) holds a record per collection in
``qvl_collections`` and, per collection, ``qvl_rows_<name>`` (one row per stored row: the
Faiss id ``_fid``, our ``id``, ``text``, ``media``, ``modality``, ``metadata`` as JSON text,
the raw float32 vector ``_vec``, the generation ``_gen`` that wrote it, and each declared
field as a typed column ``f_<name>``) and ``qvl_dead_<name>`` (the Faiss ids that left the
collection, with the generation that removed them: what a handle replays to catch up).
"""
from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from embedder.errors import InputError, SchemaMismatchError

from ..filters import And, Cond, Node, Or, kind_of

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
FIELD_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
RESERVED = ("id", "text", "media", "modality", "metadata", "vector")
TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool"}
SQL_TYPES = {str: "TEXT", int: "INTEGER", float: "REAL", bool: "INTEGER"}
FORMAT = 1  # the layout version recorded with each collection
# json_each types of each value kind (the filters' kinds: strings, numbers, booleans)
_JSON_TYPES = {"str": "('text')", "num": "('integer','real')", "bool": "('true','false')"}
_SCALAR_JSON = "('text','integer','real','true','false')"
_CHUNK = 500  # ids per IN (...) list

META_DDL = """CREATE TABLE IF NOT EXISTS qvl_collections (
    name TEXT PRIMARY KEY, uid TEXT NOT NULL, format INTEGER NOT NULL, dim INTEGER NOT NULL,
    fields TEXT NOT NULL, fingerprint TEXT, spec TEXT NOT NULL,
    gen INTEGER NOT NULL, index_gen INTEGER NOT NULL, next_fid INTEGER NOT NULL, pending INTEGER NOT NULL)"""


def check_name(collection: str) -> str:
    """A collection name usable as a file name and an SQL identifier, or InputError."""
    if not isinstance(collection, str) or not NAME_RE.match(collection):
        raise InputError(f"collection name {collection!r} is not allowed: use 1 to 128 letters, digits, '_', '.' "
                         "or '-' (not starting with '.' or '-')")
    return collection


def rows_table(collection: str) -> str:
    return f'"qvl_rows_{collection}"'


def dead_table(collection: str) -> str:
    return f'"qvl_dead_{collection}"'


def column(field: str) -> str:
    """The SQL column of a declared field (prefixed, so no name clashes with ours)."""
    return f'"f_{field}"'


def create_ddl(collection: str, fields: Mapping[str, type]) -> list[str]:
    cols = "".join(f", {column(k)} {SQL_TYPES[t]}" for k, t in fields.items())
    return [f"CREATE TABLE {rows_table(collection)} (_fid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
            f"_gen INTEGER NOT NULL, text TEXT, media TEXT, modality TEXT, metadata TEXT NOT NULL, "
            f"_vec BLOB NOT NULL{cols})",
            f'CREATE INDEX "qvl_gen_{collection}" ON {rows_table(collection)} (_gen)',
            f"CREATE TABLE {dead_table(collection)} (_fid INTEGER PRIMARY KEY, _gen INTEGER NOT NULL)"]


def drop_ddl(collection: str) -> list[str]:
    return [f"DROP TABLE IF EXISTS {rows_table(collection)}", f"DROP TABLE IF EXISTS {dead_table(collection)}"]


def fields_json(fields: Mapping[str, type]) -> str:
    return json.dumps({k: TYPE_NAMES[t] for k, t in fields.items()})


def fields_from_json(text: str, collection: str) -> dict[str, type]:
    by_name = {v: k for k, v in TYPE_NAMES.items()}
    try:
        return {k: by_name[v] for k, v in json.loads(text).items()}
    except (ValueError, KeyError, AttributeError) as exc:
        raise SchemaMismatchError(f"collection {collection!r}: its field record {text!r} was not written by this "
                                  "connector") from exc


def field_columns(fields: Mapping[str, type]) -> str:
    """The SELECT list of a row's stored fields (without the vector)."""
    return "id, text, media, modality, metadata" + "".join(f", {column(k)}" for k in fields)


def decode_fields(rec: tuple, fields: Mapping[str, type], start: int = 1) -> dict:
    """A row's fields from ``rec[start:]`` as selected by :func:`field_columns` (after the id)."""
    text, media, modality, meta = rec[start:start + 4]
    out: dict[str, Any] = {"text": text, "media": media, "modality": modality, "metadata": json.loads(meta)}
    for (name, typ), value in zip(fields.items(), rec[start + 4:]):
        out[name] = bool(value) if typ is bool and value is not None else value
    return out


def encode_row(row: Any, vector: np.ndarray, fields: Mapping[str, type]) -> tuple[list[Any] | None, str | None]:
    """The column values of a row after ``_fid, _gen`` (id, text, media, modality, metadata, _vec,
    declared fields), or ``(None, reason)`` for a row SQLite cannot store exactly."""
    try:
        meta = json.dumps(row.metadata, ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        return None, f"metadata is not valid JSON ({exc}): NaN and infinity cannot be stored"
    values: list[Any] = [row.id, row.text, row.media, row.modality, meta,
                         np.ascontiguousarray(vector, dtype="<f4").tobytes()]
    for name, typ in fields.items():
        value = row.fields.get(name)
        if isinstance(value, np.generic):
            value = value.item()
        if value is not None:
            ok = (isinstance(value, bool) if typ is bool else
                  isinstance(value, (int, float)) and not isinstance(value, bool) if typ is float else
                  isinstance(value, int) and not isinstance(value, bool) if typ is int else isinstance(value, str))
            if not ok:
                return None, f"field {name!r} is {typ.__name__}, got {type(value).__name__} {value!r}"
            if typ is int and not -2**63 <= value < 2**63:
                return None, f"field {name!r}: {value} does not fit in 64 bits"
            if typ is float:
                value = float(value)
        values.append(value)
    for i, value in enumerate(values):
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                what = ["id", "text", "media", "modality", "metadata", "vector", *fields][i]
                return None, (f"{what} {value!r} is not valid Unicode (a lone surrogate, e.g. from an undecodable "
                              "file name); SQLite stores UTF-8 text only")
    return values, None


def insert_sql(collection: str, fields: Mapping[str, type]) -> str:
    cols = "_fid, _gen, id, text, media, modality, metadata, _vec" + "".join(f", {column(k)}" for k in fields)
    return f"INSERT INTO {rows_table(collection)} ({cols}) VALUES ({', '.join('?' * (8 + len(fields)))})"


def chunks(values: list, size: int = _CHUNK) -> Iterable[list]:
    for start in range(0, len(values), size):
        yield values[start:start + size]


def select_in(conn: sqlite3.Connection, sql: str, key: str, values: list) -> list[tuple]:
    """``sql`` (with a trailing condition slot ``{in}``) run over ``values`` in chunks: ``key IN (...)``."""
    out: list[tuple] = []
    for part in chunks(values):
        out += conn.execute(sql.format(cond=f"{key} IN ({', '.join('?' * len(part))})"), part).fetchall()
    return out


# ---------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class Where:
    """A compiled filter: an SQL condition on the rows table and its parameters; ``native``: the
    user's own SQL, run on a view that names the declared fields as declared."""

    sql: str
    params: Any = ()
    native: bool = False


def matching(conn: sqlite3.Connection, collection: str, fields: Mapping[str, type], where: Where,
             params: Any) -> np.ndarray:
    """The Faiss ids of the rows a filter selects (the pre-filter: search only among them).

    Raises:
        InputError: an SQL filter that fails (the message has SQLite's reason), ``params`` with
            the portable filter.
    """
    rows_t = rows_table(collection)
    if not where.native:
        if params is not None:
            raise InputError("params= goes with an SQL filter string, not with the portable filter")
        found = conn.execute(f"SELECT _fid FROM {rows_t} WHERE {where.sql}", where.params)
        return np.array([f for (f,) in found], dtype=np.int64)
    view = ", ".join(["_fid", "id", "text", "media", "modality", "metadata",
                      *(f'{column(k)} AS "{k}"' for k in fields)])
    conn.execute("PRAGMA query_only = ON")  # trusted input, still: it cannot write
    try:
        found = conn.execute(f"SELECT _fid FROM (SELECT {view} FROM {rows_t}) WHERE ({where.sql})",
                             params if params is not None else ())
        return np.array([f for (f,) in found], dtype=np.int64)
    except (sqlite3.OperationalError, sqlite3.ProgrammingError, sqlite3.Warning) as exc:
        raise InputError(f"the SQL filter {where.sql!r} failed: {exc}") from exc
    finally:
        conn.execute("PRAGMA query_only = OFF")


def compile_where(node: Node, fields: Mapping[str, type]) -> tuple[str, list[Any]] | None:
    """The portable filter as an SQL condition on the rows table with its parameters (values
    bound, never spliced), or None when it matches everything (``{}``).

    Declared fields are typed columns (a stored value always has the field's kind), the
    built-ins are text columns; metadata keys are read with ``json_each`` (the key is a bound
    parameter too, so any key works), and each value matches only stored values of its kind.
    A missing or null value matches no condition, ``$ne`` included (SQL's NULL rule).
    """
    if isinstance(node, And) and not node.parts:
        return None
    params: list[Any] = []
    return _sql(node, fields, params), params


def _sql(node: Node, fields: Mapping[str, type], params: list[Any]) -> str:
    if isinstance(node, (And, Or)):
        if not node.parts:
            return "1"
        glue = " AND " if isinstance(node, And) else " OR "
        return "(" + glue.join(_sql(p, fields, params) for p in node.parts) + ")"
    assert isinstance(node, Cond)
    if node.metadata:
        return _meta_sql(node, params)
    col = column(node.key) if node.key in fields else node.key  # text, media, modality
    op = {"$eq": "=", "$ne": "<>", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}
    if node.op == "$in":
        params.extend(node.value)
        return f"{col} IN ({', '.join('?' * len(node.value))})"
    params.append(node.value)
    return f"{col} {op[node.op]} ?"  # NULL (missing) compares to NULL: no match, $ne included


def _meta_sql(node: Cond, params: list[Any]) -> str:
    params.append(node.key)
    head = "EXISTS (SELECT 1 FROM json_each(metadata) WHERE key = ? AND "
    if node.op == "$in":
        alts = []
        for v in node.value:
            alts.append(f"(type IN {_JSON_TYPES[kind_of(v)]} AND value = ?)")  # type: ignore[index]
            params.append(v)
        return head + "(" + " OR ".join(alts) + "))"
    kind = kind_of(node.value)
    params.append(node.value)
    if node.op == "$eq":
        return head + f"type IN {_JSON_TYPES[kind]} AND value = ?)"  # type: ignore[index]
    if node.op == "$ne":  # any present scalar that is not this value (of this kind)
        return head + f"type IN {_SCALAR_JSON} AND NOT (type IN {_JSON_TYPES[kind]} AND value = ?))"  # type: ignore
    op = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}[node.op]
    return head + f"type IN ('integer','real') AND value {op} ?)"

"""The SQL a :class:`~connectors.pgvector.store.PgVectorStore` runs, built from its
:class:`~connectors.pgvector.schema.Layout` and :class:`~connectors.pgvector.schema.StoragePlan`.

Pure functions returning ``psycopg.sql`` compositions (and, for a search, its bound values);
nothing here touches a connection. Identifiers are quoted with ``sql.Identifier`` and every
value is a placeholder, except a raw ``where=`` condition, which is the caller's trusted SQL.
In every statement the table is ``t`` and, in side-table mode, the side table ``e``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from embedder.errors import InputError

from ..filters import Node
from .schema import Layout, StoragePlan, derived_name
from .wire import Binder, compile_filter, escape_where, sql_module


def source(lay: Layout) -> tuple[Any, Any]:
    """The FROM clause (the table as ``t``, joined to a side table as ``e``) and the embedding column."""
    sql = sql_module()
    if lay.mode != "side_table":
        return sql.SQL("{} t").format(lay.table.ident), sql.SQL("t.{}").format(sql.Identifier(lay.embedding_column))
    return (sql.SQL("{} t JOIN {} e USING ({})").format(lay.table.ident, lay.embedding_table.ident,
                                                        sql.Identifier(lay.key)),
            sql.SQL("e.{}").format(sql.Identifier(lay.embedding_column)))


def has_embedding(lay: Layout, prefix: str) -> Any:
    """`` AND/WHERE <embedding> IS NOT NULL`` in column mode (where a row may have none), else nothing."""
    sql = sql_module()
    if lay.mode != "column":
        return sql.SQL("")
    return sql.SQL(" {} {} IS NOT NULL").format(sql.SQL(prefix), sql.Identifier(lay.embedding_column))


# ---------------------------------------------------------------------------- schema
def index_name(lay: Layout, plan: StoragePlan) -> str:
    return derived_name(f"{lay.embedding_table.name}_{lay.embedding_column}_{plan.storage}_idx")


def create_index(lay: Layout, plan: StoragePlan) -> Any:
    sql = sql_module()
    return sql.SQL(
        "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw ({} {}) WITH (m = {}, ef_construction = {})").format(
        sql.Identifier(index_name(lay, plan)), lay.embedding_table.ident,
        plan.index_expression(sql.Identifier(lay.embedding_column)), sql.SQL(plan.opclass), sql.Literal(plan.m),
        sql.Literal(plan.ef_construction))


def create_table(lay: Layout, plan: StoragePlan, declared: list[tuple[str, str]]) -> Any:
    """A store's own table: ``id``, the content columns, ``metadata``, the declared fields, ``embedding``."""
    sql = sql_module()
    fields = sql.SQL("").join(sql.SQL("{} {}, ").format(sql.Identifier(n), sql.SQL(t)) for n, t in declared)
    return sql.SQL(
        "CREATE TABLE {} (id text PRIMARY KEY, text text, media text, modality text NOT NULL, "
        "metadata jsonb NOT NULL DEFAULT '{{}}'::jsonb, {}embedding {} NOT NULL)").format(
        lay.table.ident, fields, sql.SQL(plan.column_sql))


def add_storage(lay: Layout, plan: StoragePlan) -> Any:
    """An attached table's embedding column, or its side table (idempotent)."""
    sql = sql_module()
    if lay.mode == "column":
        return sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
            lay.table.ident, sql.Identifier(lay.embedding_column), sql.SQL(plan.column_sql))
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS {side} ({key} {ktype} PRIMARY KEY REFERENCES {table} ({key}) "
        "ON DELETE CASCADE ON UPDATE CASCADE, {emb} {etype} NOT NULL, "
        "embedded_at timestamptz NOT NULL DEFAULT now())").format(
        side=lay.embedding_table.ident, key=sql.Identifier(lay.key), ktype=sql.SQL(lay.key_type),
        table=lay.table.ident, emb=sql.Identifier(lay.embedding_column), etype=sql.SQL(plan.column_sql))


def comment_config(lay: Layout, config: str) -> Any:
    """Record the store's configuration (JSON) in the embedding column's comment."""
    sql = sql_module()
    return sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(
        lay.embedding_table.ident, sql.Identifier(lay.embedding_column), sql.Literal(config))


def drop_storage(lay: Layout) -> Any:
    """A store's own table, or an attached table's embedding column or side table (never its rows)."""
    sql = sql_module()
    if lay.mode == "column":
        return sql.SQL("ALTER TABLE {} DROP COLUMN IF EXISTS {}").format(lay.table.ident,
                                                                          sql.Identifier(lay.embedding_column))
    return sql.SQL("DROP TABLE IF EXISTS {}").format(lay.embedding_table.ident)


# ---------------------------------------------------------------------------- writing
def merge(lay: Layout, plan: StoragePlan, stage: Any, names: list[str]) -> Any:
    """Rows of the staging table ``stage`` (columns ``names``) into the store: an upsert into a
    store's own table; for an attached table, the embeddings of rows that exist, returning their keys."""
    sql = sql_module()
    value = sql.SQL("s.embedding")
    if plan.column_type == "halfvec":
        value = sql.SQL("s.embedding::{}").format(sql.SQL(plan.column_sql))
    if lay.mode == "table":
        select = [sql.SQL("s.{}").format(sql.Identifier(n)) for n in names[:-1]] + [value]
        return sql.SQL("INSERT INTO {t} ({cols}) SELECT {sel} FROM {s} s ON CONFLICT (id) DO UPDATE SET {upd}").format(
            t=lay.table.ident, cols=sql.SQL(", ").join(map(sql.Identifier, names)), sel=sql.SQL(", ").join(select),
            s=stage, upd=sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n))
                                            for n in names[1:]))
    key = sql.Identifier(lay.key)
    key_value = sql.SQL("CAST(s.key AS {})").format(sql.SQL(lay.key_type))
    if lay.mode == "column":
        return sql.SQL("UPDATE {t} SET {emb} = {val} FROM {s} s WHERE {t}.{key} = {kv} RETURNING {t}.{key}::text").format(
            t=lay.table.ident, emb=sql.Identifier(lay.embedding_column), val=value, s=stage, key=key, kv=key_value)
    return sql.SQL(
        "INSERT INTO {side} ({key}, {emb}) SELECT {kv}, {val} FROM {s} s "
        "WHERE EXISTS (SELECT 1 FROM {t} WHERE {t}.{key} = {kv}) "
        "ON CONFLICT ({key}) DO UPDATE SET {emb} = EXCLUDED.{emb}, embedded_at = now() "
        "RETURNING {key}::text").format(side=lay.embedding_table.ident, key=key,
                                        emb=sql.Identifier(lay.embedding_column), kv=key_value, val=value, s=stage,
                                        t=lay.table.ident)


# ---------------------------------------------------------------------------- reading
def existing(lay: Layout) -> Any:
    """Which of the keys in ``%s`` (a text array) have an embedding, as text."""
    sql = sql_module()
    return sql.SQL("SELECT {}::text FROM {} WHERE {} = ANY(CAST(%s AS {}[])){}").format(
        sql.Identifier(lay.key), lay.embedding_table.ident, sql.Identifier(lay.key), sql.SQL(lay.key_type),
        has_embedding(lay, "AND"))


def delete(lay: Layout) -> Any:
    """Remove the embeddings of the keys in ``%s`` (a store's own table: the rows)."""
    sql = sql_module()
    keys = sql.SQL("CAST(%s AS {}[])").format(sql.SQL(lay.key_type))
    if lay.mode == "column":
        return sql.SQL("UPDATE {} SET {} = NULL WHERE {} = ANY({})").format(
            lay.table.ident, sql.Identifier(lay.embedding_column), sql.Identifier(lay.key), keys)
    return sql.SQL("DELETE FROM {} WHERE {} = ANY({})").format(lay.embedding_table.ident, sql.Identifier(lay.key),
                                                               keys)


def count(lay: Layout) -> Any:
    sql = sql_module()
    return sql.SQL("SELECT count(*) FROM {}{}").format(lay.embedding_table.ident, has_embedding(lay, "WHERE"))


def page(lay: Layout, *, after: bool) -> Any:
    """One page of rows with an embedding, by key: ``_qvl_key`` (the key as text), the hit
    columns, ``_qvl_vector``; keys above ``%(cursor)s`` (cast back to the key's type) with
    ``after``, at most ``%(n)s`` rows."""
    sql = sql_module()
    src, emb = source(lay)
    key = sql.SQL("t.{}").format(sql.Identifier(lay.key))
    cond = [sql.SQL("{} IS NOT NULL").format(emb)] if lay.mode == "column" else []
    if after:
        cond.append(sql.SQL("{} > CAST(%(cursor)s AS {})").format(key, sql.SQL(lay.key_type)))
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(cond) if cond else sql.SQL("")
    cols = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in lay.columns)
    return sql.SQL("SELECT {k}::text AS _qvl_key, {cols}, {emb}::vector AS _qvl_vector FROM {src}{where} "
                   "ORDER BY {k} LIMIT %(n)s").format(k=key, cols=cols, emb=emb, src=src, where=where)


def missing(lay: Layout, *, count: bool = False, after: bool = False) -> Any:
    """An attached table's rows without an embedding: their count, or a page (key and content
    columns) of at most ``%(page)s`` rows, keys above ``%(last)s`` with ``after``."""
    sql = sql_module()
    key = sql.Identifier(lay.key)
    if lay.mode == "column":
        cond = sql.SQL("t.{} IS NULL").format(sql.Identifier(lay.embedding_column))
    else:
        cond = sql.SQL("NOT EXISTS (SELECT 1 FROM {} e WHERE e.{k} = t.{k})").format(lay.embedding_table.ident, k=key)
    if count:
        return sql.SQL("SELECT count(*) FROM {} t WHERE {}").format(lay.table.ident, cond)
    if after:
        cond = cond + sql.SQL(" AND t.{} > CAST(%(last)s AS {})").format(key, sql.SQL(lay.key_type))
    cols = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in lay.content_columns.values())
    return sql.SQL("SELECT t.{k}, {cols} FROM {t} t WHERE {cond} ORDER BY t.{k} LIMIT %(page)s").format(
        k=key, cols=cols, t=lay.table.ident, cond=cond)


def search(lay: Layout, plan: StoragePlan, vec: np.ndarray, n: int, flt: Node | str | None, params: Any, *,
           rescore_factor: int) -> tuple[Any, Any]:
    """The ``n`` nearest rows (the hit columns and ``_qvl_distance``) and the values to bind.

    ``flt`` is a checked portable filter (compiled here, its values bound) or a raw SQL
    condition with ``params``. A re-scored plan takes a shortlist of ``rescore_factor * n``
    (at least 100) rows by the index expression and orders it by the exact distance.
    """
    sql = sql_module()
    if params is not None and not isinstance(flt, str):
        raise InputError("params= binds the placeholders of an SQL where= condition; a dict filter binds its "
                         "own values")
    bind = Binder(params)
    src, emb = source(lay)
    cols = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) if c != lay.key or lay.mode != "side_table"
                              else sql.Identifier(c) for c in lay.columns)

    def conditions() -> Any:  # called where the statement's placeholders put its values in order
        parts = [sql.SQL("{} IS NOT NULL").format(emb)] if lay.mode == "column" else []
        if isinstance(flt, str):
            parts.append(sql.SQL("({})").format(sql.SQL(escape_where(flt, placeholders=params is not None))))
            bind.add_user(params)
        elif flt is not None:
            parts.append(compile_filter(flt, bind, metadata=not lay.attached))
        return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(parts) if parts else sql.SQL("")

    if not plan.rescore:
        head = sql.SQL("WITH r AS MATERIALIZED (SELECT {cols}, {emb} <=> {q} AS _qvl_distance FROM {src}").format(
            cols=cols, emb=emb, q=plan.exact_query(bind("q", vec)), src=src)
        cond = conditions()
        tail = sql.SQL(" ORDER BY _qvl_distance LIMIT {}) SELECT * FROM r ORDER BY _qvl_distance").format(bind("n", n))
        return head + cond + tail, bind.values
    head = sql.SQL("WITH s AS MATERIALIZED (SELECT {cols}, {emb} AS _qvl_embedding FROM {src}").format(
        cols=cols, emb=emb, src=src)
    cond = conditions()
    tail = sql.SQL(" ORDER BY {} {} {} LIMIT {}) SELECT {}, _qvl_embedding <=> {} AS _qvl_distance FROM s "
                   "ORDER BY _qvl_distance LIMIT {}").format(
        plan.index_expression(emb), sql.SQL(plan.index_operator), plan.query_expression(bind("q", vec)),
        bind("m", max(n * rescore_factor, 100)), sql.SQL(", ").join(sql.Identifier(c) for c in lay.columns),
        plan.exact_query(bind("q", vec)), bind("n", n))
    return head + cond + tail, bind.values

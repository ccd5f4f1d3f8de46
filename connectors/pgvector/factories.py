"""Opening a :class:`~connectors.pgvector.store.PgVectorStore`: :func:`open_store` over a table
the store owns (or one already attached), :func:`attach` over a table of yours.

:func:`open_store` lives here, next to :func:`attach`, because a table that :func:`attach`
gave embeddings is opened the way ``attach(create=False)`` opens it.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

from embedder.contracts import EmbedderLike
from embedder.errors import InputError, NotFoundError, SchemaMismatchError

from ..base import embedder_fingerprint
from .schema import (MODES, NATIVE_COLUMNS, ColumnInfo, Layout, TableName, primary_key_of, read_config,
                     resolve_plan, resolve_table, table_columns, validate_identifier)
from .store import PgVectorStore
from .wire import connect_pg, psycopg_module, translate_error

log = logging.getLogger(__name__)


def open_store(target: Any, *, table: str | None = None, collection: str | None = None,
               embedder: EmbedderLike | None = None,
               dim: int | None = None, storage: str = "auto", index_dim: int | None = None, m: int = 16,
               ef_construction: int = 64, rescore_factor: int = 4, connect_timeout: float = 10.0,
               allow_mismatch: bool = False, quantization: str | None = None) -> PgVectorStore:
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
        allow_mismatch: open a table whose vectors were made another way than ``embedder``
            makes them (see :meth:`~connectors.base.BaseStore.check_fingerprint`).
        quantization: ``float32`` (``vector``, or ``subvector`` above 2000 dims), ``float16``
            (``halfvec``, up to 4000 dims) or ``binary`` (``binary``: a ``bit`` index, re-scored
            exactly): a storage by its option name (see :func:`~connectors.pgvector.schema.storage_for`);
            ``int8`` is refused at ``create`` (pgvector has no int8 type). Default: the table's.

    Raises:
        UnavailableError, ConnectorError, InputError, SchemaMismatchError (existing table with a
        different dim, storage, quantization or embedding fingerprint), NotFoundError (a table of
        yours that was never attached).

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
        config = read_config(cols["embedding"].comment) if "embedding" in cols else None
        attached = _attached_embedding(conn, resolved, cols) if cols and (config or {}).get("mode") != "table" \
            else None
        if attached is not None:  # a table of yours, attached with attach() / qvl pg sync: searchable as it is
            found_mode, column, side = attached
            return _attach_on(conn, owned, resolved, side or resolved.sibling(f"{resolved.name}_embeddings"),
                              mode=found_mode, embedding_column=column, embedder=embedder, dim=dim, storage=storage,
                              index_dim=index_dim, m=m, ef_construction=ef_construction,
                              rescore_factor=rescore_factor, create=False, allow_mismatch=allow_mismatch,
                              quantization=quantization)
        plan = resolve_plan(str(name), config, cols.get("embedding"), dim=dim, storage=storage, index_dim=index_dim,
                             embedder=embedder, m=m, ef_construction=ef_construction, quantization=quantization)
        layout = Layout(mode="table", table=name, key="id", key_type="text", embedding_table=name,
                        columns=NATIVE_COLUMNS)
        return PgVectorStore(conn, layout=layout, plan=plan, embedder=embedder, owned=owned,
                             rescore_factor=rescore_factor, allow_mismatch=allow_mismatch, quantization=quantization)
    except BaseException:
        if owned:
            conn.close()
        raise


def attach(conn_or_url: Any, *, table: str, primary_key: str | None = None, text_column: str | None = None,
           image_column: str | None = None, video_column: str | None = None, embedder: EmbedderLike | None = None,
           dim: int | None = None, mode: str | None = None, storage: str = "auto", index_dim: int | None = None,
           embedding_column: str = "embedding", side_table: str | None = None, backfill: bool = True,
           batch_size: int = 64, show_progress: bool = False, m: int = 16, ef_construction: int = 64,
           rescore_factor: int = 4, create: bool = True, allow_mismatch: bool = False,
           quantization: str | None = None) -> PgVectorStore:
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
        embedder, dim, storage, index_dim, quantization: as for :func:`open_store`.
        backfill: embed the rows that have none now (ignored with ``create=False``).
        create: add the embedding storage and index when missing (default); False opens
            existing storage read-only, as described above.
        allow_mismatch: as for :func:`open_store` (new storage records the embedder's fingerprint).

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
                          note=note, allow_mismatch=allow_mismatch, quantization=quantization)
    except BaseException:
        if owned:
            conn.close()
        raise


def _attached_embedding(conn: Any, table: TableName, cols: Mapping[str, ColumnInfo]
                        ) -> tuple[str, str, TableName | None] | None:
    """``(mode, embedding column, side table or None)`` of a table that :func:`attach` gave
    embeddings (read from the configuration it leaves in the column's comment), else None."""
    for col in cols.values():
        if (read_config(col.comment) or {}).get("mode") == "column":
            return "column", col.name, None
    side = table.sibling(f"{table.name}_embeddings")
    for col in table_columns(conn, side):
        if (read_config(col.comment) or {}).get("mode") == "side_table":
            return "side_table", col.name, side
    return None


def _attach_on(conn: Any, owned: bool, name: TableName, side_name: TableName, *, primary_key: str | None = None,
               text_column: str | None = None, image_column: str | None = None, video_column: str | None = None,
               embedder: EmbedderLike | None = None, dim: int | None = None, mode: str | None = None,
               storage: str = "auto",
               index_dim: int | None = None, embedding_column: str = "embedding", backfill: bool = False,
               batch_size: int = 64, show_progress: bool = False, m: int = 16, ef_construction: int = 64,
               rescore_factor: int = 4, create: bool = True, note: str | None = None,
               allow_mismatch: bool = False, quantization: str | None = None) -> PgVectorStore:
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
        config = read_config(found.comment) if found else None
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
        plan = resolve_plan(str(name), config or None, found, dim=dim, storage=storage, index_dim=index_dim,
                             embedder=embedder, m=m, ef_construction=ef_construction, quantization=quantization)
        layout = Layout(mode=mode, table=name, key=primary_key, key_type=cols[primary_key].type,
                        embedding_table=name if mode == "column" else side_name, embedding_column=embedding_column,
                        text_column=text_column, image_column=image_column, video_column=video_column,
                        columns=tuple(c for c in cols if not (mode == "column" and c == embedding_column)))
        store = PgVectorStore(conn, layout=layout, plan=plan, embedder=embedder, owned=owned,
                              rescore_factor=rescore_factor, allow_mismatch=allow_mismatch, quantization=quantization)
        store.name_note = note
        if not create:
            if found is not None and found.type != plan.column_sql:
                raise SchemaMismatchError(f"{layout.embedding_table}.{embedding_column} is {found.type}, "
                                          f"requested {plan.column_sql} (dim={plan.dim}, storage={plan.storage!r})")
            return store
        if found is None:
            store._check_quantization(store.quantization, plan.dim)
        try:
            store._ensure_attached_storage(fingerprint=embedder_fingerprint(embedder))
            store.open_existing()
            if backfill:
                report = store.backfill(batch_size=batch_size, show_progress=show_progress)
                if report.failed:
                    log.warning("attach %s: %d rows embedded, %d failed (see store.backfill_report.failed)", name,
                                len(report.written), len(report.failed))
            store._ensure_index()
        except psycopg_module().Error as exc:
            raise translate_error(exc, f"cannot attach to {name}") from exc
        return store
    except BaseException:
        if owned:
            conn.close()
        raise

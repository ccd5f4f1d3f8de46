"""The sync's objects in the database: queue, failed-rows table, trigger function and triggers.

:func:`install_sync`, :func:`uninstall_sync`, :func:`sync_grants`, :func:`sync_status`,
:func:`failed_rows` and :func:`retry_failed`; :mod:`connectors.pgvector.sync` describes the
design and runs the :class:`~connectors.pgvector.sync.Worker` that drains the queue (and
re-exports these names).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from embedder.errors import InputError

from .schema import SyncObjects, TableName, drop_sync_objects, sync_names, table_columns
from .store import PgVectorStore
from .wire import KEY_ARRAY_PREPARE, sql_module

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- objects
def sync_objects(store: PgVectorStore) -> SyncObjects:
    """The names :func:`install_sync` uses for ``store``'s table, in the table's schema
    (schema-qualified when the store's table is, as :func:`~connectors.pgvector.attach` makes it)."""
    return sync_names(store.layout.table)


def require_attached(store: PgVectorStore) -> None:
    if not store.layout.attached:
        raise InputError(f"sync needs a store from attach() (an existing table), got mode={store.layout.mode!r}")


def install_sync(store: PgVectorStore, *, enqueue_existing: bool = True) -> int:
    """Create the queue, failed-rows table and triggers (idempotent).

    Args:
        store: an attached store.
        enqueue_existing: also queue the rows that have no embedding yet (and are not queued or
            failed already), so the worker backfills them.

    Returns:
        The number of rows queued now.
    """
    require_attached(store)
    sql = sql_module()
    lay = store.layout
    obj = sync_objects(store)
    key = sql.Identifier(lay.key)
    watched = list(dict.fromkeys([*lay.content_columns.values(), lay.key]))
    old_row = sql.SQL(", ").join(sql.SQL("OLD.{}").format(sql.Identifier(c)) for c in watched)
    new_row = sql.SQL(", ").join(sql.SQL("NEW.{}").format(sql.Identifier(c)) for c in watched)
    conn = store.client
    with conn.transaction():
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {q} (qid bigserial PRIMARY KEY, row_key {kt} NOT NULL, "
            "queued_at timestamptz NOT NULL DEFAULT now(), attempts integer NOT NULL DEFAULT 0, last_error text, "
            "not_before timestamptz NOT NULL DEFAULT now())").format(q=obj.queue.ident, kt=sql.SQL(lay.key_type)))
        conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS claimed_by text, "
                             "ADD COLUMN IF NOT EXISTS claimed_at timestamptz").format(obj.queue.ident))
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (row_key)").format(
            sql.Identifier(obj.queue_index), obj.queue.ident))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {f} (row_key {kt} PRIMARY KEY, attempts integer NOT NULL, reason text NOT NULL, "
            "failed_at timestamptz NOT NULL DEFAULT now())").format(f=obj.failed.ident, kt=sql.SQL(lay.key_type)))
        # The function runs as its owner (who owns the queue) with a fixed search_path and
        # schema-qualified names: an application role with no rights on the queue, writing under
        # any search_path, queues its rows; nothing on its search_path can hijack the names.
        conn.execute(sql.SQL("""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $qvl$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM {f} WHERE row_key = OLD.{key};
        RETURN OLD;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF ROW({old}) IS NOT DISTINCT FROM ROW({new}) THEN
            RETURN NEW;
        END IF;
    END IF;
    INSERT INTO {q} (row_key) VALUES (NEW.{key});
    DELETE FROM {f} WHERE row_key = NEW.{key};
    RETURN NEW;
END
$qvl$""").format(fn=obj.function.ident, f=obj.failed.ident, q=obj.queue.ident, key=key, old=old_row, new=new_row))
        conn.execute(sql.SQL("REVOKE ALL ON FUNCTION {}() FROM PUBLIC").format(obj.function.ident))
        for trig in (obj.trigger_upsert, obj.trigger_delete):
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(trig), lay.table.ident))
        conn.execute(sql.SQL("CREATE TRIGGER {} AFTER INSERT OR UPDATE OF {} ON {} FOR EACH ROW EXECUTE FUNCTION {}()")
                     .format(sql.Identifier(obj.trigger_upsert), sql.SQL(", ").join(map(sql.Identifier, watched)),
                             lay.table.ident, obj.function.ident))
        conn.execute(sql.SQL("CREATE TRIGGER {} AFTER DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()").format(
            sql.Identifier(obj.trigger_delete), lay.table.ident, obj.function.ident))
        if not enqueue_existing:
            return 0
        missing = (sql.SQL("t.{} IS NULL").format(sql.Identifier(lay.embedding_column)) if lay.mode == "column" else
                   sql.SQL("NOT EXISTS (SELECT 1 FROM {} e WHERE e.{k} = t.{k})").format(lay.embedding_table.ident,
                                                                                        k=key))
        cur = conn.execute(sql.SQL(
            "INSERT INTO {q} (row_key) SELECT t.{k} FROM {t} t WHERE {missing} "
            "AND NOT EXISTS (SELECT 1 FROM {q} q WHERE q.row_key = t.{k}) "
            "AND NOT EXISTS (SELECT 1 FROM {f} f WHERE f.row_key = t.{k}) ORDER BY t.{k}").format(
            q=obj.queue.ident, k=key, t=lay.table.ident, missing=missing, f=obj.failed.ident))
        queued = cur.rowcount
    log.info("sync installed on %s: %d rows queued", lay.table, queued)
    return int(queued)


def sync_grants(store: PgVectorStore, role: str = "<worker_role>") -> list[str]:
    """The ``GRANT`` statements a separate worker role needs (``qvl pg worker`` as ``role``).

    Roles that only write to the table need nothing: the trigger function runs as its owner
    (``SECURITY DEFINER``, the role that ran :func:`install_sync`), which owns the queue.
    ``qvl pg status`` needs ``SELECT`` on the table, the queue and the failed table.
    """
    lay = store.layout
    obj = sync_objects(store)
    schema = TableName(lay.table.schema or "public")
    quoted = str  # as psql shows names: quoted only when they need it
    grants = [f"GRANT USAGE ON SCHEMA {schema} TO {role};",
              f"GRANT SELECT ON {quoted(lay.table)} TO {role};",
              f"GRANT SELECT, INSERT, UPDATE, DELETE ON {quoted(obj.queue)}, {quoted(obj.failed)} TO {role};"]
    if lay.mode == "column":
        grants.append(f"GRANT UPDATE ({TableName(lay.embedding_column)}) ON {quoted(lay.table)} TO {role};")
    else:
        grants.append(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {quoted(lay.embedding_table)} TO {role};")
    return grants


def uninstall_sync(store: PgVectorStore) -> None:
    """Drop the triggers, function, queue and failed-rows table (idempotent)."""
    require_attached(store)
    drop_sync_objects(store.client, store.layout.table)


# ---------------------------------------------------------------------------- status
@dataclass(frozen=True)
class SyncStatus:
    """Counts for an attached table: its rows, those with an embedding, distinct keys queued
    (``ready`` of them due now, ``in_progress`` of them claimed by a worker whose lease has
    not expired), and failed rows. ``installed`` tells whether the queue exists."""

    rows: int
    embedded: int
    queued: int
    ready: int
    failed: int
    installed: bool
    in_progress: int = 0


@dataclass(frozen=True)
class FailedRow:
    """A row that failed ``attempts`` times: its key (as text), the last reason, and when."""

    key: str
    attempts: int
    reason: str
    failed_at: Any


def sync_status(store: PgVectorStore) -> SyncStatus:
    """Counts of rows, embeddings, queue and failures (see :class:`SyncStatus`)."""
    require_attached(store)
    sql = sql_module()
    obj = sync_objects(store)
    conn = store.client
    rows = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(store.layout.table.ident)).fetchone()[0])
    installed = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (obj.queue.text,)).fetchone()[0]
    queued = ready = failed = in_progress = 0
    if installed:
        leased = sql.SQL("count(DISTINCT row_key) FILTER (WHERE claimed_by IS NOT NULL AND not_before > now())") \
            if has_lease_columns(store) else sql.SQL("0")
        queued, ready, in_progress = conn.execute(sql.SQL(
            "SELECT count(DISTINCT row_key), count(DISTINCT row_key) FILTER (WHERE not_before <= now()), {} FROM {}")
            .format(leased, obj.queue.ident)).fetchone()
        failed = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(obj.failed.ident)).fetchone()[0]
    return SyncStatus(rows=rows, embedded=store.count(), queued=int(queued), ready=int(ready), failed=int(failed),
                      installed=bool(installed), in_progress=int(in_progress))


def has_lease_columns(store: PgVectorStore) -> bool:
    """True when the queue has the lease columns (queues made before leases lack them until
    :func:`install_sync` runs again)."""
    names = {c.name for c in table_columns(store.client, sync_objects(store).queue)}
    return {"claimed_by", "claimed_at"} <= names


def failed_rows(store: PgVectorStore) -> list[FailedRow]:
    """The rows in the failed-rows table, oldest first."""
    require_attached(store)
    sql = sql_module()
    rows = store.client.execute(sql.SQL("SELECT row_key::text, attempts, reason, failed_at FROM {} ORDER BY failed_at")
                                .format(sync_objects(store).failed.ident)).fetchall()
    return [FailedRow(*r) for r in rows]


def retry_failed(store: PgVectorStore, keys: Sequence[Any] | None = None) -> int:
    """Move failed rows (all, or ``keys``) back to the queue with fresh attempts; returns how many."""
    require_attached(store)
    sql = sql_module()
    obj = sync_objects(store)
    cond = sql.SQL("")
    params: tuple = ()
    if keys is not None:
        cond = sql.SQL(" WHERE row_key = ANY(CAST(%s AS {}[]))").format(sql.SQL(store.layout.key_type))
        params = ([str(k) for k in keys],)
    with store.client.transaction():
        cur = store.client.execute(sql.SQL("WITH moved AS (DELETE FROM {f}{c} RETURNING row_key) "
                                           "INSERT INTO {q} (row_key) SELECT row_key FROM moved").format(
            f=obj.failed.ident, c=cond, q=obj.queue.ident), params, prepare=KEY_ARRAY_PREPARE)
        return int(cur.rowcount)


__all__ = ["install_sync", "uninstall_sync", "sync_grants", "sync_status", "failed_rows", "retry_failed",
           "sync_objects", "SyncStatus", "FailedRow"]

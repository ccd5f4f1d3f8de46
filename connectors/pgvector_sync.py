"""Keep an attached table's embeddings in sync: triggers queue changed rows, workers embed them.

For a store from :func:`connectors.pgvector.attach`, :func:`install_sync` creates, next to the
table ``t``:

* ``t_qvl_queue``: one row per change (``row_key``, ``attempts``, ``last_error``, ``not_before``);
* ``t_qvl_failed``: rows that failed ``max_attempts`` times, with the reason;
* a trigger function and two triggers: ``AFTER INSERT OR UPDATE OF <content columns, key>``
  queues the key when a watched column really changed; ``AFTER DELETE`` clears the row's
  failure record. The embedding of a deleted row goes with it (its column, or the side
  table's ``ON DELETE CASCADE``).

A :class:`Worker` takes a batch of queued rows with ``FOR UPDATE SKIP LOCKED`` (so several
workers share one queue) plus a per-row advisory lock (so two workers never embed the same row
at once), embeds them, writes the embeddings and removes the queue rows in one transaction.
Killing a worker mid-batch rolls that transaction back: nothing is lost (the queue rows stay)
and nothing is duplicated. A row whose embedding or write fails is retried later with
exponential back-off; after ``max_attempts`` it moves to the failed table with its reason, and
leaves it when the row changes again (or by :func:`retry_failed`).

Example::

    store = attach(url, table="products", text_column="title", image_column="photo",
                   embedder=emb, dim=1024, backfill=False)
    install_sync(store)                       # queues the rows without an embedding
    Worker(store, batch_size=32).run(once=True, show_progress=True)
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from embedder.errors import InputError

from .core import Row, embed_rows, normalize_row
from .pgvector import PgVectorStore, TableName, _sql, derived_name

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 3600.0


# ---------------------------------------------------------------------------- objects
@dataclass(frozen=True)
class SyncObjects:
    """Names of the sync objects of a table."""

    queue: TableName
    failed: TableName
    function: TableName
    trigger_upsert: str
    trigger_delete: str
    queue_index: str


def sync_objects(store: PgVectorStore) -> SyncObjects:
    """The names :func:`install_sync` uses for ``store``'s table."""
    t = store.layout.table
    return SyncObjects(queue=t.sibling(f"{t.name}_qvl_queue"), failed=t.sibling(f"{t.name}_qvl_failed"),
                       function=t.sibling(f"{t.name}_qvl_enqueue"), trigger_upsert=derived_name(f"{t.name}_qvl_upsert"),
                       trigger_delete=derived_name(f"{t.name}_qvl_delete"),
                       queue_index=derived_name(f"{t.name}_qvl_queue_key_idx"))


def _require_attached(store: PgVectorStore) -> None:
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
    _require_attached(store)
    sql = _sql()
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
        conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (row_key)").format(
            sql.Identifier(obj.queue_index), obj.queue.ident))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {f} (row_key {kt} PRIMARY KEY, attempts integer NOT NULL, reason text NOT NULL, "
            "failed_at timestamptz NOT NULL DEFAULT now())").format(f=obj.failed.ident, kt=sql.SQL(lay.key_type)))
        conn.execute(sql.SQL("""CREATE OR REPLACE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $qvl$
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


def uninstall_sync(store: PgVectorStore) -> None:
    """Drop the triggers, function, queue and failed-rows table (idempotent)."""
    _require_attached(store)
    sql = _sql()
    obj = sync_objects(store)
    conn = store.client
    with conn.transaction():
        if conn.execute("SELECT to_regclass(%s)", (store.layout.table.text,)).fetchone()[0] is not None:
            for trig in (obj.trigger_upsert, obj.trigger_delete):
                conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(trig),
                                                                               store.layout.table.ident))
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(obj.function.ident))
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}, {}").format(obj.queue.ident, obj.failed.ident))


# ---------------------------------------------------------------------------- status
@dataclass(frozen=True)
class SyncStatus:
    """Counts for an attached table: its rows, those with an embedding, distinct keys queued
    (``ready`` of them due now), and failed rows. ``installed`` tells whether triggers exist."""

    rows: int
    embedded: int
    queued: int
    ready: int
    failed: int
    installed: bool


@dataclass(frozen=True)
class FailedRow:
    """A row that failed ``attempts`` times: its key (as text), the last reason, and when."""

    key: str
    attempts: int
    reason: str
    failed_at: Any


def sync_status(store: PgVectorStore) -> SyncStatus:
    """Counts of rows, embeddings, queue and failures (see :class:`SyncStatus`)."""
    _require_attached(store)
    sql = _sql()
    obj = sync_objects(store)
    conn = store.client
    rows = int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(store.layout.table.ident)).fetchone()[0])
    installed = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (obj.queue.text,)).fetchone()[0]
    queued = ready = failed = 0
    if installed:
        queued, ready = conn.execute(sql.SQL(
            "SELECT count(DISTINCT row_key), count(DISTINCT row_key) FILTER (WHERE not_before <= now()) FROM {}")
            .format(obj.queue.ident)).fetchone()
        failed = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(obj.failed.ident)).fetchone()[0]
    return SyncStatus(rows=rows, embedded=store.count(), queued=int(queued), ready=int(ready), failed=int(failed),
                      installed=bool(installed))


def failed_rows(store: PgVectorStore) -> list[FailedRow]:
    """The rows in the failed-rows table, oldest first."""
    _require_attached(store)
    sql = _sql()
    rows = store.client.execute(sql.SQL("SELECT row_key::text, attempts, reason, failed_at FROM {} ORDER BY failed_at")
                                .format(sync_objects(store).failed.ident)).fetchall()
    return [FailedRow(*r) for r in rows]


def retry_failed(store: PgVectorStore, keys: Sequence[Any] | None = None) -> int:
    """Move failed rows (all, or ``keys``) back to the queue with fresh attempts; returns how many."""
    _require_attached(store)
    sql = _sql()
    obj = sync_objects(store)
    cond = sql.SQL("")
    params: tuple = ()
    if keys is not None:
        cond = sql.SQL(" WHERE row_key = ANY(CAST(%s AS {}[]))").format(sql.SQL(store.layout.key_type))
        params = ([str(k) for k in keys],)
    with store.client.transaction():
        cur = store.client.execute(sql.SQL("WITH moved AS (DELETE FROM {f}{c} RETURNING row_key) "
                                           "INSERT INTO {q} (row_key) SELECT row_key FROM moved").format(
            f=obj.failed.ident, c=cond, q=obj.queue.ident), params)
        return int(cur.rowcount)


# ---------------------------------------------------------------------------- worker
@dataclass(frozen=True)
class WorkerReport:
    """What a worker did.

    Attributes:
        batches: batches that claimed at least one queue row.
        embedded: keys whose embedding was written.
        cleared: keys whose row was deleted or has no content any more (embedding removed).
        retried: ``(key, reason)`` failures that will be retried.
        failed: ``(key, reason)`` rows moved to the failed-rows table.
        skipped: queued keys left for another worker that was embedding them.
    """

    batches: int = 0
    embedded: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    retried: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0

    @property
    def processed(self) -> int:
        return len(self.embedded) + len(self.cleared) + len(self.retried) + len(self.failed)

    def __add__(self, other: "WorkerReport") -> "WorkerReport":
        return WorkerReport(self.batches + other.batches, self.embedded + other.embedded,
                            self.cleared + other.cleared, self.retried + other.retried,
                            self.failed + other.failed, self.skipped + other.skipped)


class Worker:
    """Embeds queued rows of an attached table (see the module docstring).

    Args:
        store: an attached store with an embedder; the worker uses its connection, so give each
            concurrent worker its own store.
        batch_size: queue rows claimed per transaction.
        max_attempts: failures after which a row moves to the failed-rows table.
        retry_delay: seconds before the first retry; doubles per attempt (capped at an hour).

    Example:
        >>> Worker(store, batch_size=32, max_attempts=3).run(once=True)  # doctest: +SKIP
        WorkerReport(batches=4, embedded=[...], ...)
    """

    def __init__(self, store: PgVectorStore, *, batch_size: int = 32, max_attempts: int = 3,
                 retry_delay: float = 5.0) -> None:
        _require_attached(store)
        if store.embedder is None:
            raise InputError("the worker needs a store opened with an embedder")
        if batch_size < 1 or max_attempts < 1:
            raise InputError(f"batch_size and max_attempts must be >= 1, got {batch_size} and {max_attempts}")
        self.store = store
        self.batch_size = int(batch_size)
        self.max_attempts = int(max_attempts)
        self.retry_delay = float(retry_delay)
        self.objects = sync_objects(store)
        digest = hashlib.sha256(str(store.layout.table).encode()).digest()
        self._lock_class = int.from_bytes(digest[:4], "big", signed=True)

    def run_batch(self) -> WorkerReport:
        """Claim, embed and write one batch in one transaction; returns what it did."""
        sql = _sql()
        store, lay, obj = self.store, self.store.layout, self.objects
        conn = store.client
        with conn.transaction():
            claimed = conn.execute(sql.SQL(
                "SELECT qid, row_key, row_key::text, attempts FROM {} WHERE not_before <= now() ORDER BY qid LIMIT %s "
                "FOR UPDATE SKIP LOCKED").format(obj.queue.ident), (self.batch_size,)).fetchall()
            if not claimed:
                return WorkerReport()
            qids: dict[str, list[int]] = {}
            attempts: dict[str, int] = {}
            for qid, _native, key, att in claimed:
                qids.setdefault(key, []).append(qid)
                attempts[key] = max(attempts.get(key, 0), att)
            locked = [r[0] for r in conn.execute(
                "SELECT k FROM unnest(%s::text[]) AS k WHERE pg_try_advisory_xact_lock(%s, hashtext(k))",
                (list(qids), self._lock_class)).fetchall()]
            skipped = len(qids) - len(locked)
            content = self._content(locked)
            rows: list[Row] = []
            cleared: list[str] = []
            for key in locked:
                if key not in content:
                    cleared.append(key)
                    continue
                try:
                    rows.append(normalize_row(content[key], 0, dim=store.dim))
                except InputError:
                    cleared.append(key)  # no text or media any more: the row has nothing to embed
            embedded, failures = self._embed_write(rows)
            if cleared:
                store.delete(cleared)
            done = [q for key in embedded + cleared for q in qids[key]]
            if done:
                conn.execute(sql.SQL("DELETE FROM {} WHERE qid = ANY(%s)").format(obj.queue.ident), (done,))
            retried, failed = self._record_failures(failures, qids, attempts)
        return WorkerReport(batches=1, embedded=embedded, cleared=cleared, retried=retried, failed=failed,
                            skipped=skipped)

    def _content(self, keys: list[str]) -> dict[str, dict]:
        if not keys:
            return {}
        sql = _sql()
        lay = self.store.layout
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in lay.content_columns.values())
        recs = self.store.client.execute(sql.SQL("SELECT {k}::text, {cols} FROM {t} WHERE {k} = ANY(CAST(%s AS {kt}[]))")
                                         .format(k=sql.Identifier(lay.key), cols=cols, t=lay.table.ident,
                                                 kt=sql.SQL(lay.key_type)), (keys,)).fetchall()
        return {r[0]: self.store.content_row(r[0], r[1:]) for r in recs}

    def _embed_write(self, rows: list[Row]) -> tuple[list[str], list[tuple[str, str]]]:
        if not rows:
            return [], []
        store = self.store
        try:
            good, vecs, failures = embed_rows(store.embedder, rows, store.dim)
        except Exception as exc:  # noqa: BLE001 - isolate the row that breaks the batch
            log.warning("batch embedding failed (%s); embedding %d rows one by one", exc, len(rows))
            good, vec_list, failures = [], [], []
            for row in rows:
                try:
                    g, v, f = embed_rows(store.embedder, [row], store.dim)
                except Exception as exc1:  # noqa: BLE001
                    failures.append((row.id, f"{type(exc1).__name__}: {exc1}"))
                    continue
                good += g
                vec_list += list(v)
                failures += f
            import numpy as np

            vecs = np.asarray(vec_list, dtype=np.float32).reshape(len(good), store.dim)
        failures = list(failures) + store.write_vectors(good, vecs)
        bad = {k for k, _ in failures}
        return [r.id for r in good if r.id not in bad], failures

    def _record_failures(self, failures: list[tuple[str, str]], qids: dict[str, list[int]],
                         attempts: dict[str, int]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        sql = _sql()
        conn, obj = self.store.client, self.objects
        retried, failed = [], []
        for key, reason in failures:
            n = attempts[key] + 1
            if n >= self.max_attempts:
                conn.execute(sql.SQL(
                    "INSERT INTO {f} (row_key, attempts, reason) VALUES (CAST(%s AS {kt}), %s, %s) "
                    "ON CONFLICT (row_key) DO UPDATE SET attempts = EXCLUDED.attempts, reason = EXCLUDED.reason, "
                    "failed_at = now()").format(f=obj.failed.ident, kt=sql.SQL(self.store.layout.key_type)),
                    (key, n, reason))
                conn.execute(sql.SQL("DELETE FROM {} WHERE qid = ANY(%s)").format(obj.queue.ident), (qids[key],))
                failed.append((key, reason))
                log.warning("row %s failed %d times, moved to %s: %s", key, n, obj.failed, reason)
            else:
                delay = min(MAX_RETRY_DELAY, self.retry_delay * 2 ** (n - 1))
                conn.execute(sql.SQL(
                    "UPDATE {} SET attempts = %s, last_error = %s, not_before = now() + make_interval(secs => %s) "
                    "WHERE qid = ANY(%s)").format(obj.queue.ident), (n, reason, delay, qids[key]))
                retried.append((key, reason))
        return retried, failed

    def run(self, *, once: bool = False, poll_interval: float = 1.0, stop: threading.Event | None = None,
            show_progress: bool = False, max_batches: int | None = None) -> WorkerReport:
        """Process batches until stopped (``stop`` set, ``max_batches`` done), or with
        ``once=True`` until no queued row is ready. Returns the summed :class:`WorkerReport`."""
        from tqdm.auto import tqdm

        total = sync_status(self.store).ready if show_progress else None
        report = WorkerReport()
        with tqdm(total=total, unit="row", disable=not show_progress, desc=f"sync {self.store.layout.table}") as bar:
            while not (stop is not None and stop.is_set()):
                batch = self.run_batch()
                report = report + batch
                bar.update(batch.processed)
                if max_batches is not None and report.batches >= max_batches:
                    break
                if batch.processed == 0:
                    if once:
                        break
                    if stop is not None:
                        stop.wait(poll_interval)
                    else:
                        time.sleep(poll_interval)
        return report


__all__ = ["install_sync", "uninstall_sync", "sync_status", "failed_rows", "retry_failed", "sync_objects",
           "SyncObjects", "SyncStatus", "FailedRow", "Worker", "WorkerReport"]

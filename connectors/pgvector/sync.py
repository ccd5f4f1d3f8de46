"""Keep an attached table's embeddings in sync: triggers queue changed rows, workers embed them.

For a store from :func:`connectors.pgvector.attach`, :func:`install_sync` creates, next to the
table ``t``:

* ``t_qvl_queue``: one row per change (``row_key``, ``attempts``, ``last_error``, ``not_before``,
  and ``claimed_by``/``claimed_at`` while a worker holds it);
* ``t_qvl_failed``: rows that failed ``max_attempts`` times, with the reason;
* a trigger function and two triggers: ``AFTER INSERT OR UPDATE OF <content columns, key>``
  queues the key when a watched column really changed; ``AFTER DELETE`` clears the row's
  failure record. The function is ``SECURITY DEFINER`` with ``SET search_path = pg_catalog,
  pg_temp`` and schema-qualified names: the application's roles need no rights on the queue
  and may write under any search_path (:func:`sync_grants` lists what a worker role needs). The embedding of a deleted row goes with it (its column, or the side
  table's ``ON DELETE CASCADE``).

A :class:`Worker` claims a batch of queued rows in a short transaction of its own and commits
the claim before embedding: ``FOR UPDATE SKIP LOCKED`` (so several workers share one queue)
picks the rows, a session advisory lock per key keeps two workers from embedding the same row
at once, and the claim counts the attempt and sets a lease (``not_before = now() + lease``, so
other workers leave the rows alone meanwhile). The worker then embeds the batch and, in a
second transaction, writes the embeddings and removes the queue rows.

* A row whose embedding or write fails (an exception) is retried later with exponential
  back-off; after ``max_attempts`` it moves to the failed table with its reason.
* A worker that dies mid-batch (killed, out of memory, a segfault in a decoder) rolls back its
  write: nothing is half-written, nothing is lost (the queue rows stay), nothing is
  duplicated (writes are idempotent upserts). The attempt is already counted, and when the
  lease expires the rows are claimed again, one at a time (a retried row is always claimed
  alone, so the innocent rows of a crashed batch land on their next attempt and the row that
  kills workers is isolated). A row claimed ``max_attempts`` times whose lease expired goes
  to the failed table ("the worker ... never finished"), instead of killing workers forever.

An embedder outage (a transient error, :func:`is_transient`) is nobody's row's fault: the
batch goes back to the queue with its attempt taken back, :meth:`Worker.run` backs off
(bounded, exponential) and resumes with batches of normal size.

A failed row leaves the failed table when it changes again (or by :func:`retry_failed`).
The lease must exceed the time to embed and write one batch; a worker outliving its lease is
still safe (its advisory locks keep others off its rows), it only delays their recovery.

Example::

    store = attach(url, table="products", text_column="title", image_column="photo",
                   embedder=emb, dim=1024, backfill=False)
    install_sync(store)                       # queues the rows without an embedding
    Worker(store, batch_size=32).run(once=True, show_progress=True)
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from embedder.errors import InputError, SchemaMismatchError, UnavailableError

from ..core import Row, is_transient, normalize_row
from ..pipeline import embed_rows
from .schema import SyncObjects
from .store import PgVectorStore
from .triggers import (FailedRow, SyncStatus, failed_rows, has_lease_columns, install_sync, require_attached,
                       retry_failed, sync_grants, sync_objects, sync_status, uninstall_sync)
from .wire import KEY_ARRAY_PREPARE, sql_module

log = logging.getLogger(__name__)

MAX_RETRY_DELAY = 3600.0


class EmbedderOutage(Exception):
    """Internal: the embedder is unavailable; the claimed batch goes back without an attempt."""


# ---------------------------------------------------------------------------- worker
@dataclass(frozen=True)
class WorkerReport:
    """What a worker did.

    Attributes:
        batches: batches that claimed at least one queue row.
        embedded: keys whose embedding was written.
        cleared: keys whose row was deleted or has no content any more (embedding removed).
        retried: ``(key, reason)`` failures that will be retried.
        failed: ``(key, reason)`` rows moved to the failed-rows table (including rows whose
            worker died ``max_attempts`` times while embedding them).
        skipped: queued keys left for another worker that was embedding them.
        recovered: keys claimed again after the worker holding them died (lease expired).
        outages: batches given back because the embedder was unavailable (a transient error:
            see :func:`is_transient`); their rows' attempts were not counted.
    """

    batches: int = 0
    embedded: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    retried: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: int = 0
    recovered: list[str] = field(default_factory=list)
    outages: int = 0

    @property
    def processed(self) -> int:
        return len(self.embedded) + len(self.cleared) + len(self.retried) + len(self.failed)

    def __add__(self, other: "WorkerReport") -> "WorkerReport":
        return WorkerReport(self.batches + other.batches, self.embedded + other.embedded,
                            self.cleared + other.cleared, self.retried + other.retried,
                            self.failed + other.failed, self.skipped + other.skipped,
                            self.recovered + other.recovered, self.outages + other.outages)


@dataclass(frozen=True)
class _QueueEntry:
    qid: int
    key: str
    attempts: int
    last_error: str | None
    claimed_by: str | None
    claimed_at: Any


@dataclass(frozen=True)
class _Claim:
    """Keys claimed by one batch (locked and leased, attempt counted), with their queue rows."""

    qids: dict[str, list[int]]
    attempts: dict[str, int]
    recovered: list[str]
    failed: list[tuple[str, str]]
    skipped: int

    @property
    def keys(self) -> list[str]:
        return list(self.qids)


class Worker:
    """Embeds queued rows of an attached table (see the module docstring).

    Args:
        store: an attached store with an embedder; the worker uses its connection, so give each
            concurrent worker its own store.
        batch_size: queue rows claimed per batch (a retried row is claimed alone).
        max_attempts: attempts (claims) after which a row that keeps failing, or keeps killing
            its worker, moves to the failed-rows table. With 1, a worker crash sends every row
            of its batch there; the default 3 gives the innocent rows of a crashed batch a
            retry of their own.
        retry_delay: seconds before the first retry after an error; doubles per attempt
            (capped at an hour).
        lease: seconds a claim lasts; a batch whose worker died is claimed again after it.
            It must exceed the time to embed and write one batch.
        outage_delay, max_outage_delay: when the embedder is unavailable (a transient error,
            see :func:`is_transient`), the batch goes back to the queue with its attempts
            uncounted and :meth:`run` waits ``outage_delay`` seconds, doubling per failed try
            up to ``max_outage_delay``, then resumes with batches of normal size.

    Before it writes its first batch, the worker checks that the embedder makes vectors like
    the ones the table recorded (:meth:`~connectors.base.BaseStore.check_fingerprint`), once
    the embedder answers: a store opened without the embedder, which is then given one
    (``store.embedder = emb``, as ``qvl pg worker`` does), can start while a ``qvl serve`` is
    down. A mismatch raises :class:`SchemaMismatchError` with nothing written.

    Raises:
        InputError: no embedder, or a bad number.
        SchemaMismatchError: the queue was made by an older version (run :func:`install_sync`
            again, it adds the lease columns).

    Example:
        >>> Worker(store, batch_size=32, max_attempts=3).run(once=True)  # doctest: +SKIP
        WorkerReport(batches=4, embedded=[...], ...)
    """

    def __init__(self, store: PgVectorStore, *, batch_size: int = 32, max_attempts: int = 3,
                 retry_delay: float = 5.0, lease: float = 600.0, outage_delay: float = 1.0,
                 max_outage_delay: float = 60.0) -> None:
        require_attached(store)
        if store.embedder is None:
            raise InputError("the worker needs a store opened with an embedder")
        if batch_size < 1 or max_attempts < 1:
            raise InputError(f"batch_size and max_attempts must be >= 1, got {batch_size} and {max_attempts}")
        if not lease > 0 or retry_delay < 0:
            raise InputError(f"lease must be > 0 and retry_delay >= 0 seconds, got lease={lease!r}, "
                             f"retry_delay={retry_delay!r}")
        self.store = store
        self.batch_size = int(batch_size)
        self.max_attempts = int(max_attempts)
        self.retry_delay = float(retry_delay)
        self.lease = float(lease)
        if not 0 < outage_delay <= max_outage_delay:
            raise InputError(f"outage_delay must be > 0 and at most max_outage_delay, got {outage_delay!r} and "
                             f"{max_outage_delay!r}")
        self.outage_delay = float(outage_delay)
        self.max_outage_delay = float(max_outage_delay)
        self.objects = sync_objects(store)
        if not has_lease_columns(store):
            raise SchemaMismatchError(f"the queue {self.objects.queue} has no lease columns (made by an older "
                                      "version, or sync is not installed): run install_sync (qvl pg sync) again")
        digest = hashlib.sha256(str(store.layout.table).encode()).digest()
        self._lock_class = int.from_bytes(digest[:4], "big", signed=True)
        self.name = f"{socket.gethostname()}:{os.getpid()}:pg{store.client.info.backend_pid}"
        self._fingerprint_checked = False

    # ------------------------------------------------------------------ one batch
    def run_batch(self) -> WorkerReport:
        """Claim (committed), embed, then write one batch; returns what it did.

        If the write cannot happen (the connection is lost, say), the exception propagates and
        the claimed rows come back when their lease expires, with this attempt counted.
        """
        claim = self._claim()
        if not claim.qids:
            return WorkerReport(batches=int(bool(claim.failed)), failed=claim.failed, skipped=claim.skipped)
        try:
            embedded, cleared, retried, failed = self._process(claim)
        except EmbedderOutage as outage:
            self._give_back(claim, str(outage), counted=False)
            return WorkerReport(failed=claim.failed, skipped=claim.skipped, outages=1)
        except Exception as exc:
            self._give_back(claim, f"{type(exc).__name__}: {exc}")
            raise
        finally:
            self._unlock(claim.keys)
        return WorkerReport(batches=1, embedded=embedded, cleared=cleared, retried=retried,
                            failed=claim.failed + failed, skipped=claim.skipped, recovered=claim.recovered)

    def _claim(self) -> _Claim:
        """In one committed transaction: fail rows out of attempts, pick a batch, lock it, lease it.

        Fresh rows (never attempted) are claimed together, up to ``batch_size``; a row already
        attempted (an error, or a worker that died holding it) is claimed alone.
        """
        sql = sql_module()
        conn, obj = self.store.client, self.objects
        with conn.transaction():
            recs = conn.execute(sql.SQL(
                "SELECT qid, row_key::text, attempts, last_error, claimed_by, claimed_at FROM {} "
                "WHERE not_before <= now() ORDER BY qid LIMIT %s FOR UPDATE SKIP LOCKED").format(obj.queue.ident),
                (self.batch_size,)).fetchall()
            by_key: dict[str, list[_QueueEntry]] = {}
            for rec in recs:
                entry = _QueueEntry(*rec)
                by_key.setdefault(entry.key, []).append(entry)
            exhausted: dict[str, list[_QueueEntry]] = {}
            live: dict[str, list[_QueueEntry]] = {}
            for key, entries in by_key.items():
                spent = [e for e in entries if e.attempts >= self.max_attempts]
                rest = [e for e in entries if e.attempts < self.max_attempts]
                if rest:
                    live[key] = rest
                    if spent:  # superseded by a newer change of the row, which gets its own attempts
                        conn.execute(sql.SQL("DELETE FROM {} WHERE qid = ANY(%s)").format(obj.queue.ident),
                                     ([e.qid for e in spent],), prepare=KEY_ARRAY_PREPARE)
                elif spent:
                    exhausted[key] = spent
            chosen: list[str] = []
            for key, entries in live.items():
                tried = max(e.attempts for e in entries) > 0
                if tried and not chosen:
                    chosen = [key]
                    break
                if not tried:
                    chosen.append(key)
            locked = set(self._try_lock(list(exhausted) + chosen))
            skipped = sum(1 for k in list(exhausted) + chosen if k not in locked)
            failed = self._fail_exhausted({k: v for k, v in exhausted.items() if k in locked})
            self._unlock([k for k in exhausted if k in locked])
            keys = [k for k in chosen if k in locked]
            qids = {k: [e.qid for e in live[k]] for k in keys}
            attempts = {k: max(e.attempts for e in live[k]) + 1 for k in keys}
            recovered = [k for k in keys if any(e.claimed_by for e in live[k])]
            if qids:
                conn.execute(sql.SQL(
                    "UPDATE {} SET attempts = attempts + 1, claimed_by = %s, claimed_at = now(), "
                    "not_before = now() + make_interval(secs => %s) WHERE qid = ANY(%s)").format(obj.queue.ident),
                    (self.name, self.lease, [q for k in keys for q in qids[k]]), prepare=KEY_ARRAY_PREPARE)
        for key in recovered:
            log.warning("row %s: the worker holding it did not finish (lease expired); attempt %d of %d",
                        key, attempts[key], self.max_attempts)
        return _Claim(qids=qids, attempts=attempts, recovered=recovered, failed=failed, skipped=skipped)

    def _try_lock(self, keys: list[str]) -> list[str]:
        """Session advisory locks on ``keys`` (held across the claim and write transactions)."""
        if not keys:
            return []
        return [r[0] for r in self.store.client.execute(
            "SELECT k FROM unnest(%s::text[]) AS k WHERE pg_try_advisory_lock(%s, hashtext(k))",
            (keys, self._lock_class)).fetchall()]

    def _unlock(self, keys: list[str]) -> None:
        conn = self.store.client
        if not keys or conn.closed or conn.broken:
            return  # a lost session has released its locks already
        conn.execute("SELECT pg_advisory_unlock(%s, hashtext(k)) FROM unnest(%s::text[]) AS k",
                     (self._lock_class, keys))

    def _fail_exhausted(self, exhausted: dict[str, list[_QueueEntry]]) -> list[tuple[str, str]]:
        """Move rows whose last claim's lease expired after ``max_attempts`` claims to the failed table."""
        failed = []
        for key, entries in exhausted.items():
            last = max(entries, key=lambda e: e.attempts)
            reason = (f"the worker {last.claimed_by or '?'} that claimed it at {last.claimed_at} never finished "
                      f"(killed or crashed while embedding or writing it; lease expired) on attempt "
                      f"{last.attempts} of {self.max_attempts}")
            if last.last_error:
                reason += f"; earlier error: {last.last_error}"
            self._move_to_failed(key, last.attempts, reason, [e.qid for e in entries])
            failed.append((key, reason))
        return failed

    def _move_to_failed(self, key: str, attempts: int, reason: str, qids: list[int]) -> None:
        sql = sql_module()
        conn, obj = self.store.client, self.objects
        conn.execute(sql.SQL(
            "INSERT INTO {f} (row_key, attempts, reason) VALUES (CAST(%s AS {kt}), %s, %s) "
            "ON CONFLICT (row_key) DO UPDATE SET attempts = EXCLUDED.attempts, reason = EXCLUDED.reason, "
            "failed_at = now()").format(f=obj.failed.ident, kt=sql.SQL(self.store.layout.key_type)),
            (key, attempts, reason))
        conn.execute(sql.SQL("DELETE FROM {} WHERE qid = ANY(%s)").format(obj.queue.ident), (qids,),
                     prepare=KEY_ARRAY_PREPARE)
        log.warning("row %s failed %d times, moved to %s: %s", key, attempts, obj.failed, reason)

    def _process(self, claim: _Claim) -> tuple[list[str], list[str], list[tuple[str, str]], list[tuple[str, str]]]:
        """Embed the claimed rows (no transaction open), then write them and settle the queue in one."""
        sql = sql_module()
        store, obj = self.store, self.objects
        conn = store.client
        content = self._content(claim.keys)
        rows: list[Row] = []
        cleared: list[str] = []
        for key in claim.keys:
            if key not in content:
                cleared.append(key)  # the row was deleted
                continue
            try:
                rows.append(normalize_row(content[key], 0, dim=store.dim))
            except InputError:
                cleared.append(key)  # no text or media any more: the row has nothing to embed
        good, vecs, failures = self._embed(rows)
        if good and not self._fingerprint_checked:  # the embedder answered: it can say how it embeds
            try:
                store.check_fingerprint()
            except Exception as exc:
                if is_transient(exc):
                    raise EmbedderOutage(f"embedder unavailable: {type(exc).__name__}: {exc}") from exc
                raise
            self._fingerprint_checked = True
        with conn.transaction():
            failures = failures + store.write_vectors(good, vecs)
            bad = {k for k, _ in failures}
            embedded = [r.id for r in good if r.id not in bad]
            if cleared:
                store.delete(cleared)
            done = [q for key in embedded + cleared for q in claim.qids[key]]
            if done:
                conn.execute(sql.SQL("DELETE FROM {} WHERE qid = ANY(%s)").format(obj.queue.ident), (done,),
                             prepare=KEY_ARRAY_PREPARE)
            retried, failed = self._record_failures(failures, claim)
        return embedded, cleared, retried, failed

    def _content(self, keys: list[str]) -> dict[str, dict]:
        if not keys:
            return {}
        sql = sql_module()
        lay = self.store.layout
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in lay.content_columns.values())
        recs = self.store.client.execute(sql.SQL("SELECT {k}::text, {cols} FROM {t} WHERE {k} = ANY(CAST(%s AS {kt}[]))")
                                         .format(k=sql.Identifier(lay.key), cols=cols, t=lay.table.ident,
                                                 kt=sql.SQL(lay.key_type)), (keys,),
                                         prepare=KEY_ARRAY_PREPARE).fetchall()
        return {r[0]: self.store.content_row(r[0], r[1:]) for r in recs}

    def _embed(self, rows: list[Row]) -> tuple[list[Row], Any, list[tuple[str, str]]]:
        """Vectors for ``rows`` (:func:`~connectors.pipeline.embed_rows`: a batch that raises is
        embedded row by row there, so the row that breaks it fails alone).

        Raises:
            EmbedderOutage: the embedder is unavailable (see :func:`is_transient`); no row is
                to blame.
        """
        import numpy as np

        store = self.store
        if not rows:
            return [], np.zeros((0, store.dim), dtype=np.float32), []
        good, vectors, failures = embed_rows(store.embedder, rows, store.dim)
        away = [f for f in failures if f.transient]  # the failure says so itself: no row is to blame
        if away:
            raise EmbedderOutage(f"embedder unavailable: {away[0].reason}")
        return good, vectors, failures

    def _record_failures(self, failures: list[tuple[str, str]], claim: _Claim
                         ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Schedule a retry of each failed key, or move it to the failed table after ``max_attempts``."""
        sql = sql_module()
        conn, obj = self.store.client, self.objects
        retried, failed = [], []
        for key, reason in failures:
            n = claim.attempts[key]  # counted when claimed
            if n >= self.max_attempts:
                self._move_to_failed(key, n, reason, claim.qids[key])
                failed.append((key, reason))
            else:
                conn.execute(sql.SQL(
                    "UPDATE {} SET last_error = %s, claimed_by = NULL, claimed_at = NULL, "
                    "not_before = now() + make_interval(secs => %s) WHERE qid = ANY(%s)").format(obj.queue.ident),
                    (reason, self._delay(n), claim.qids[key]), prepare=KEY_ARRAY_PREPARE)
                retried.append((key, reason))
        return retried, failed

    def _delay(self, attempts: int) -> float:
        return min(MAX_RETRY_DELAY, self.retry_delay * 2 ** (attempts - 1))

    def _give_back(self, claim: _Claim, reason: str, *, counted: bool = True) -> None:
        """End the lease now. After an unexpected error (the connection still usable) the
        attempt stays counted and the rows return after the back-off; after an embedder outage
        (``counted=False``) the attempt is taken back and the rows are ready at once, so they
        are claimed in batches again, not one by one. Best effort: if this fails too, the
        lease expiring returns the rows (with the attempt counted)."""
        sql = sql_module()
        conn = self.store.client
        if conn.closed or conn.broken:
            return
        try:
            delay = self._delay(max(claim.attempts.values())) if counted else 0.0
            attempts = sql.SQL("attempts") if counted else sql.SQL("GREATEST(attempts - 1, 0)")
            conn.execute(sql.SQL(
                "UPDATE {} SET attempts = {}, last_error = %s, claimed_by = NULL, claimed_at = NULL, "
                "not_before = now() + make_interval(secs => %s) WHERE qid = ANY(%s)").format(
                    self.objects.queue.ident, attempts),
                (reason, delay, [q for qs in claim.qids.values() for q in qs]), prepare=KEY_ARRAY_PREPARE)
        except Exception as exc:  # noqa: BLE001 - the lease covers it
            log.warning("could not give back the claimed rows (%s); they return when the lease expires", exc)

    def run(self, *, once: bool = False, poll_interval: float = 1.0, stop: threading.Event | None = None,
            show_progress: bool = False, max_batches: int | None = None,
            max_outage: float | None = None) -> WorkerReport:
        """Process batches until stopped (``stop`` set, ``max_batches`` done), or with
        ``once=True`` until no queued row is ready. Returns the summed :class:`WorkerReport`.

        While the embedder is unavailable the worker backs off (``outage_delay`` doubling up
        to ``max_outage_delay``) and resumes when it answers; no row loses an attempt. With
        ``max_outage`` (seconds), an outage lasting longer raises
        :class:`~embedder.errors.UnavailableError` (the rows stay queued).
        """
        from tqdm.auto import tqdm

        total = sync_status(self.store).ready if show_progress else None
        report = WorkerReport()
        streak = 0
        outage_since = 0.0
        with tqdm(total=total, unit="row", disable=not show_progress, desc=f"sync {self.store.layout.table}") as bar:
            while not (stop is not None and stop.is_set()):
                batch = self.run_batch()
                report = report + batch
                bar.update(batch.processed)
                if batch.outages:
                    if streak == 0:
                        outage_since = time.monotonic()
                    elif max_outage is not None and time.monotonic() - outage_since > max_outage:
                        raise UnavailableError(f"the embedder has been unavailable for more than {max_outage:g} s; "
                                               f"{sync_status(self.store).queued} rows stay queued")
                    delay = min(self.max_outage_delay, self.outage_delay * 2 ** streak)
                    streak += 1
                    log.warning("embedder unavailable; batch returned to the queue (no attempt counted), "
                                "retrying in %.1f s", delay)
                    if stop is not None:
                        stop.wait(delay)
                    else:
                        time.sleep(delay)
                    continue
                if batch.processed:
                    if streak:
                        log.warning("embedder available again after %.1f s", time.monotonic() - outage_since)
                    streak = 0
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


__all__ = ["install_sync", "uninstall_sync", "sync_grants", "sync_status", "failed_rows", "retry_failed", "sync_objects",
           "SyncObjects", "SyncStatus", "FailedRow", "Worker", "WorkerReport", "is_transient"]

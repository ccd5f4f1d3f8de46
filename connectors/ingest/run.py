"""The ingest run: :func:`ingest` streams source rows into a store, resumable.

It has three overlapping stages joined by bounded queues, so memory stays bounded on a
corpus larger than RAM:

1. **read** (a thread): a source yields :class:`~connectors.ingest.sources.SourceRow`
   objects one at a time; each carries its source location for dead letters.
2. **embed** (the calling thread): rows are validated, given an id (the source's id
   column, or :func:`connectors.core.content_id`), checked against what already landed,
   and embedded in chunks; the embedder decodes media on its own threads and forms
   token-budget batches.
3. **write** (a thread): vectors go to ``store.upsert`` as precomputed ``vector`` rows
   (the store cuts byte-sized requests), so a retried write never re-embeds.

Transient failures (``Failure.transient``, from :func:`connectors.core.is_transient`) are retried with the
one :class:`~connectors.core.RetryPolicy`;
what landed and what failed is recorded by :mod:`connectors.ingest.state`.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np

from embedder.contracts import EmbedderLike
from embedder.errors import ConnectorError, InputError, QVLError, UnavailableError

from ..core import Failure, RetryPolicy, Row, UpsertReport, as_failures, is_transient, normalize_row, retrying
from .sources import SourceRow
from .state import DeadLetters, IngestState, present_ids

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """Counters of a running ingest, passed to the ``on_progress`` callback.

    Attributes:
        read: records taken from the source.
        embedded: rows embedded in this run.
        written: rows that landed in the store in this run.
        skipped: rows already present (in the target or the state file), not re-embedded.
        failed: rows sent to the dead letters.
        elapsed: seconds since the start.
    """

    read: int
    embedded: int
    written: int
    skipped: int
    failed: int
    elapsed: float

    @property
    def done(self) -> int:
        """Rows fully handled: written, skipped or failed."""
        return self.written + self.skipped + self.failed


@dataclass(frozen=True)
class IngestSummary(Progress):
    """The outcome of :func:`ingest` (the :class:`Progress` counters at the end, plus where things are).

    Attributes:
        dead_letter: the dead-letter file when something failed, else None.
        state: the state file (pass it back with ``resume=True`` to continue), or None.
    """

    dead_letter: str | None = None
    state: str | None = None

    @property
    def ok(self) -> bool:
        """True when no row failed."""
        return self.failed == 0


class IngestAborted(QVLError):
    """The ingest stopped before the end (source unreadable, store gone after retries, ...).

    Attributes:
        summary: the counters at the moment it stopped (what landed is in the state file).
    """

    def __init__(self, message: str, *, summary: IngestSummary) -> None:
        self.summary = summary
        super().__init__(message)


class IngestInterrupted(KeyboardInterrupt):
    """Ctrl-C during an ingest; what was embedded was written first. ``summary`` has the counters."""

    def __init__(self, summary: IngestSummary) -> None:
        self.summary = summary
        super().__init__("ingest interrupted")


class _Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.read = self.embedded = self.written = self.skipped = self.failed = 0


_END = object()


@dataclass(frozen=True)
class _SourceFailure:
    exc: BaseException


def read_row(sr: SourceRow, index: int, declared: Mapping[str, type] | None) -> tuple[Row | None, str | None]:
    """A source record as a store row, or None and why it cannot be one (a "read" failure).

    One odd record never stops a run: any error becomes its reason.
    """
    if sr.error is not None or sr.row is None:
        return None, sr.error or "unreadable record"
    try:
        return normalize_row(sr.row, index, declared_fields=declared), None
    except InputError as exc:
        return None, exc.reason
    except Exception as exc:  # noqa: BLE001 - reported as the row's failure
        return None, f"{type(exc).__name__}: {exc}"


def _read_into(rows: Iterable[SourceRow], out: "queue.Queue[Any]", stop: threading.Event, limit: int | None) -> None:
    """Reader thread: move source rows into the bounded queue until the end, ``limit`` or ``stop``."""
    it = iter(rows)

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    try:
        n = 0
        for sr in it:
            if limit is not None and n >= limit:
                break
            if not put(sr):
                return
            n += 1
        put(_END)
    except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
        put(_SourceFailure(exc))
    finally:
        close = getattr(it, "close", None)
        if callable(close):
            close()


def _chunks_from(q: "queue.Queue[Any]", size: int) -> Iterator[list[SourceRow]]:
    chunk: list[SourceRow] = []
    while True:
        item = q.get()
        if item is _END:
            break
        if isinstance(item, _SourceFailure):
            if chunk:
                yield chunk
            raise item.exc
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass(frozen=True)
class _Pending:
    """Rows embedded and waiting to be written."""

    rows: list[tuple[SourceRow, Row]]
    vectors: np.ndarray


def ingest(rows: Iterable[SourceRow], store: Any, embedder: EmbedderLike, *, dim: int | None = None,
           batch_size: int = 32,
           dead_letter: str | os.PathLike | None = None, state_file: str | os.PathLike | None = None,
           resume: bool = False, state_key: Mapping[str, Any] | None = None, overwrite: bool = False,
           retry: RetryPolicy = RetryPolicy(), limit: int | None = None,
           on_progress: Callable[[Progress], None] | None = None,
           sleep: Callable[[float], None] = time.sleep) -> IngestSummary:
    """Read, embed and write rows into ``store``; every row is written, skipped or dead-lettered.

    Args:
        rows: source rows (e.g. ``open_source(...).rows()``), consumed once, streaming.
        store: an open store whose collection exists (``store.create(exist_ok=True)``).
        embedder: an ``Embedder`` or ``RemoteEmbedder``.
        dim: the vector dimension (default: ``store.dim``).
        batch_size: rows per embedding call (the embedder forms token-budget batches
            inside) and per write.
        dead_letter: the dead-letter JSONL (None: failures are only counted and logged).
        state_file: where the ids that landed are recorded (None: no state).
        resume: continue from ``state_file``: ids recorded there are skipped unread.
        state_key: what identifies this ingest in the state file (source, target, ...).
        overwrite: re-embed and rewrite rows even when the target already holds their id.
        retry: backoff for transient embedder and store failures.
        limit: stop after this many source records.
        on_progress: called with :class:`Progress` after each batch (from worker threads too).
        sleep: the wait between retries (tests pass a no-op).

    Returns:
        :class:`IngestSummary`; ``summary.failed`` rows are in the dead letters.

    Raises:
        IngestAborted: the source failed mid-way, the store is missing, or a transient
            failure outlasted the retries; ``exc.summary`` tells what landed.
        IngestInterrupted: Ctrl-C; rows already embedded were written first.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
    dim = int(dim or store.dim)
    start = time.monotonic()
    dead = DeadLetters(dead_letter)
    state = IngestState(state_file, key=state_key or {}, resume=resume) if state_file else None
    landed = state.landed if state is not None else set()
    if state is not None and state.resumed:
        log.info("resuming: %d ids already landed according to %s", len(landed), state.path)
    c = _Counters()
    # A store on the skeleton takes normalised rows (its field policy applied here, once).
    direct = callable(getattr(store, "write_rows", None))
    declared = store.fields if direct else None
    can_look_up = not overwrite

    def snapshot() -> Progress:
        return Progress(c.read, c.embedded, c.written, c.skipped, c.failed, time.monotonic() - start)

    def progress() -> None:
        if on_progress is not None:
            with c.lock:
                p = snapshot()
            on_progress(p)

    def fail(sr: SourceRow, stage: str, reason: str, row_id: str | None = None) -> None:
        dead.write(sr.location, stage=stage, reason=reason, row_id=row_id or sr.id, row=sr.row)
        with c.lock:
            c.failed += 1

    def write(pending: _Pending) -> None:
        by_id = {row.id: (sr, row, vec) for (sr, row), vec in zip(pending.rows, pending.vectors)}
        todo = list(by_id)
        for attempt in range(max(1, retry.attempts)):
            try:
                if direct:  # rows normalised once, with the store's fields: the store's write half
                    report = store.write_rows([by_id[i][1] for i in todo], np.stack([by_id[i][2] for i in todo]))
                else:  # a store with only upsert(): rows that carry their vectors
                    report = store.upsert([dict(by_id[i][0].row or {}, id=i, vector=by_id[i][2]) for i in todo])
            except ConnectorError as exc:
                if not is_transient(exc):
                    raise
                report = UpsertReport([], [Failure(i, f"{type(exc).__name__}: {exc}", "write", True) for i in todo])
            except Exception as exc:  # noqa: BLE001 - transient ones retried, others reported per row
                transient = is_transient(exc)
                report = UpsertReport([], [Failure(i, f"{type(exc).__name__}: {exc}", "write", transient)
                                           for i in todo])
            if report.written:
                if state is not None:
                    state.record(report.written)
                with c.lock:
                    c.written += len(report.written)
                progress()
            # A failure says itself whether it is transient (the store's error translator set it).
            failures = as_failures(report.failed, stage="write")
            retryable = [f for f in failures if f.transient and f.id in by_id]
            for f in failures:
                if not (f.transient and f.id in by_id) and f.id in by_id:
                    fail(by_id[f.id][0], f.stage, f.reason, f.id)
            if not retryable:
                return
            if attempt + 1 >= retry.attempts:
                raise UnavailableError(f"writing {len(retryable)} rows failed after {retry.attempts} tries: "
                                       f"{retryable[0].reason}")
            wait = retry.delay(attempt)
            log.warning("write of %d rows failed transiently (%s); retry %d/%d in %.1f s", len(retryable),
                        retryable[0].reason, attempt + 1, retry.attempts - 1, wait)
            sleep(wait)
            todo = [f.id for f in retryable]

    # ------------------------------------------------------------------ threads
    stop = threading.Event()
    source_q: "queue.Queue[Any]" = queue.Queue(maxsize=max(64, 2 * batch_size))
    write_q: "queue.Queue[Any]" = queue.Queue(maxsize=2)
    writer_error: list[BaseException] = []

    def write_loop() -> None:
        while True:
            item = write_q.get()
            if item is _END:
                return
            if writer_error:
                continue  # drain: the main thread will raise
            try:
                write(item)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread
                writer_error.append(exc)

    reader = threading.Thread(target=_read_into, args=(rows, source_q, stop, limit), name="qvl-ingest-read",
                              daemon=True)
    writer = threading.Thread(target=write_loop, name="qvl-ingest-write", daemon=True)
    reader.start()
    writer.start()

    def finish_writes() -> None:
        write_q.put(_END)
        writer.join()

    def summary() -> IngestSummary:
        p = snapshot()
        return IngestSummary(p.read, p.embedded, p.written, p.skipped, p.failed, p.elapsed,
                             dead_letter=str(dead.path) if dead.path is not None and dead.count else None,
                             state=str(state.path) if state is not None else None)

    index = 0
    try:
        try:
            for chunk in _chunks_from(source_q, batch_size):
                todo: dict[str, tuple[SourceRow, Row]] = {}
                for sr in chunk:
                    with c.lock:
                        c.read += 1
                    index += 1
                    row, reason = read_row(sr, index - 1, declared)
                    if row is None:
                        fail(sr, "read", reason)
                        continue
                    if row.id in landed:
                        with c.lock:
                            c.skipped += 1
                        continue
                    if row.id in todo:  # the same id twice in one batch: the last one wins
                        with c.lock:
                            c.skipped += 1
                    todo[row.id] = (sr, row)
                if todo and can_look_up:
                    try:
                        present = retrying("looking up existing ids", lambda: present_ids(store, list(todo)),
                                            retry, sleep)
                    except Exception as exc:  # noqa: BLE001 - without the look-up, rows are simply rewritten
                        if is_transient(exc):
                            raise
                        log.warning("cannot look up which ids %s already holds (%s: %s); rows will be "
                                    "re-embedded and rewritten", type(store).__name__, type(exc).__name__, exc)
                        present = None
                    if present is None:
                        can_look_up = False
                    elif present:
                        for rid in present:
                            todo.pop(rid, None)
                        with c.lock:
                            c.skipped += len(present)
                if todo:
                    pairs = list(todo.values())
                    items = [row.item() for _, row in pairs]
                    try:
                        result = retrying(f"embedding {len(items)} rows",
                                           lambda: embedder.embed_documents(items, dim=dim, on_error="skip"),
                                           retry, sleep)
                    except Exception as exc:  # noqa: BLE001
                        if is_transient(exc):
                            raise
                        for sr, row in pairs:
                            fail(sr, "embed", f"{type(exc).__name__}: {exc}", row.id)
                    else:
                        for j, reason in result.errors:
                            fail(pairs[j][0], "embed", reason, pairs[j][1].id)
                        good = [pairs[j] for j in result.indices]
                        with c.lock:
                            c.embedded += len(good)
                        if good:
                            write_q.put(_Pending(good, np.asarray(result.vectors, dtype=np.float32)))
                if writer_error:
                    break
                progress()
        finally:
            stop.set()
            finish_writes()
            reader.join(timeout=10)
        if writer_error:
            raise writer_error[0]
    except KeyboardInterrupt as exc:
        raise IngestInterrupted(summary()) from exc
    except Exception as exc:  # noqa: BLE001 - anything that stops the run is reported with the counters
        raise IngestAborted(f"ingest stopped: {type(exc).__name__}: {exc}", summary=summary()) from exc
    finally:
        dead.close()
        if state is not None:
            state.close()
    progress()
    return summary()

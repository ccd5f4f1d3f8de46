"""The write step of a Ray Data pipeline: :class:`StoreSink`, a ``ray.data.Datasink`` for any store.

``on_write_start`` creates the collection once (on the driver); each write task writes the
rows :class:`~connectors.ray.EmbedBatches` embedded through the store's own bulk path
(``store.write_rows`` with the precomputed vectors: COPY for Postgres, batched inserts for
Milvus, the batcher for Weaviate), retrying transient failures with the one
:class:`~connectors.core.RetryPolicy`, and returns what it did as a :class:`TaskOutcome`;
``on_write_complete`` gathers the outcomes of every task into one :class:`RayIngestReport`
and writes the dead-letter file in the format ``qvl ingest`` writes.
"""
from __future__ import annotations

import logging
import os
import pickle
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from embedder.errors import ConnectorError, UnavailableError

from ..core import Failure, RetryPolicy, Row, UpsertReport, as_failures, is_transient
from ..ingest.run import IngestSummary
from ..ingest.state import DeadLetters
from .embed import EMBEDDED, FAILED, SKIPPED
from .store import StoreRef

log = logging.getLogger(__name__)

try:  # the base class when Ray is installed (connectors.ray checks that first, naming the extra)
    from ray.data import Datasink as _Datasink
except ImportError:  # pragma: no cover - connectors.ray raises MissingDependencyError before this
    _Datasink = object  # type: ignore[assignment,misc]


@dataclass(frozen=True)
class DeadLetter:
    """One row that did not land, as the dead-letter file records it."""

    location: str
    id: str | None
    stage: str
    reason: str
    row: dict | None = None


@dataclass(frozen=True)
class TaskOutcome:
    """What one write task did (returned to the driver by ``StoreSink.write``)."""

    read: int = 0
    embedded: int = 0
    skipped: int = 0
    written: tuple[str, ...] = ()
    failed: tuple[DeadLetter, ...] = ()


@dataclass(frozen=True)
class RayIngestReport(IngestSummary):
    """The outcome of a Ray ingest: the counters of ``qvl ingest`` (:class:`IngestSummary`) gathered
    from every task, plus the ids that landed and the rows that did not.

    Attributes:
        written_ids: every id written in this run.
        failures: every row sent to the dead letters (each exactly once).
    """

    written_ids: tuple[str, ...] = ()
    failures: tuple[DeadLetter, ...] = field(default=(), repr=False)


class StoreSink(_Datasink):
    """Write embedded rows into a store; one report and one dead-letter file for the whole job.

    Args:
        target: the target URL (``postgresql://...``, ``weaviate://host:8080``, ``milvus:./x.db``, ...).
        collection: the collection / table (created once when the first rows arrive).
        dim: the vector dimension.
        dead_letter: the dead-letter JSONL (None: failures are only in the report).
        retry: tries and backoff for transient write failures.
        **options: further keyword arguments for :func:`connectors.connect`.

    After ``ds.write_datasink(sink)``, ``sink.report`` is the :class:`RayIngestReport`.
    ``sink.store`` is the :class:`StoreRef` to give :class:`EmbedBatches` (``store=``) so
    that ids already stored are skipped before embedding.

    Example:
        >>> sink = StoreSink("postgresql://localhost/shop", collection="products", dim=1024)  # doctest: +SKIP
        >>> ds.write_datasink(sink)                                                         # doctest: +SKIP
        >>> sink.report.written, sink.report.failed                                         # doctest: +SKIP
        (20, 1)
    """

    def __init__(self, target: str, *, collection: str, dim: int, dead_letter: str | os.PathLike | None = None,
                 retry: RetryPolicy = RetryPolicy(), **options: Any) -> None:
        self.store = StoreRef(target, collection, int(dim), tuple(sorted(options.items())))
        self.dead_letter = str(dead_letter) if dead_letter else None
        self.retry = retry
        self.report: RayIngestReport | None = None
        self._start = time.monotonic()
        if self.store.shared:
            import ray

            if not ray.is_initialized():
                ray.init()
            self.store.serve()  # before the embedding actors look ids up in it

    def get_name(self) -> str:
        return f"StoreSink({self.store.collection})"

    # ------------------------------------------------------------------ driver
    def on_write_start(self, schema: Any = None) -> None:
        """Create the collection (once, on the driver) before the first write task."""
        if self.store.shared:
            self.store.open().create(exist_ok=True)
            return
        store = self.store.connect()
        try:
            store.create(exist_ok=True)
        finally:
            store.close()

    def on_write_complete(self, write_result: Any) -> None:
        """Gather every task's outcome into :attr:`report` and write the dead letters."""
        outcomes = [o for o in write_result.write_returns if isinstance(o, TaskOutcome)]
        self.report = gather(outcomes, elapsed=time.monotonic() - self._start, dead_letter=self.dead_letter)
        self.store.stop()

    def on_write_failed(self, error: Exception) -> None:
        self.store.stop()

    # ------------------------------------------------------------------ one write task
    def write(self, blocks: Iterable[Any], ctx: Any) -> TaskOutcome:
        """Write the embedded rows of ``blocks``; count the skipped ones, keep the failed ones."""
        from ray.data.block import BlockAccessor

        store = self.store.open()
        read = embedded = skipped = 0
        written: list[str] = []
        failed: list[DeadLetter] = []
        for block in blocks:
            batch = BlockAccessor.for_block(block).to_batch_format("numpy")
            n = len(batch["status"])
            read += n
            rows: list[Row] = []
            summaries: dict[str, tuple[str, dict]] = {}
            keep: list[int] = []
            for i in range(n):
                status, location = batch["status"][i], str(batch["location"][i])
                if status == SKIPPED:
                    skipped += 1
                elif status == EMBEDDED:
                    row, summary = pickle.loads(batch["payload"][i])
                    rows.append(row)
                    summaries[row.id] = (location, summary)
                    keep.append(i)
                elif status == FAILED:
                    raw = batch["payload"][i]
                    failed.append(DeadLetter(location, _str(batch["id"][i]), str(batch["stage"][i]),
                                             str(batch["error"][i]), pickle.loads(raw) if raw is not None and len(raw)
                                             else None))
            embedded += len(rows)
            if rows:
                vectors = np.asarray(np.stack([batch["vector"][i] for i in keep]), dtype=np.float32)
                ok, bad = self._write(store, rows, vectors)
                written += ok
                failed += [DeadLetter(summaries[f.id][0], f.id, f.stage, f.reason, summaries[f.id][1])
                           for f in bad if f.id in summaries]
        return TaskOutcome(read, embedded, skipped, tuple(written), tuple(failed))

    def _write(self, store: Any, rows: list[Row], vectors: np.ndarray) -> tuple[list[str], list[Failure]]:
        """``store.write_rows``; transient failures retried with the policy, the others returned."""
        by_id = {row.id: (row, vec) for row, vec in zip(rows, vectors)}
        todo = list(by_id)
        written: list[str] = []
        failed: list[Failure] = []
        for attempt in range(max(1, self.retry.attempts)):
            try:
                report = store.write_rows([by_id[i][0] for i in todo], np.stack([by_id[i][1] for i in todo]))
            except ConnectorError as exc:
                if not is_transient(exc):
                    raise
                report = UpsertReport([], [Failure(i, f"{type(exc).__name__}: {exc}", "write", True) for i in todo])
            except Exception as exc:  # noqa: BLE001 - transient ones retried, others reported per row
                report = UpsertReport([], [Failure(i, f"{type(exc).__name__}: {exc}", "write", is_transient(exc))
                                           for i in todo])
            written += report.written
            failures = as_failures(report.failed, stage="write")
            retryable = [f for f in failures if f.transient and f.id in by_id]
            failed += [f for f in failures if not f.transient and f.id in by_id]
            if not retryable:
                break
            if attempt + 1 >= self.retry.attempts:
                raise UnavailableError(f"writing {len(retryable)} rows failed after {self.retry.attempts} tries: "
                                       f"{retryable[0].reason}")
            wait = self.retry.delay(attempt)
            log.warning("write of %d rows failed transiently (%s); retry %d/%d in %.1f s", len(retryable),
                        retryable[0].reason, attempt + 1, self.retry.attempts - 1, wait)
            time.sleep(wait)
            todo = [f.id for f in retryable]
        return written, failed


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def gather(outcomes: Iterable[TaskOutcome], *, elapsed: float, dead_letter: str | None = None) -> RayIngestReport:
    """One report from the outcomes of every write task; the dead letters written to ``dead_letter``
    in the format of ``qvl ingest`` (the file starts afresh)."""
    read = embedded = skipped = 0
    written: list[str] = []
    failures: list[DeadLetter] = []
    for o in outcomes:
        read += o.read
        embedded += o.embedded
        skipped += o.skipped
        written += o.written
        failures += o.failed
    dead = DeadLetters(dead_letter)
    try:
        for f in failures:
            dead.write(f.location, stage=f.stage, reason=f.reason, row_id=f.id, row=f.row)
    finally:
        dead.close()
    return RayIngestReport(read, embedded, len(written), skipped, len(failures), elapsed,
                           dead_letter=dead_letter if dead_letter and failures else None, state=None,
                           written_ids=tuple(written), failures=tuple(failures))

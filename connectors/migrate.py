"""Copy a collection between any two stores, without re-embedding: ``qvl migrate FROM TO``.

The source is read page by page (:meth:`connectors.base.BaseStore.scan`: ids, vectors,
fields) and each page is upserted into the target as rows that carry their vectors, so
nothing is embedded and the target's bulk path is used. The target is created at the
source's dim, with the source's declared fields and the source's embedding fingerprint (the
target then remembers how its vectors were made). A state file records the cursor after
each page: an interrupted copy resumes after the last page that landed, and because
upserts are idempotent a page copied twice changes nothing.

Example:
    >>> from connectors import connect                                            # doctest: +SKIP
    >>> src = connect("milvus:./photos.db", collection="photos")                  # doctest: +SKIP
    >>> dst = connect("postgresql://localhost/app", table="photos", dim=src.dim)  # doctest: +SKIP
    >>> report = migrate(src, dst, state="photos.migrate.json")                   # doctest: +SKIP
    >>> len(report.written), report.failed                                        # doctest: +SKIP
    (120000, [])
"""
from __future__ import annotations

import json
import logging
import os
import pathlib
import time
from dataclasses import dataclass
from typing import Callable

from embedder.errors import ConnectorError, SchemaMismatchError

from .base import PAGE_ROWS, BaseStore, fingerprint_problems
from .core import Failure, RetryPolicy, UpsertReport

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrateProgress:
    """Where a copy stands: rows copied and failed so far, pages, seconds."""

    copied: int
    failed: int
    pages: int
    seconds: float
    total: int | None

    @property
    def rate(self) -> float:
        return self.copied / self.seconds if self.seconds > 0 else 0.0


def _load_state(path: pathlib.Path, key: dict) -> tuple[str | None, bool]:
    """The cursor after the last page that landed, and whether the copy was complete."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return None, False
    except (OSError, ValueError) as exc:
        raise ConnectorError(f"cannot read the migration state {str(path)!r}: {exc}; delete it to start afresh") \
            from exc
    if state.get("key") != key:
        raise ConnectorError(f"the migration state {str(path)!r} belongs to another copy ({state.get('key')}); "
                             "give another --state file or delete it")
    return state.get("cursor"), bool(state.get("done"))


def _save_state(path: pathlib.Path, key: dict, cursor: str | None, done: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"key": key, "cursor": cursor, "done": done}))
    os.replace(tmp, path)


def prepare_target(source: BaseStore, target: BaseStore, *, allow_mismatch: bool = False) -> None:
    """Create the target like the source (dim, fields, fingerprint), or check an existing one.

    The target stores vectors with its own ``quantization`` (the one it was opened with; a new one
    float32 by default): when that is float32 and the source's is not, a warning says so and how
    to keep the source's (open the target with ``quantization=``; ``qvl migrate --quantization same``).

    Raises:
        SchemaMismatchError: the target exists with another dim or fields, or holds vectors
            made another way than the source's (unless ``allow_mismatch``).
    """
    if target.dim != source.dim:
        raise SchemaMismatchError(f"the source {source.collection!r} has dim {source.dim}, the target "
                                  f"{target.collection!r} dim {target.dim}: open the target with dim={source.dim}")
    if not target.open_existing():
        target.create(fields=source.fields, fingerprint=source.fingerprint)
        _note_quantization(source, target)
        return
    _note_quantization(source, target)
    if target.fields != source.fields:
        raise SchemaMismatchError(f"the target {target.collection!r} has fields {target.fields}, the source "
                                  f"{source.collection!r} {source.fields}")
    if source.fingerprint and target.fingerprint:
        problems = fingerprint_problems(target.fingerprint, source.fingerprint, source.dim)
        if problems and not allow_mismatch:
            raise SchemaMismatchError(f"the target {target.collection!r} holds vectors made another way than the "
                                      f"source's: {'; '.join(problems)} (allow_mismatch=True copies anyway)")


def _note_quantization(source: BaseStore, target: BaseStore) -> None:
    if target.quantization == "float32" != source.quantization:  # the default target: the source's option lost
        log.warning("the copy of %r stores %s vectors, the source %s ones; to keep %s, copy into a new target opened "
                    "with quantization=%r (qvl migrate --quantization same)", source.collection, target.quantization,
                    source.quantization, source.quantization, source.quantization)


def migrate(source: BaseStore, target: BaseStore, *, page_size: int = PAGE_ROWS,
            state: str | os.PathLike | None = None, resume: bool = True, allow_mismatch: bool = False,
            retry: RetryPolicy = RetryPolicy(), on_progress: Callable[[MigrateProgress], None] | None = None,
            sleep: Callable[[float], None] = time.sleep) -> UpsertReport:
    """Copy every row of ``source`` into ``target`` (ids, vectors, text, media, metadata, fields).

    Args:
        source: the store to read (opened on an existing collection; no embedder needed).
        target: the store to write, opened at the source's dim (created if it does not exist).
        page_size: rows per page read and written.
        state: a JSON file recording the cursor after each page; with ``resume`` (default) an
            existing state file of the same copy resumes after its last page.
        resume: False starts from the first row even when a state file exists.
        allow_mismatch: copy into an existing target whose fingerprint differs.
        retry: how often and how long to retry rows that failed transiently (the target was away).
        on_progress: called after each page.

    Returns:
        The same report as ``upsert``: ``written`` ids and ``failed`` values (rows the target
        refused, or that still failed transiently after the retries).

    Raises:
        NotFoundError: the source collection does not exist.
        SchemaMismatchError: see :func:`prepare_target`.
    """
    total = source.count()  # raises NotFoundError for a missing source
    prepare_target(source, target, allow_mismatch=allow_mismatch)
    path = pathlib.Path(state) if state is not None else None
    key = {"source": f"{source.backend}:{source.collection}", "target": f"{target.backend}:{target.collection}"}
    cursor, done = _load_state(path, key) if path is not None and resume else (None, False)
    if done:
        log.info("the copy of %s is complete according to %s (resume=False copies again)", key["source"], path)
        return UpsertReport()
    if cursor is not None:
        log.info("resuming the copy of %s after %r (state %s)", key["source"], cursor, path)
    start = time.monotonic()
    written: list[str] = []
    failed: list[Failure] = []
    pages = 0
    for rows, next_cursor in source.scan(page_size=page_size, cursor=cursor):
        if rows:
            batch = [r.as_row() for r in rows]
            report = target.upsert(batch)
            for attempt in range(max(1, retry.attempts) - 1):
                again = {f.id for f in report.failed if f.transient}
                if not again:
                    break
                wait = retry.delay(attempt)
                log.warning("%d rows failed transiently (%s); retry %d/%d in %.1f s", len(again),
                            report.transient[0].reason, attempt + 1, retry.attempts - 1, wait)
                sleep(wait)
                retried = target.upsert([r for r in batch if r["id"] in again])
                report = UpsertReport(report.written + retried.written,
                                      [f for f in report.failed if f.id not in again] + retried.failed)
            written += report.written
            failed += report.failed
        pages += 1
        if path is not None:
            _save_state(path, key, next_cursor, done=next_cursor is None)
        if on_progress is not None:
            on_progress(MigrateProgress(len(written), len(failed), pages, time.monotonic() - start, total))
    for f in failed[:5]:
        log.warning("not copied: %s: %s", f.id, f.reason)
    return UpsertReport(written=written, failed=failed)

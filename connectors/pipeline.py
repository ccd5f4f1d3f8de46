"""The one embed-then-write pipeline: rows validated once, embedding overlapping writing, failures as values.

:func:`pipelined_upsert` is ``Store.upsert``; :func:`write_in_batches` is the write half that
``qvl ingest`` (through :meth:`connectors.base.BaseStore.write_rows`) and ``upsert`` share;
:func:`embed_rows` turns rows into vectors (precomputed ones checked, the others embedded as
documents). Every row ends in ``written`` or in ``failed`` as a :class:`~connectors.core.Failure`.
"""
from __future__ import annotations

import json
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from embedder.contracts import EmbedderLike
from embedder.errors import InputError

from .core import (NO_EMBEDDER, NONFINITE_VECTOR, STREAM_ROWS_PER_STEP, VECTOR_ROWS_PER_STEP, Failure, Row,
                   UpsertReport, as_failures, bad_vector_reason, is_transient, normalize_row, vector_problems)

log = logging.getLogger(__name__)


def row_bytes(row: Row, dim: int) -> int:
    """A generous estimate of a row's size on the wire."""
    size = 4 * dim + 64 + len(row.id)
    size += len((row.text or "").encode("utf-8", "surrogatepass"))  # a lone surrogate must not raise here
    size += len(row.media or "")
    if row.metadata:
        size += len(json.dumps(row.metadata))
    if row.fields:
        size += len(json.dumps(row.fields, default=str))
    return size


def byte_batches(rows: Sequence[Row], dim: int, *, max_bytes: int, max_rows: int | None = None) -> Iterator[list[int]]:
    """Indices of ``rows`` grouped so that each group stays under ``max_bytes`` (and ``max_rows``)."""
    current: list[int] = []
    size = 0
    for i, row in enumerate(rows):
        b = row_bytes(row, dim)
        if current and (size + b > max_bytes or (max_rows and len(current) >= max_rows)):
            yield current
            current, size = [], 0
        current.append(i)
        size += b
    if current:
        yield current


def dedupe_rows(rows: Sequence[Row]) -> list[Row]:
    """Keep the last row of each id (as an upsert would), in first-seen order."""
    last: dict[str, Row] = {}
    for row in rows:
        last[row.id] = row
    return list(last.values())


def embed_rows(embedder: EmbedderLike | None, rows: Sequence[Row],
               dim: int) -> tuple[list[Row], np.ndarray, list[Failure]]:
    """Vectors for rows: precomputed ones as is (checked to be finite and not all zeros),
    the others embedded as documents.

    Returns the rows that have a vector, their vectors, and ``(id, reason)`` failures.
    """
    todo = [i for i, r in enumerate(rows) if r.vector is None]
    failed: list[Failure] = []
    if not todo:  # the bulk-migration case: one copy, one checking pass, no re-indexing
        vectors = np.stack([r.vector for r in rows]) if rows else np.zeros((0, dim), dtype=np.float32)
        ok = ~vector_problems(vectors)
    else:
        vectors = np.empty((len(rows), dim), dtype=np.float32)
        ok = np.ones(len(rows), dtype=bool)
        given = [i for i, r in enumerate(rows) if r.vector is not None]
        if given:
            vectors[given] = np.stack([rows[i].vector for i in given])
            ok[given] = ~vector_problems(vectors[given])
        if embedder is None:
            ok[todo] = False
            failed += [Failure(rows[i].id, NO_EMBEDDER, "embed") for i in todo]
        else:
            failed += _embed_into(embedder, rows, todo, vectors, ok, dim)
    for i in np.flatnonzero(~ok):
        if rows[i].vector is not None:
            failed.append(Failure(rows[i].id, bad_vector_reason(rows[i].vector) or NONFINITE_VECTOR, "validate"))
    if ok.all():
        return list(rows), vectors, failed
    good = np.flatnonzero(ok)
    return [rows[i] for i in good], vectors[good], failed


def _embed_into(embedder: EmbedderLike, rows: Sequence[Row], todo: list[int], vectors: np.ndarray,
                ok: np.ndarray, dim: int) -> list[Failure]:
    """Embed ``rows[todo]`` into ``vectors`` (clearing ``ok`` where a row fails); the failures.

    A call that raises (not one bad item: the embedder reports those itself) is, when the
    error is not transient, tried again row by row, so a row that crashes its batch fails
    alone. A transient error (the service is away) fails every row as transient at once.
    """
    try:
        result = embedder.embed_documents([rows[i].item() for i in todo], dim=dim, on_error="skip")
    except Exception as exc:  # noqa: BLE001 - a failed call fails the rows it embeds, not the others
        transient = is_transient(exc)
        if transient or len(todo) == 1:
            log.warning("embedding %d rows failed: %s", len(todo), exc)
            ok[todo] = False
            return [Failure(rows[i].id, f"embedding failed: {type(exc).__name__}: {exc}", "embed", transient)
                    for i in todo]
        log.warning("embedding %d rows failed (%s: %s); embedding them one by one", len(todo),
                    type(exc).__name__, exc)
        failed: list[Failure] = []
        for i in todo:
            failed += _embed_into(embedder, rows, [i], vectors, ok, dim)
        return failed
    vectors[[todo[j] for j in result.indices]] = result.vectors
    failed = []
    for j, reason in result.errors:
        ok[todo[j]] = False
        failed.append(Failure(rows[todo[j]].id, reason, "embed"))
    return failed


WriteBatch = Callable[[list[Row], np.ndarray], list[tuple[str, str]]]


def write_in_batches(write: WriteBatch, rows: Sequence[Row], vectors: np.ndarray, *, dim: int,
                     max_bytes: int) -> tuple[list[str], list[Failure]]:
    """Write rows that have their vectors in requests of at most ``max_bytes``: the write half
    of every pipeline (``upsert``, ``qvl ingest``, the sync worker).

    A request that raises fails its rows (``transient`` from :func:`is_transient`), not the others.
    Returns the ids written and the failures.
    """
    ok_ids: list[str] = []
    bad: list[Failure] = []
    for idx in byte_batches(rows, dim, max_bytes=max_bytes):
        part = list(rows[idx[0]:idx[-1] + 1])  # byte_batches yields consecutive runs
        try:
            errs = as_failures(write(part, vectors[idx[0]:idx[-1] + 1]), stage="write")
        except Exception as exc:  # noqa: BLE001 - reported per row, never lost
            transient = is_transient(exc)
            errs = [Failure(r.id, f"{type(exc).__name__}: {exc}", "write", transient) for r in part]
        bad_ids = {e.id for e in errs}
        ok_ids += [r.id for r in part if r.id not in bad_ids]
        bad += errs
    return ok_ids, bad
WriteStream = Callable[[Iterator[Row]], list[tuple[str, str]]]


def _raw_id(obj: Any, index: int) -> str:
    rid = obj.get("id") if isinstance(obj, Mapping) else None
    return str(rid) if rid is not None and rid != "" else f"#{index}"


def pipelined_upsert(rows: Iterable[Mapping[str, Any]], *, embedder: EmbedderLike | None, dim: int,
                     write: WriteBatch,
                     write_stream: WriteStream | None = None, batch_rows: int = 256,
                     max_bytes: int = 32 * 1024 * 1024, declared_fields: Iterable[str] = (),
                     show_progress: bool = False, desc: str = "upsert") -> UpsertReport:
    """Validate, embed and write rows; embedding of batch k+1 overlaps the write of batch k.

    ``write(rows, vectors)`` writes one batch (already deduplicated, at most ``max_bytes``)
    and returns the ``(id, reason)`` pairs that failed; raising marks the whole batch
    failed. Nothing is silently skipped: every input row ends up in ``written`` or
    ``failed``. ``batch_rows`` is the number of rows embedded per step; rows with a
    precomputed vector go in steps of ``VECTOR_ROWS_PER_STEP``.

    ``write_stream(rows)``, when the store has one, takes a step of rows that carry their
    vectors as an iterator that validates each row as it is read: the store streams them
    to the database while the next are validated, in one thread (a second thread would
    contend with it for the GIL). It must read the iterator to the end, may see duplicate
    ids (the last one wins), and returns the ``(id, reason)`` pairs that failed.
    """
    from tqdm.auto import tqdm

    declared = frozenset(declared_fields)
    written: list[str] = []
    failed: list[Failure] = []
    total = len(rows) if hasattr(rows, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(total=total, unit="row", disable=not show_progress, desc=desc)

    def chunks() -> Iterator[tuple[str, list]]:
        # ("rows", [Row]) steps to embed and write, or ("stream", [(index, raw row)]) steps of
        # rows that carry a vector, left unvalidated for ``write_stream``. ``batch_rows``
        # bounds the rows to EMBED per step; rows that carry their vector cost nothing to
        # embed, so steps of them are larger.
        batch: list[Row] = []
        raw: list[tuple[int, Any]] = []
        to_embed = size = raw_size = 0
        for i, obj in enumerate(rows):
            # A run of streamed rows starts only between steps, so rows are written in input order.
            if write_stream is not None and not batch and isinstance(obj, (dict, Mapping)) \
                    and obj.get("vector") is not None:
                raw.append((i, obj))
                text = obj.get("text")
                raw_size += 4 * dim + 64 + (len(text) if isinstance(text, str) else 0)
                if len(raw) >= STREAM_ROWS_PER_STEP or raw_size >= max_bytes:
                    yield "stream", raw
                    raw, raw_size = [], 0
                continue
            if raw:
                yield "stream", raw
                raw, raw_size = [], 0
            try:
                row = normalize_row(obj, i, dim=dim, declared_fields=declared)
            except InputError as exc:
                failed.append(Failure(_raw_id(obj, i), exc.reason, "validate"))
                bar.update(1)
                continue
            batch.append(row)
            to_embed += row.vector is None
            size += row_bytes(row, dim)
            if to_embed >= batch_rows or len(batch) >= max(batch_rows, VECTOR_ROWS_PER_STEP) or size >= max_bytes:
                yield "rows", batch
                batch, to_embed, size = [], 0, 0
        if batch:
            yield "rows", batch
        if raw:
            yield "stream", raw

    def do_write(batch_rows_: list[Row], vecs: np.ndarray) -> tuple[list[str], list[Failure]]:
        return write_in_batches(write, batch_rows_, vecs, dim=dim, max_bytes=max_bytes)

    def do_stream(raw: list[tuple[int, Any]]) -> tuple[list[str], list[tuple[str, str]]]:
        assert write_stream is not None
        seen: list[str] = []
        bad: list[tuple[str, str]] = []

        def validated() -> Iterator[Row]:
            for i, obj in raw:
                try:
                    row = normalize_row(obj, i, dim=dim, declared_fields=declared)
                except Exception as exc:  # noqa: BLE001 - a generator that raised would drop the rest
                    reason = exc.reason if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
                    bad.append(Failure(_raw_id(obj, i), reason, "validate"))
                    continue
                reason = bad_vector_reason(row.vector)
                if reason is not None:
                    bad.append(Failure(row.id, reason, "validate"))
                    continue
                seen.append(row.id)
                yield row

        rows_iter = validated()
        try:
            errs = as_failures(write_stream(rows_iter), stage="write")
        except Exception as exc:  # noqa: BLE001 - reported per row, never lost
            for _ in rows_iter:  # validate what the store did not read, so each row is reported once
                pass
            transient = is_transient(exc)
            errs = [Failure(rid, f"{type(exc).__name__}: {exc}", "write", transient) for rid in dict.fromkeys(seen)]
        bad_ids = {e[0] for e in errs}
        return [rid for rid in seen if rid not in bad_ids], bad + errs

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="qvl-write") as pool:
        pending: Future | None = None
        pending_n = 0

        def settle() -> None:
            nonlocal pending
            if pending is not None:
                ok_ids, bad = pending.result()
                written.extend(ok_ids)
                failed.extend(bad)
                bar.update(pending_n)
                pending = None

        try:
            for kind, batch in chunks():
                if kind == "stream":
                    settle()  # in order: an id written twice keeps its last row
                    ok_ids, bad = do_stream(batch)
                    written.extend(ok_ids)
                    failed.extend(bad)
                    bar.update(len(batch))
                    continue
                unique = dedupe_rows(batch)
                try:
                    good, vecs, errs = embed_rows(embedder, unique, dim)
                except Exception as exc:  # noqa: BLE001 - a crashed embedder fails this batch, not the run
                    good, vecs = [], np.zeros((0, dim), dtype=np.float32)
                    transient = is_transient(exc)
                    errs = [Failure(r.id, f"embedding failed: {type(exc).__name__}: {exc}", "embed", transient)
                            for r in unique]
                failed.extend(errs)
                settle()
                pending = pool.submit(do_write, good, vecs) if good else None
                pending_n = len(batch) - len(errs)
                if pending is None:
                    bar.update(pending_n)
                bar.update(len(errs))
            settle()
        finally:
            bar.close()
    if failed:
        log.warning("%s: %d rows written, %d failed", desc, len(written), len(failed))
    return UpsertReport(written=list(dict.fromkeys(written)), failed=failed)

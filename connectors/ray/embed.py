"""The embedding step of a Ray Data pipeline: :class:`EmbedBatches`, a callable class for ``map_batches``.

One model per actor (a checkpoint, a hub id, or ``http://...`` of a ``qvl serve`` fleet); each
Ray batch is validated row by row, rows whose id the store already holds are dropped before
embedding (resume), and the rest are embedded in one call (the embedder forms token-budget
batches inside). Every input row gives exactly one output row, with a ``status`` and an
``error``: one bad row never fails its block.

Input: either the columns of :func:`~connectors.ray.read_source` (``qvl ingest``'s own
readers, with their source locations), or any table with ``id``, ``text``, ``image``,
``video`` and ``metadata`` columns (``ray.data.read_parquet``, ``from_items``, ...; other
columns go into ``metadata``, as in ``qvl ingest``; ``columns=`` maps other names).

Output columns (:data:`OUTPUT_COLUMNS`): ``id``, ``location``, ``status`` (``embedded``,
``skipped`` when the store already holds the id, ``failed``), ``error``, ``stage`` (``read``
or ``embed`` for a failed row), ``vector`` (zeros unless embedded) and ``payload`` (what the
sink needs: the normalised row, or the dead letter's row summary).
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Mapping, Sequence

import numpy as np

from embedder.errors import InputError, NotFoundError

from ..core import Failure, RetryPolicy, Row, check_dim, is_transient, retrying
from ..ingest.run import read_row
from ..ingest.sources import Columns, SourceRow, media_roots, record_to_row
from ..ingest.state import _row_summary
from ..pipeline import embed_rows
from .store import StoreRef

log = logging.getLogger(__name__)

#: the columns :func:`~connectors.ray.read_source` yields (a ``SourceRow`` each)
SOURCE_COLUMNS = ("qvl_location", "qvl_row", "qvl_error", "qvl_id")
#: the columns :class:`EmbedBatches` returns
OUTPUT_COLUMNS = ("id", "location", "status", "error", "stage", "vector", "payload")
EMBEDDED, SKIPPED, FAILED = "embedded", "skipped", "failed"


def source_rows_from_batch(batch: Mapping[str, Any], *, columns: Columns, roots: Sequence[Any]) -> list[SourceRow]:
    """The :class:`SourceRow` records of one Ray batch (``qvl`` source columns, or a plain table)."""
    if all(c in batch for c in SOURCE_COLUMNS):
        out = []
        for loc, raw, err, rid in zip(*(_values(batch[c]) for c in SOURCE_COLUMNS)):
            row = pickle.loads(raw) if raw is not None and len(raw) else None
            out.append(SourceRow(str(loc), row, err, rid))
        return out
    names = list(batch)
    values = [_values(batch[c]) for c in names]
    n = len(values[0]) if values else 0
    out = []
    for i in range(n):
        record = {c: _cell(v[i]) for c, v in zip(names, values)}
        rid = record.get(columns.id or "id")
        location = f"id {rid}" if rid is not None and rid != "" else "a row without id"
        if record.get("metadata") is None:
            record.pop("metadata", None)
        try:
            out.append(SourceRow(location, record_to_row(record, columns, base_dir=roots[0], roots=roots)))
        except InputError as exc:
            out.append(SourceRow(location, error=exc.reason, id=None if rid in (None, "") else str(rid)))
    return out


def _values(column: Any) -> list[Any]:
    return column.tolist() if isinstance(column, np.ndarray) and column.dtype != object else list(column)


def _cell(value: Any) -> Any:
    """A table cell as a plain Python value (an image array from ``read_images`` as a PIL image)."""
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint8 and value.ndim in (2, 3):
            from PIL import Image

            return Image.fromarray(value)
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and value != value:  # NaN: a missing cell in pandas
        return None
    return value


class EmbedBatches:
    """Embed a Ray batch of rows; the callable class for ``Dataset.map_batches`` (one model per actor).

    Args:
        model: a checkpoint folder, a Hugging Face id, or the URL of a ``qvl serve`` (the
            actors then call that service instead of loading a model).
        dim: the vector dimension (an MRL dim of the model).
        store: where ids already stored are looked up, to skip them before embedding
            (``StoreSink.store``); None embeds every row.
        columns: how a plain table's columns map onto a row (default: ``id``, ``text``,
            ``image``, ``video``, the rest into ``metadata``).
        media_root: folders media paths of a plain table must be in (default: the current folder).
        device: torch device of a local model (``auto``: the actor's GPU when it has one).
        api_key: the ``qvl serve`` key.
        overwrite: embed rows even when the store holds their id.
        retry: tries and backoff for transient failures (the service or the database away).

    Example:
        >>> ds = ds.map_batches(EmbedBatches, fn_constructor_kwargs={"model": "Qwen/Qwen3-VL-Embedding-2B",
        ...                     "dim": 1024, "store": sink.store}, compute=ray.data.ActorPoolStrategy(
        ...                     min_size=1, max_size=8), num_gpus=1, batch_size=64)  # doctest: +SKIP
    """

    def __init__(self, model: str, *, dim: int, store: StoreRef | None = None, columns: Columns | None = None,
                 media_root: Any = None, device: str = "auto", api_key: str | None = None,
                 overwrite: bool = False, retry: RetryPolicy = RetryPolicy()) -> None:
        from embedder.factory import is_url, load_embedder
        from embedder.hub import quiet_model_loading

        if not is_url(model):
            quiet_model_loading()
        # the client does not retry underneath: this class retries with the one policy
        self._embedder = load_embedder(model, device=device, api_key=api_key, retries=0)
        self.dim = check_dim(dim, self._embedder)  # a dim the model cannot give fails the job at once
        self._store_ref = store
        self._store: Any = None
        self._declared: frozenset[str] | None = None
        self._columns = columns or Columns()
        self._roots = media_roots(media_root, os.getcwd())
        self._look_up = store is not None and not overwrite
        self._retry = retry

    # ------------------------------------------------------------------ the store
    def _open_store(self) -> Any:
        if self._store is None and self._store_ref is not None:
            self._store = self._store_ref.open()
        return self._store

    def _declared_fields(self) -> frozenset[str]:
        if self._declared is None:
            store = self._open_store()
            try:
                self._declared = frozenset(store.fields) if store is not None else frozenset()
            except Exception as exc:  # noqa: BLE001 - no collection yet: no declared fields
                log.debug("declared fields unknown (%s); none assumed", exc)
                self._declared = frozenset()
        return self._declared

    def _present(self, ids: list[str]) -> set[str]:
        if not (self._look_up and ids):
            return set()
        store = self._open_store()
        try:
            return set(retrying("looking up existing ids", lambda: store.existing_ids(ids), self._retry))
        except NotFoundError:
            return set()  # the sink creates the collection when the first rows arrive
        except Exception as exc:  # noqa: BLE001 - without the look-up, rows are simply rewritten
            if is_transient(exc):
                raise
            log.warning("cannot look up which ids are stored (%s: %s); rows will be re-embedded and rewritten",
                        type(exc).__name__, exc)
            self._look_up = False
            return set()

    # ------------------------------------------------------------------ one batch
    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        sources = source_rows_from_batch(batch, columns=self._columns, roots=self._roots)
        n = len(sources)
        ids: list[str | None] = [sr.id for sr in sources]
        status = [FAILED] * n
        error: list[str | None] = [None] * n
        stage: list[str | None] = [None] * n
        payload: list[bytes] = [b""] * n
        vectors = np.zeros((n, self.dim), dtype=np.float32)

        def fail(i: int, where: str, reason: str) -> None:
            status[i], stage[i], error[i] = FAILED, where, reason
            row = sources[i].row
            payload[i] = pickle.dumps(_row_summary(row) if row is not None else None)

        declared = self._declared_fields()
        todo: dict[str, int] = {}  # id -> index (the last row of an id wins, as in an upsert)
        rows: dict[int, Row] = {}
        for i, sr in enumerate(sources):
            row, reason = read_row(sr, i, declared)
            if row is None:  # one odd row must not fail the block
                fail(i, "read", reason)
                continue
            ids[i] = row.id
            if row.id in todo:
                status[todo[row.id]] = SKIPPED
            todo[row.id] = i
            rows[i] = row
        for rid in self._present(list(todo)):
            status[todo.pop(rid)] = SKIPPED
        order = list(todo.values())
        if order:
            good, vecs, failures = self._embed([rows[i] for i in order])
            at = {rows[i].id: i for i in order}
            for row, vec in zip(good, vecs):
                i = at[row.id]
                vectors[i] = vec
                status[i] = EMBEDDED
                payload[i] = pickle.dumps((_portable(row), _row_summary(sources[i].row or {})))
            for f in failures:
                fail(at[f.id], "embed", f.reason)
        return {"id": np.array(ids, dtype=object), "location": np.array([sr.location for sr in sources], dtype=object),
                "status": np.array(status, dtype=object), "error": np.array(error, dtype=object),
                "stage": np.array(stage, dtype=object), "vector": vectors,
                "payload": np.array(payload, dtype=object)}

    def _embed(self, rows: list[Row]) -> tuple[list[Row], np.ndarray, list[Failure]]:
        """Embed rows; a transient failure (the service away) is retried as a whole, and raises
        when it outlasts the retries (the job stops, as ``qvl ingest`` does; a re-run resumes)."""
        def attempt() -> tuple[list[Row], np.ndarray, list[Failure]]:
            good, vecs, failures = embed_rows(self._embedder, rows, self.dim)
            transient = [f for f in failures if f.transient]
            if transient:
                from embedder.errors import UnavailableError

                raise UnavailableError(f"embedding {len(transient)} rows failed: {transient[0].reason}")
            return good, vecs, failures

        return retrying(f"embedding {len(rows)} rows", attempt, self._retry)


def _portable(row: Row) -> Row:
    """The row as the sink needs it: the stored fields, without decoded media or bytes."""
    keep = lambda v: v if isinstance(v, str) else None  # noqa: E731 - a path or URL is kept, pixels are not
    return Row(id=row.id, text=row.text, image=keep(row.image), video=keep(row.video), media=row.media,
               modality=row.modality, vector=None, metadata=row.metadata, fields=row.fields,
               instruction=row.instruction)

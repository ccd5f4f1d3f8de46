"""A ``qvl ingest`` source as a Ray dataset (:func:`read_source`), and the whole job (:func:`ingest_on_ray`).

:func:`read_source` reads a :class:`~connectors.ingest.Source` (folder, JSONL/CSV/Parquet,
SQL) with the readers ``qvl ingest`` uses, in a read task that streams blocks, so every
record keeps its location for the dead letters and ids come out exactly as in a
single-process ingest. :func:`ingest_on_ray` is ``qvl ingest --engine ray``: read, embed
on an actor pool (:class:`~connectors.ray.EmbedBatches`), write with
:class:`~connectors.ray.StoreSink`, one report.
"""
from __future__ import annotations

import logging
import os
import pickle
from typing import Any, Iterator

from ..core import RetryPolicy
from ..ingest.sources import Source
from .embed import EmbedBatches
from .sink import RayIngestReport, StoreSink

log = logging.getLogger(__name__)

try:
    from ray.data import Datasource as _Datasource
except ImportError:  # pragma: no cover - connectors.ray raises MissingDependencyError before this
    _Datasource = object  # type: ignore[assignment,misc]


class SourceDatasource(_Datasource):
    """A ``qvl ingest`` source as a Ray Data datasource (one read task streaming blocks of records).

    The records are read where the driver runs (a folder's paths are local to it: on a cluster,
    keep the media on storage every node sees at the same path, or give URLs).
    """

    def __init__(self, source: Source, *, rows_per_block: int = 256, limit: int | None = None) -> None:
        self.source = source
        self.rows_per_block = int(rows_per_block)
        self.limit = limit

    def get_name(self) -> str:
        return f"QvlSource({self.source.kind})"

    @property
    def supports_distributed_reads(self) -> bool:
        return False  # local paths: read on the driver's node

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[Any]:
        from ray.data.block import BlockMetadata
        from ray.data.datasource import ReadTask

        source, size, limit = self.source, self.rows_per_block, self.limit

        def read() -> Iterator[Any]:
            yield from _blocks(source, size, limit)

        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None)
        return [ReadTask(read, meta, per_task_row_limit=per_task_row_limit)]


def _blocks(source: Source, size: int, limit: int | None) -> Iterator[Any]:
    import pyarrow as pa

    schema = pa.schema([("qvl_location", pa.string()), ("qvl_row", pa.binary()), ("qvl_error", pa.string()),
                        ("qvl_id", pa.string())])
    cols: tuple[list, list, list, list] = ([], [], [], [])
    n = 0
    for sr in source.rows():
        if limit is not None and n >= limit:
            break
        n += 1
        for col, value in zip(cols, (sr.location, None if sr.row is None else pickle.dumps(dict(sr.row)),
                                     sr.error, sr.id)):
            col.append(value)
        if len(cols[0]) >= size:
            yield pa.Table.from_arrays([pa.array(c, type=t.type) for c, t in zip(cols, schema)], schema=schema)
            cols = ([], [], [], [])
    if cols[0]:
        yield pa.Table.from_arrays([pa.array(c, type=t.type) for c, t in zip(cols, schema)], schema=schema)


def read_source(source: Source, *, rows_per_block: int = 256, limit: int | None = None,
                block_bytes: int | None = 1 << 20) -> Any:
    """A Ray dataset of a ``qvl ingest`` source's records (the input :class:`EmbedBatches` knows).

    ``block_bytes`` caps the blocks of this dataset and of those derived from it (Ray's
    ``target_max_block_size``, 128 MiB by default, would gather a whole source of small records
    into one block: one embedding task, and no write before the last row is embedded). None
    keeps the context's setting.
    """
    import ray.data

    # one read task streams the source; its blocks are not split further (the batches are cut by map_batches)
    ds = ray.data.read_datasource(SourceDatasource(source, rows_per_block=rows_per_block, limit=limit),
                                  num_cpus=0.25, override_num_blocks=1)
    if block_bytes is not None:
        ds.context.target_max_block_size = int(block_bytes)  # this dataset's own copy of the context
    return ds


def ingest_on_ray(source: Source, target: str, *, collection: str, model: str, dim: int, batch_size: int = 32,
                  actors: int | tuple[int, int] = 1, gpus_per_actor: float = 0, cpus_per_actor: float = 1,
                  writers: int | None = None, dead_letter: str | os.PathLike | None = None,
                  overwrite: bool = False, retry: RetryPolicy = RetryPolicy(), device: str = "auto",
                  api_key: str | None = None, limit: int | None = None,
                  sink_options: dict[str, Any] | None = None) -> RayIngestReport:
    """``qvl ingest`` on Ray Data: read ``source``, embed on an actor pool, write into ``target``.

    Ray must be initialised (``ray.init(address=...)``). Rows whose id the target holds are
    skipped before embedding (a re-run adds nothing; an interrupted run resumes); every other
    row is written or dead-lettered, exactly once.

    Args:
        source: what to read (:func:`connectors.ingest.open_source`).
        target: the target URL; collection: the collection; dim: the vector dimension.
        model: a checkpoint, a hub id, or a ``qvl serve`` URL (then the actors call it).
        batch_size: rows per Ray batch given to an actor (the embedder forms token-budget
            batches inside).
        actors: the actor pool: a size, or ``(min, max)`` to autoscale.
        gpus_per_actor: GPUs each actor holds (fractions share a GPU).
        cpus_per_actor: CPUs each actor holds (its torch threads on a CPU).
        writers: at most this many write tasks at once (None: as Ray decides; a one-process
            target such as Milvus Lite is written by one actor anyway).
        dead_letter: the dead-letter JSONL.
        overwrite: re-embed and rewrite rows the target already holds.
        retry: tries and backoff for transient failures.
        device, api_key: as for :func:`embedder.load_embedder`.
        limit: stop after this many source records.
        sink_options: further keyword arguments for :func:`connectors.connect`.

    Returns:
        The :class:`RayIngestReport` (counters, ids written, failures).

    Raises:
        KeyboardInterrupt: Ctrl-C (what landed stays; run it again to continue).
        Exception: what stopped the job (a store that stayed away after the retries, ...).
    """
    import ray.data

    size = actors if isinstance(actors, tuple) else (int(actors), int(actors))
    sink = StoreSink(target, collection=collection, dim=dim, dead_letter=dead_letter, retry=retry,
                     **(sink_options or {}))
    try:
        rows = max(batch_size, 64)
        # blocks of about ``rows`` embedded rows, so that writes follow the embedding closely
        ds = read_source(source, rows_per_block=rows, limit=limit, block_bytes=max(64 << 10, rows * (4 * dim + 1024)))
        ds = ds.map_batches(EmbedBatches, batch_size=batch_size,
                            fn_constructor_kwargs={"model": model, "dim": dim, "store": sink.store,
                                                   "device": device, "api_key": api_key, "overwrite": overwrite,
                                                   "retry": retry},
                            compute=ray.data.ActorPoolStrategy(min_size=size[0], max_size=size[1]),
                            num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None)
        ds.write_datasink(sink, ray_remote_args={"num_cpus": 0.25}, concurrency=writers)
    finally:
        sink.store.stop()
    assert sink.report is not None
    return sink.report

"""Distributed ingest on Ray Data: one model per actor, the store's own bulk path, one report.

The pieces read like Ray Data::

    import ray
    from connectors.ray import EmbedBatches, StoreSink

    sink = StoreSink("postgresql://db/shop", collection="products", dim=1024, dead_letter="bad.jsonl")
    ds = ray.data.read_parquet("s3://bucket/products/")     # id, text, image, video, metadata columns
    ds = ds.map_batches(EmbedBatches, batch_size=64, num_gpus=1,
                        fn_constructor_kwargs={"model": "Qwen/Qwen3-VL-Embedding-2B", "dim": 1024,
                                               "store": sink.store},   # skip ids already stored
                        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=8))
    ds.write_datasink(sink)
    print(sink.report.written, sink.report.failed)          # one report; dead letters in bad.jsonl

* :class:`EmbedBatches` (:mod:`~connectors.ray.embed`): the callable class for ``map_batches``;
  per-row ``status`` and ``error`` columns, never a failed block for one bad row;
  ``model="http://..."`` calls a ``qvl serve`` fleet instead of loading a model.
* :class:`StoreSink` (:mod:`~connectors.ray.sink`): the ``Datasink``; collection created once,
  writes through ``store.write_rows``, one :class:`RayIngestReport` and one dead-letter file.
* :func:`read_source`, :func:`ingest_on_ray` (:mod:`~connectors.ray.job`): ``qvl ingest``'s
  readers as a dataset, and the whole job (``qvl ingest --engine ray``).
* :class:`StoreRef` (:mod:`~connectors.ray.store`): how workers reach the store (a connection
  per worker for a server; one owning actor for a file only one process may open).

Needs the ``ray`` extra (``pip install "qwen3-vl-search[ray]"``); ``import connectors`` never imports Ray.
"""
from __future__ import annotations

from ..core import import_optional

import_optional("ray.data", package="ray[data]", extra="ray", purpose="Distributed ingest on Ray Data")

from .embed import OUTPUT_COLUMNS, EmbedBatches  # noqa: E402 - after the dependency check
from .job import SourceDatasource, ingest_on_ray, read_source  # noqa: E402
from .sink import DeadLetter, RayIngestReport, StoreSink, TaskOutcome, gather  # noqa: E402
from .store import StoreRef, one_process_target  # noqa: E402

__all__ = ["EmbedBatches", "StoreSink", "StoreRef", "RayIngestReport", "DeadLetter", "TaskOutcome", "gather",
           "read_source", "ingest_on_ray", "SourceDatasource", "one_process_target", "OUTPUT_COLUMNS"]

"""Streaming ingestion: any folder, table file or SQL query into a store, resumable.

* :mod:`~connectors.ingest.sources`: what is read (:func:`open_source`, :class:`Columns`,
  :class:`SourceRow`, the folder / JSONL / CSV / Parquet / SQL readers, media roots);
* :mod:`~connectors.ingest.state`: what is remembered (the resume state file of the ids
  that landed, the dead-letter file of the rows that failed);
* :mod:`~connectors.ingest.documents`: PDF pages, slide decks and long videos as rows
  (:class:`PdfOptions`, :class:`VideoSegments`);
* :mod:`~connectors.ingest.run`: the run itself (:func:`ingest`, with read, embed and
  write overlapping, :class:`IngestSummary`, :class:`Progress`, :class:`IngestAborted`).

Re-running is idempotent: rows whose id the target already holds are skipped, and
``resume=True`` continues an interrupted run without re-embedding what landed. Transient
failures (connection reset, timeout, 503, overload: ``Failure.transient``, set from the error
by :func:`connectors.core.is_transient`) are retried with the one
:class:`~connectors.core.RetryPolicy`;
a row that cannot be read, embedded or written goes to the dead-letter JSONL with its
location and reason, and the run goes on.

Example:
    >>> import connectors
    >>> from connectors.ingest import open_source, ingest
    >>> source = open_source("photos/")                                    # doctest: +SKIP
    >>> store = connectors.connect("milvus:./qvl.db", collection="photos", embedder=emb, dim=1024)  # doctest: +SKIP
    >>> store.create(exist_ok=True)                                         # doctest: +SKIP
    >>> summary = ingest(source.rows(), store, emb, dead_letter="bad.jsonl")  # doctest: +SKIP
    >>> summary.written, summary.failed                                     # doctest: +SKIP
    (20, 1)
"""
from __future__ import annotations

from ..core import RetryPolicy, is_transient
from .run import IngestAborted, IngestInterrupted, IngestSummary, Progress, ingest
from .sources import (IMAGE_EXTENSIONS, SOURCE_KINDS, TABLE_FORMATS, VIDEO_EXTENSIONS, Columns, MediaRoot, Source,
                      SourceRow, count_folder_rows, csv_rows, display_name, folder_rows, json_safe, jsonl_rows,
                      media_roots, open_source, parquet_rows, record_to_row, sql_rows)
from .documents import PdfOptions, VideoSegments, document_rows, pdf_rows
from .state import DeadLetters, IngestState, present_ids

__all__ = [
    "SourceRow", "Columns", "Source", "open_source", "folder_rows", "jsonl_rows", "csv_rows", "parquet_rows",
    "sql_rows", "record_to_row", "RetryPolicy", "is_transient", "present_ids",
    "DeadLetters", "IngestState", "Progress", "IngestSummary", "IngestAborted", "IngestInterrupted", "ingest",
    "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "TABLE_FORMATS",
    "PdfOptions", "VideoSegments", "pdf_rows", "document_rows",
    # also importable from here, as from the old single module
    "SOURCE_KINDS", "MediaRoot", "count_folder_rows", "display_name", "json_safe", "media_roots",
]

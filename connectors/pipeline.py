"""Streaming ingestion: any folder, table file or SQL query into a store, resumable.

The pipeline has three overlapping stages joined by bounded queues, so memory stays
bounded on a corpus larger than RAM:

1. **read** (a thread): a source yields :class:`SourceRow` objects one at a time; each
   carries its source location (``photos/cat.jpg``, ``items.csv:12``) for dead letters.
2. **embed** (the calling thread): rows are validated, given an id (the source's id
   column, or :func:`connectors.core.content_id`), checked against what already landed,
   and embedded in chunks; the embedder decodes media on its own threads and forms
   token-budget batches.
3. **write** (a thread): vectors go to ``store.upsert`` as precomputed ``vector`` rows
   (the store cuts byte-sized requests), so a retried write never re-embeds.

Sources are read defensively: a folder's symbolic links that lead out of it are not
followed (unless asked) and a table's media paths must lead into its media roots, each
refused record being a dead letter with its reason (never a silent skip); file names
that are not UTF-8 are carried as ``\\xff`` escapes (a text so named is ingested, media
so named are dead letters), never stopping the run.

Re-running is idempotent: rows whose id the target already holds are skipped, and a
small state file records every id that landed, so ``resume=True`` continues an
interrupted run without re-embedding what landed (also for stores that cannot look ids
up). Transient failures (connection reset, timeout, 503, overload) are retried with
exponential backoff; a row that cannot be read, embedded or written goes to the
dead-letter JSONL with its location and reason, and the run goes on.

Example:
    >>> import connectors
    >>> from connectors.pipeline import open_source, ingest
    >>> source = open_source("photos/")                                    # doctest: +SKIP
    >>> store = connectors.connect("milvus:./qvl.db", collection="photos", embedder=emb, dim=1024)  # doctest: +SKIP
    >>> store.create(exist_ok=True)                                         # doctest: +SKIP
    >>> summary = ingest(source.rows(), store, emb, dead_letter="bad.jsonl")  # doctest: +SKIP
    >>> summary.written, summary.failed                                     # doctest: +SKIP
    (20, 1)
"""
from __future__ import annotations

import csv
import datetime as _dt
import decimal
import json
import logging
import math
import os
import pathlib
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence, Union

import numpy as np

from embedder.errors import (ConnectorError, InputError, MissingDependencyError, OverloadedError, QVLError,
                             RemoteError, UnavailableError)

from .core import Row, normalize_row

log = logging.getLogger(__name__)

__all__ = [
    "SourceRow", "Columns", "Source", "open_source", "folder_rows", "jsonl_rows", "csv_rows", "parquet_rows",
    "sql_rows", "record_to_row", "RetryPolicy", "is_transient", "transient_reason", "present_ids",
    "DeadLetters", "IngestState", "Progress", "IngestSummary", "IngestAborted", "IngestInterrupted", "ingest",
    "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "TABLE_FORMATS",
]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"})
CAPTION_EXTENSION = ".txt"
TEXT_EXTENSIONS = frozenset({".txt", ".md"})
#: file suffix -> table format
TABLE_FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet",
                 ".pq": "parquet"}
SOURCE_KINDS = ("folder", "jsonl", "csv", "parquet", "sql")
_REMOTE_PREFIXES = ("http://", "https://", "data:")
#: one folder, or several, that media paths of table rows must be in (the first is the base of relative paths)
MediaRoot = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]], None]


# ============================================================================ sources
@dataclass(frozen=True)
class SourceRow:
    """One record read from a source.

    Attributes:
        location: where it came from (``photos/cat.jpg (+cat.txt)``, ``items.csv:12``,
            ``sql:row 5``), written to the dead letters.
        row: the store row (``id``?, ``text``, ``image``, ``video``, ``metadata``), or None
            when the record could not be read.
        error: why the record could not be read (then ``row`` is None).
        id: the record's id when it has one but could not be read otherwise.
    """

    location: str
    row: Mapping[str, Any] | None = None
    error: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Columns:
    """How a table's columns map onto a row.

    A column left as None falls back to the column of the same name (``id``, ``text``,
    ``image``, ``video``) when the table has one. Named columns must exist.

    Attributes:
        id: the id column (default ``id`` if present; else ids are content hashes).
        text: the text column.
        image: the image column (paths relative to the table's folder, URLs, or bytes).
        video: the video column (paths relative to the table's folder, or URLs).
        meta: columns stored in ``metadata``; None means every other column, ``()`` none.
    """

    id: str | None = None
    text: str | None = None
    image: str | None = None
    video: str | None = None
    meta: tuple[str, ...] | None = None

    def named(self) -> list[str]:
        """The columns the user named explicitly (which must exist)."""
        return [c for c in (self.id, self.text, self.image, self.video, *(self.meta or ())) if c]

    def check(self, available: Sequence[str], where: str) -> None:
        """Raise :class:`InputError` if a named column is not among ``available``."""
        missing = [c for c in self.named() if c not in available]
        if missing:
            raise InputError(f"{where} has no column(s) {missing}; its columns are {list(available)}")


def _read_text_file(path: pathlib.Path) -> tuple[str | None, str | None]:
    """``(text, None)`` or ``(None, reason)``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"cannot read text file: {exc.strerror or exc}"
    try:
        text = data.decode("utf-8-sig").strip()
    except UnicodeDecodeError as exc:
        return None, f"text file is not UTF-8 ({exc.reason} at byte {exc.start})"
    if not text:
        return None, "empty text file"
    return text, None


def _group_folder(files: Sequence[str]) -> tuple[list[tuple[str, str | None]], list[str]]:
    """Split one directory's file names into ``(media, caption sidecar)`` pairs and texts."""
    by_stem: dict[str, list[str]] = {}
    for name in files:
        by_stem.setdefault(os.path.splitext(name)[0], []).append(name)
    pairs: list[tuple[str, str | None]] = []
    texts: list[str] = []
    for stem in sorted(by_stem):
        names = by_stem[stem]
        media = [n for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS]
        captions = [n for n in names if os.path.splitext(n)[1].lower() == CAPTION_EXTENSION]
        others = [n for n in names if os.path.splitext(n)[1].lower() in TEXT_EXTENSIONS and n not in captions]
        caption = captions[0] if media and captions else None
        pairs += [(m, caption) for m in media]
        texts += others + ([] if media else captions)
    return pairs, texts


def display_name(name: str) -> str:
    """A file name as valid text: bytes that are not UTF-8 become ``\\xff`` escapes.

    ``os.listdir`` hands undecodable bytes back as lone surrogates (``surrogateescape``),
    which no database, JSON writer or terminal accepts; this is the form that is stored,
    shown and written to the dead letters. Valid names are returned unchanged.
    """
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _inside(path: pathlib.Path, root: pathlib.Path) -> bool:
    return path == root or root in path.parents


def _walk(root: pathlib.Path, recursive: bool, follow_links: bool
          ) -> Iterator[tuple[pathlib.Path, list[str], list[str]]]:
    """``(folder, file names, names of linked folders not descended into)`` under ``root``.

    Without ``follow_links``, folder links are not descended into (their files are listed
    under their real place when that is inside ``root``); with it they are, once each.
    """
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_links):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link cycle, or a folder reached twice through links
            dirnames[:] = []
            continue
        seen.add(real)
        linked = sorted(d for d in dirnames if not d.startswith(".") and os.path.islink(os.path.join(dirpath, d)))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if recursive else []
        outside = [] if follow_links or not recursive else [
            d for d in linked if not _inside(pathlib.Path(os.path.realpath(os.path.join(dirpath, d))), root)]
        yield pathlib.Path(dirpath), sorted(f for f in filenames if not f.startswith(".")), outside


def _link_problem(path: pathlib.Path, root: pathlib.Path, follow_links: bool) -> str | None:
    """Why ``path`` (a file under ``root``) is not read, or None: a link out of ``root``, a broken link."""
    if not path.is_symlink() or follow_links:
        return None
    target = pathlib.Path(os.path.realpath(path))
    if not target.exists():
        return f"broken symbolic link (to {display_name(str(target))!r})"
    if not _inside(target, root):
        return (f"symbolic link to {display_name(str(target))!r}, outside the source folder: not followed "
                "(pass --follow-links to follow links)")
    return None


def folder_rows(root: str | os.PathLike, *, recursive: bool = True, follow_links: bool = False
                ) -> Iterator[SourceRow]:
    """Rows for the images, videos and text files under ``root`` (one directory at a time).

    ``name.txt`` next to ``name.jpg`` (or a video) is its caption: together they make one
    fused item. Other ``.txt`` / ``.md`` files are text rows. Hidden files and other
    extensions are ignored. Media are referred to by absolute path; ``metadata.path``
    holds the path relative to ``root``.

    A symbolic link that resolves outside ``root`` (a file, or a folder) is not followed:
    it becomes a failed row naming its target, never a silent skip. A file whose name is
    not valid UTF-8 is named with ``\\xff`` escapes (:func:`display_name`); a text file so
    named is ingested, a media file is a failed row (a database cannot store its path).

    Args:
        root: the folder.
        recursive: descend into sub-folders (hidden ones are skipped).
        follow_links: follow every symbolic link, wherever it points.
    """
    base = pathlib.Path(root).expanduser().resolve()
    for folder, files, outside in _walk(base, recursive, follow_links):
        for name in outside:
            rel = display_name((folder / name).relative_to(base).as_posix())
            target = display_name(os.path.realpath(folder / name))
            yield SourceRow(rel, error=f"symbolic link to the folder {target!r}, outside the source folder: not "
                                       "followed (pass --follow-links to follow links)")
        pairs, texts = _group_folder(files)
        for name, caption in pairs:
            path = folder / name
            rel = display_name(path.relative_to(base).as_posix())
            kind = "video" if path.suffix.lower() in VIDEO_EXTENSIONS else "image"
            location = rel if caption is None else f"{rel} (+{display_name(caption)})"
            problem = _link_problem(path, base, follow_links) or (
                None if caption is None else _link_problem(folder / caption, base, follow_links))
            if problem is None and display_name(str(path)) != str(path):
                problem = (f"the file name is not valid UTF-8 ({rel!r}); a database cannot store its path: "
                           "rename the file")
            if problem is not None:
                yield SourceRow(location, error=problem)
                continue
            row: dict[str, Any] = {kind: str(path), "metadata": {"path": rel}}
            if caption is not None:
                text, err = _read_text_file(folder / caption)
                if err is not None:
                    yield SourceRow(location, error=f"caption {display_name(caption)}: {err}")
                    continue
                row["text"] = text
            yield SourceRow(location, row)
        for name in texts:
            path = folder / name
            rel = display_name(path.relative_to(base).as_posix())
            problem = _link_problem(path, base, follow_links)
            if problem is not None:
                yield SourceRow(rel, error=problem)
                continue
            text, err = _read_text_file(path)
            yield SourceRow(rel, error=err) if err else SourceRow(rel, {"text": text, "metadata": {"path": rel}})


def count_folder_rows(root: str | os.PathLike, *, recursive: bool = True, follow_links: bool = False) -> int:
    """How many rows :func:`folder_rows` will yield (a quick walk; nothing is read)."""
    total = 0
    for _, files, outside in _walk(pathlib.Path(root).expanduser().resolve(), recursive, follow_links):
        pairs, texts = _group_folder(files)
        total += len(outside) + len(pairs) + len(texts)
    return total


def json_safe(value: Any) -> Any:
    """A JSON-serialisable version of a table value (bytes -> dropped by the caller)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return json_safe(float(value))
    if isinstance(value, decimal.Decimal):
        return json_safe(float(value))
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def media_roots(media_root: str | os.PathLike | Sequence[str | os.PathLike] | None,
                default: str | os.PathLike) -> tuple[pathlib.Path, ...]:
    """The folders media paths of table rows may be in, resolved; the first is the base of relative paths.

    ``media_root`` is one folder or several (None: ``default``, the table's folder).
    """
    if media_root is None or (not isinstance(media_root, (str, os.PathLike)) and not list(media_root)):
        given: list[Any] = [default]
    elif isinstance(media_root, (str, os.PathLike)):
        given = [media_root]
    else:
        given = list(media_root)
    return tuple(pathlib.Path(os.path.realpath(pathlib.Path(r).expanduser())) for r in given)


def _media_value(value: Any, kind: str, roots: Sequence[pathlib.Path]) -> Any:
    """Resolve a media cell: relative paths against ``roots[0]``; the file must exist inside one of ``roots``.

    A path (or a link) leading out of every root is refused: a table's paths come from
    whoever wrote the table, and ``/etc/passwd`` is not a picture to hand to a database.
    """
    if isinstance(value, memoryview):
        value = value.tobytes()
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise InputError(f"{kind} is an empty byte string")
        return bytes(value)
    if not isinstance(value, str):
        raise InputError(f"{kind} must be a path, a URL or bytes, got {type(value).__name__}")
    value = value.strip()
    if value.lower().startswith(_REMOTE_PREFIXES):
        return value
    if value.lower().startswith("file://"):
        value = value[7:]
    path = pathlib.Path(value).expanduser()
    if not path.is_absolute():
        path = roots[0] / path
    if not path.is_file():
        raise InputError(f"{kind} file not found: {str(path)!r}" if not path.exists()
                         else f"{kind} path is not a file: {str(path)!r}")
    real = pathlib.Path(os.path.realpath(path))
    if not any(_inside(real, root) for root in roots):
        where = f" (it resolves to {str(real)!r})" if real != path else ""
        allowed = ", ".join(repr(str(r)) for r in roots)
        raise InputError(f"{kind} path {str(path)!r}{where} is outside the media root ({allowed}); "
                         "allow its folder with --media-root")
    return str(path)


def record_to_row(record: Mapping[str, Any], columns: Columns, *, base_dir: str | os.PathLike,
                  roots: Sequence[str | os.PathLike] | None = None) -> dict[str, Any]:
    """Map one table record onto a store row.

    Args:
        record: column -> value.
        columns: the column mapping.
        base_dir: folder that relative media paths are resolved against.
        roots: folders media files must be in (default: ``base_dir`` only).

    Returns:
        A row dict (``id`` when the record has one, ``text``, ``image``, ``video``, ``metadata``).

    Raises:
        InputError: an empty id, a missing media file, a media path outside the roots, or
            no text, image or video.
    """
    allowed = media_roots([base_dir, *(roots or ())], base_dir)
    id_col = columns.id or "id"
    text_col, image_col, video_col = columns.text or "text", columns.image or "image", columns.video or "video"
    row: dict[str, Any] = {}
    rid = record.get(id_col)
    if _empty(rid):
        if columns.id:
            raise InputError(f"empty id in column {id_col!r}")
    else:
        rid = json_safe(rid)
        row["id"] = rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else str(rid)
    text = record.get(text_col)
    if not _empty(text):
        row["text"] = text if isinstance(text, str) else str(json_safe(text))
    for kind, col in (("image", image_col), ("video", video_col)):
        value = record.get(col)
        if not _empty(value):
            row[kind] = _media_value(value, kind, allowed)
    if not any(k in row for k in ("text", "image", "video")):
        raise InputError(f"row has no text, image or video (looked in columns {text_col!r}, {image_col!r}, "
                         f"{video_col!r})")
    metadata: dict[str, Any] = {}
    nested = record.get("metadata")
    if isinstance(nested, Mapping) and (columns.meta is None or "metadata" in columns.meta):
        metadata.update(json_safe(nested))
    mapped = {id_col, text_col, image_col, video_col, "metadata"}
    meta_cols = columns.meta if columns.meta is not None else [c for c in record if c not in mapped]
    for col in meta_cols:
        if col == "metadata":
            continue
        value = record.get(col)
        if isinstance(value, (bytes, bytearray, memoryview)):
            continue  # binary cells are not metadata
        metadata[str(col)] = json_safe(value)
    row["metadata"] = metadata
    return row


def _mapped(location: str, record: Any, columns: Columns, roots: tuple[pathlib.Path, ...]) -> SourceRow:
    if not isinstance(record, Mapping):
        return SourceRow(location, error=f"record is a {type(record).__name__}, not an object")
    try:
        return SourceRow(location, record_to_row(record, columns, base_dir=roots[0], roots=roots))
    except InputError as exc:
        rid = record.get(columns.id or "id")
        return SourceRow(location, error=exc.reason, id=None if _empty(rid) else str(json_safe(rid)))


def jsonl_rows(path: str | os.PathLike, columns: Columns = Columns(), *,
               media_root: MediaRoot = None) -> Iterator[SourceRow]:
    """Rows of a JSON-lines file (one object per line; blank lines are skipped).

    Relative media paths are resolved against ``media_root`` (default: the file's folder).
    """
    p = pathlib.Path(path)
    base = media_roots(media_root, p.resolve().parent)
    with p.open("r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            location = f"{p.name}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                # json's own messages may end in "at" ("Unterminated string starting at")
                joint = " " if exc.msg.endswith(" at") else " at "
                yield SourceRow(location, error=f"invalid JSON: {exc.msg}{joint}column {exc.colno}")
                continue
            yield _mapped(location, record, columns, base)


def csv_rows(path: str | os.PathLike, columns: Columns = Columns(), *,
             media_root: MediaRoot = None, delimiter: str | None = None) -> Iterator[SourceRow]:
    """Rows of a CSV (or ``.tsv``) file with a header line; empty cells are missing values.

    Raises:
        InputError: a named column is not in the header.
    """
    p = pathlib.Path(path)
    base = media_roots(media_root, p.resolve().parent)
    sep = delimiter or ("\t" if p.suffix.lower() == ".tsv" else ",")
    with p.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=sep)
        columns.check(reader.fieldnames or [], p.name)
        for record in reader:
            location = f"{p.name}:{reader.line_num}"
            clean = {k: (None if v == "" else v) for k, v in record.items() if k is not None}
            yield _mapped(location, clean, columns, base)


def parquet_rows(path: str | os.PathLike, columns: Columns = Columns(), *,
                 media_root: MediaRoot = None, batch_rows: int = 512) -> Iterator[SourceRow]:
    """Rows of a Parquet file, read one record batch at a time.

    Raises:
        MissingDependencyError: pyarrow is not installed.
        InputError: a named column is not in the schema.
    """
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError("pyarrow", "ingest", "Reading Parquet files") from exc
    p = pathlib.Path(path)
    base = media_roots(media_root, p.resolve().parent)
    pf = pq.ParquetFile(str(p))
    columns.check(pf.schema_arrow.names, p.name)
    n = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows):
            for record in batch.to_pylist():
                n += 1
                yield _mapped(f"{p.name}:row {n}", record, columns, base)
    finally:
        pf.close()


def sql_rows(url: str, query: str, columns: Columns = Columns(), *,
             media_root: MediaRoot = None, fetch_rows: int = 500) -> Iterator[SourceRow]:
    """Rows of a SQL query over any SQLAlchemy URL, streamed with a server-side cursor.

    Relative media paths are resolved against ``media_root`` (default: the current folder).

    Raises:
        MissingDependencyError: SQLAlchemy is not installed.
        InputError: a named column is not among the query's columns.
    """
    try:
        import sqlalchemy as sa
    except ImportError as exc:
        raise MissingDependencyError("sqlalchemy", "ingest", "Reading from SQL databases") from exc
    base = media_roots(media_root, pathlib.Path.cwd())
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=fetch_rows).execute(sa.text(query))
            columns.check(list(result.keys()), "the query")
            for n, record in enumerate(result.mappings(), 1):
                yield _mapped(f"sql:row {n}", dict(record), columns, base)
    finally:
        engine.dispose()


def _count_lines(path: pathlib.Path) -> int:
    n = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            n += block.count(b"\n")
    return n


@dataclass(frozen=True)
class Source:
    """A source to ingest: its kind, where it is, and how its records map onto rows.

    Build one with :func:`open_source`; :meth:`rows` streams it (each call starts over).

    Attributes:
        kind: ``folder``, ``jsonl``, ``csv``, ``parquet`` or ``sql``.
        location: the folder / file path, or the SQLAlchemy URL.
        query: the SQL query (``sql`` only).
        columns: the column mapping (tables and SQL).
        media_root: folders media paths of tables may be in; the first is the base of relative
            paths (default: the table's folder, the current folder for SQL).
        recursive: descend into sub-folders (``folder`` only).
        follow_links: follow symbolic links out of the folder (``folder`` only).
    """

    kind: str
    location: str
    query: str | None = None
    columns: Columns = field(default_factory=Columns)
    media_root: tuple[str, ...] | None = None
    recursive: bool = True
    follow_links: bool = False

    def rows(self) -> Iterator[SourceRow]:
        """Stream the source's records as :class:`SourceRow` objects."""
        if self.kind == "folder":
            return folder_rows(self.location, recursive=self.recursive, follow_links=self.follow_links)
        if self.kind == "sql":
            return sql_rows(self.location, self.query or "", self.columns, media_root=self.media_root)
        reader = {"jsonl": jsonl_rows, "csv": csv_rows, "parquet": parquet_rows}[self.kind]
        return reader(self.location, self.columns, media_root=self.media_root)

    def estimate(self) -> int | None:
        """About how many records the source holds (None when it cannot tell cheaply)."""
        p = pathlib.Path(self.location)
        try:
            if self.kind == "folder":
                return count_folder_rows(p, recursive=self.recursive, follow_links=self.follow_links)
            if self.kind == "jsonl":
                return _count_lines(p)
            if self.kind == "csv":
                return max(0, _count_lines(p) - 1)
            if self.kind == "parquet":
                import pyarrow.parquet as pq

                return int(pq.ParquetFile(str(p)).metadata.num_rows)
        except (OSError, ImportError, ValueError) as exc:
            log.debug("cannot estimate the size of %s: %s", self.location, exc)
        return None

    def describe(self) -> str:
        """A short human description (also the source's identity in the state file)."""
        if self.kind == "sql":
            return f"sql:{_redact(self.location)} {self.query}"
        return f"{self.kind}:{pathlib.Path(self.location).expanduser().resolve()}"


def _redact(url: str) -> str:
    """A URL with its password replaced by ``***``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def open_source(source: str | os.PathLike | None = None, *, from_sql: str | None = None, query: str | None = None,
                fmt: str | None = None, columns: Columns = Columns(), media_root: MediaRoot = None,
                recursive: bool = True, follow_links: bool = False) -> Source:
    """Describe a source: a folder, a JSONL / CSV / Parquet file, or a SQL query.

    Args:
        source: a folder or a table file (format from its suffix unless ``fmt`` is given).
        from_sql: a SQLAlchemy URL (``sqlite:///shop.db``, ``postgresql://...``); needs ``query``.
        query: the SQL query whose rows are ingested.
        fmt: ``jsonl``, ``csv`` or ``parquet``, overriding the suffix.
        columns: the column mapping for tables.
        media_root: the folder (or folders) media paths of table rows must be in; the first
            is the base of relative paths (default: the table's folder; the current folder for SQL).
        recursive: descend into sub-folders of a folder source.
        follow_links: follow symbolic links that lead out of a folder source.

    Raises:
        InputError: the source does not exist, its format is unknown, or arguments conflict.
    """
    if media_root is None or isinstance(media_root, (str, os.PathLike)):
        root = (str(media_root),) if media_root else None
    else:
        root = tuple(str(r) for r in media_root) or None
    if from_sql:
        if source:
            raise InputError("give either a SOURCE path or --from-sql, not both")
        if not query or not query.strip():
            raise InputError("--from-sql needs --query \"SELECT ...\"")
        return Source("sql", from_sql, query=query, columns=columns, media_root=root)
    if source is None:
        raise InputError("nothing to ingest: give a folder, a JSONL/CSV/Parquet file, or --from-sql URL --query ...")
    p = pathlib.Path(source).expanduser()
    if not p.exists():
        raise InputError(f"source {str(source)!r} does not exist")
    if p.is_dir():
        if fmt:
            raise InputError(f"--format {fmt} applies to files, but {str(source)!r} is a folder")
        return Source("folder", str(p), recursive=recursive, follow_links=follow_links)
    kind = fmt or TABLE_FORMATS.get(p.suffix.lower())
    if kind not in ("jsonl", "csv", "parquet"):
        raise InputError(f"cannot tell the format of {str(source)!r}: expected a folder or a file ending in "
                         f"{sorted(TABLE_FORMATS)} (or pass --format jsonl|csv|parquet)")
    return Source(kind, str(p), columns=columns, media_root=root)


# ============================================================================ retries
_TRANSIENT_REASON = re.compile(
    r"ConnectionError|ConnectionReset|ConnectionRefused|ConnectionAborted|BrokenPipe|TimeoutError|timed? ?out|"
    r"UnavailableError|OverloadedError|\b50[234]\b|connection reset|temporarily unavailable|service unavailable|"
    r"UNAVAILABLE|DEADLINE_EXCEEDED", re.IGNORECASE)


# httpx's transport errors, matched by name so that this module does not import httpx
_TRANSIENT_NAMES = frozenset({"ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout",
                              "TimeoutException", "RemoteProtocolError", "ReadError", "WriteError"})


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or an error it was raised from) says a service is away for now, not
    that the row is bad: a refused or lost connection, a timeout, an overloaded service
    (:class:`~embedder.errors.OverloadedError`, HTTP 429 or any 5xx from ``qvl serve``, a
    :class:`~embedder.errors.RemoteError` that could not connect), an unavailable database.

    The one rule for every retry and back-off: ``qvl ingest``'s retries and the Postgres
    sync worker's outage handling both use it.

    Example:
        >>> is_transient(ConnectionRefusedError(111, "Connection refused"))
        True
        >>> is_transient(InputError("cannot open image x.png"))
        False
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, InputError):
            return False
        if isinstance(e, (UnavailableError, OverloadedError, ConnectionError, TimeoutError)):
            return True
        if isinstance(e, RemoteError) and ((e.status is not None and (e.status >= 500 or e.status == 429))
                                           or e.code in ("timeout", "unavailable")):
            return True
        if type(e).__name__ in _TRANSIENT_NAMES:
            return True
        if not isinstance(e, QVLError) and type(e).__module__.split(".")[0] in (
                "pymilvus", "grpc", "httpx", "psycopg", "weaviate") and \
                _TRANSIENT_REASON.search(f"{type(e).__name__}: {e}"):
            return True
        e = e.__cause__ or e.__context__
    return False


def transient_reason(reason: str) -> bool:
    """True when a failure reason from an :class:`~connectors.core.UpsertReport` looks transient."""
    return bool(_TRANSIENT_REASON.search(reason))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures.

    Attributes:
        attempts: tries in all (1 = no retry).
        backoff: first wait in seconds; doubled after each failed try.
        max_backoff: longest wait.
    """

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        return min(self.max_backoff, self.backoff * (2 ** attempt))


def _retrying(what: str, fn: Callable[[], Any], policy: RetryPolicy, sleep: Callable[[float], None]) -> Any:
    for attempt in range(max(1, policy.attempts)):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - re-raised unless transient
            if not is_transient(exc) or attempt + 1 >= policy.attempts:
                raise
            wait = policy.delay(attempt)
            log.warning("%s failed (%s: %s); retry %d/%d in %.1f s", what, type(exc).__name__, exc,
                        attempt + 1, policy.attempts - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


# ============================================================================ landed ids
def present_ids(store: Any, ids: Sequence[str]) -> set[str] | None:
    """Which of ``ids`` the store already holds, or None when the store cannot tell.

    Every bundled connector offers ``store.existing_ids(ids)``; a third-party store
    without it relies on the resume state file.
    """
    if not ids:
        return set()
    fn = getattr(store, "existing_ids", None)
    if callable(fn):
        return {str(i) for i in fn(list(ids))}
    return None


# ============================================================================ dead letters and state
class DeadLetters:
    """The dead-letter JSONL: one line per failed row (thread-safe, created on first use).

    Each line holds ``location``, ``id``, ``stage`` (``read``, ``embed``, ``write``),
    ``reason`` and ``row`` (the row's text, media and metadata, when it was read).
    A new run starts the file afresh (a resumed run retries the previous failures).
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = pathlib.Path(path) if path else None
        self.count = 0
        self._fh: Any = None
        self._lock = threading.Lock()
        if self.path is not None and self.path.exists():
            self.path.unlink()

    def write(self, location: str, *, stage: str, reason: str, row_id: str | None = None,
              row: Mapping[str, Any] | None = None) -> None:
        """Record one failed row."""
        record = {"location": location, "id": row_id, "stage": stage, "reason": reason,
                  "row": _row_summary(row) if row is not None else None}
        with self._lock:
            self.count += 1
            log.info("dead letter: %s (%s): %s", location, stage, reason)
            if self.path is None:
                return
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # a name that is not UTF-8 (a lone surrogate) is written as a \udcff escape, never lost
                self._fh = self.path.open("a", encoding="utf-8", errors="backslashreplace")
            self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._fh.flush()

    def close(self) -> None:
        """Close the file. Idempotent."""
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


def _row_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("id", "text", "image", "video", "metadata"):
        value = row.get(key)
        if value is None:
            continue
        if isinstance(value, (bytes, bytearray)):
            value = f"<{len(value)} bytes>"
        elif isinstance(value, str) and key == "text" and len(value) > 500:
            value = value[:500] + "..."
        out[key] = json_safe(value)
    return out


class IngestState:
    """A small append-only file of the ids that landed, so that a run can resume.

    The first line identifies the ingest (source, target, collection, dim); each further
    line is a JSON list of ids written by one batch, appended after the write succeeded.
    A torn last line (the process was killed while writing it) is ignored.

    Args:
        path: the state file.
        key: what identifies this ingest; a resumed run must match it.
        resume: keep (and load) the ids of an earlier run; otherwise start afresh.

    Raises:
        InputError: ``resume`` and the file belongs to another ingest.
    """

    VERSION = 1

    def __init__(self, path: str | os.PathLike, *, key: Mapping[str, Any], resume: bool) -> None:
        self.path = pathlib.Path(path)
        self.key = {str(k): json_safe(v) for k, v in key.items()}
        self.landed: set[str] = set()
        self.resumed = False
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume and self.path.exists():
            self._load()
            self.resumed = True
            self._fh = self.path.open("a", encoding="utf-8")
        else:
            if resume:
                log.info("no state file at %s: starting from the beginning", self.path)
            self._fh = self.path.open("w", encoding="utf-8")
            self._fh.write(json.dumps({"qvl_ingest_state": self.VERSION, **self.key}) + "\n")
            self._fh.flush()

    def _load(self) -> None:
        with self.path.open("r", encoding="utf-8") as fh:
            header_line = fh.readline()
            try:
                header = json.loads(header_line)
            except json.JSONDecodeError:
                header = None
            if not isinstance(header, dict) or header.get("qvl_ingest_state") != self.VERSION:
                raise InputError(f"{self.path} is not a qvl ingest state file")
            theirs = {k: header.get(k) for k in self.key}
            if theirs != self.key:
                diff = {k: (theirs[k], self.key[k]) for k in self.key if theirs[k] != self.key[k]}
                raise InputError(f"state file {self.path} belongs to another ingest ({diff} as (then, now)); "
                                 "drop --resume to start afresh, or pass another --state file")
            for line in fh:
                try:
                    ids = json.loads(line)
                except json.JSONDecodeError:
                    continue  # torn last line
                if isinstance(ids, list):
                    self.landed.update(str(i) for i in ids)

    def record(self, ids: Sequence[str]) -> None:
        """Append the ids of one batch that landed."""
        if not ids:
            return
        with self._lock:
            self.landed.update(ids)
            self._fh.write(json.dumps(list(ids)) + "\n")
            self._fh.flush()

    def close(self) -> None:
        """Close the file. Idempotent."""
        with self._lock:
            if not self._fh.closed:
                self._fh.close()


# ============================================================================ the pipeline
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


def ingest(rows: Iterable[SourceRow], store: Any, embedder: Any, *, dim: int | None = None, batch_size: int = 32,
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
            payload = [dict(by_id[i][0].row or {}, id=i, vector=by_id[i][2]) for i in todo]
            try:
                report = store.upsert(payload)
            except ConnectorError as exc:
                if not is_transient(exc):
                    raise
                report_failed = [(i, f"{type(exc).__name__}: {exc}") for i in todo]
                report_written: list[str] = []
            except Exception as exc:  # noqa: BLE001 - transient ones retried, others reported per row
                report_failed = [(i, f"{type(exc).__name__}: {exc}") for i in todo]
                report_written = []
            else:
                report_written, report_failed = list(report.written), list(report.failed)
            if report_written:
                if state is not None:
                    state.record(report_written)
                with c.lock:
                    c.written += len(report_written)
                progress()
            retryable = [(i, r) for i, r in report_failed if transient_reason(r) and i in by_id]
            final = [(i, r) for i, r in report_failed if (i, r) not in retryable]
            for i, reason in final:
                if i in by_id:
                    fail(by_id[i][0], "write", reason, i)
            if not retryable:
                return
            if attempt + 1 >= retry.attempts:
                raise UnavailableError(f"writing {len(retryable)} rows failed after {retry.attempts} tries: "
                                       f"{retryable[0][1]}")
            wait = retry.delay(attempt)
            log.warning("write of %d rows failed transiently (%s); retry %d/%d in %.1f s", len(retryable),
                        retryable[0][1], attempt + 1, retry.attempts - 1, wait)
            sleep(wait)
            todo = [i for i, _ in retryable]

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
                    if sr.error is not None or sr.row is None:
                        fail(sr, "read", sr.error or "unreadable record")
                        continue
                    try:
                        row = normalize_row(sr.row, index - 1)
                    except InputError as exc:
                        fail(sr, "read", exc.reason)
                        continue
                    except Exception as exc:  # noqa: BLE001 - one odd row must not stop the run
                        fail(sr, "read", f"{type(exc).__name__}: {exc}")
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
                        present = _retrying("looking up existing ids", lambda: present_ids(store, list(todo)),
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
                        result = _retrying(f"embedding {len(items)} rows",
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

"""Ingest sources: a folder, a JSONL/CSV/Parquet file or a SQL query, read as :class:`SourceRow` records.

:func:`open_source` picks the reader (:func:`folder_rows`, :func:`jsonl_rows`,
:func:`csv_rows`, :func:`parquet_rows`, :func:`sql_rows`); :class:`Columns` maps a table's
columns onto a row. Each record carries its source location (``photos/cat.jpg``,
``items.csv:12``) for the dead letters.

A folder's PDFs and slide decks give one row per page, and its long videos one row per
window (:mod:`connectors.ingest.documents`). Sources are read defensively: a folder's symbolic links that lead out of it are not
followed (unless asked) and a table's media paths must lead into its media roots, each
refused record being a dead letter with its reason (never a silent skip); file names
that are not UTF-8 are carried as ``\\xff`` escapes (a text so named is ingested, media
so named are dead letters), never stopping the run.

(Over 600 lines: the readers share the row mapping, the media-root and link checks and
the ``Source`` description; the document and video specifics live in ``documents``.)
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
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence, Union

import numpy as np

from embedder.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    from .documents import PdfOptions, VideoSegments

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"})
CAPTION_EXTENSION = ".txt"
TEXT_EXTENSIONS = frozenset({".txt", ".md"})
DOCUMENT_EXTENSIONS = frozenset({".pdf", ".pptx", ".ppt", ".odp", ".key"})  # documents.DOCUMENT_EXTENSIONS
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


def _group_folder(files: Sequence[str]) -> tuple[list[tuple[str, str | None]], list[str], list[str]]:
    """Split one directory's file names into ``(media, caption sidecar)`` pairs, texts and documents."""
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
    docs = [n for n in files if os.path.splitext(n)[1].lower() in DOCUMENT_EXTENSIONS]
    return pairs, texts, docs


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


def folder_rows(root: str | os.PathLike, *, recursive: bool = True, follow_links: bool = False,
                pdf: "PdfOptions | None" = None, video_segments: "VideoSegments | None" = None
                ) -> Iterator[SourceRow]:
    """Rows for the images, videos, text files, PDFs and slide decks under ``root`` (one directory at a time).

    ``name.txt`` next to ``name.jpg`` (or a video) is its caption: together they make one
    fused item. Other ``.txt`` / ``.md`` files are text rows. A PDF or a deck gives one row
    per page, a long video one row per window (with its caption each; see
    :mod:`connectors.ingest.documents`). Hidden files and other extensions are ignored.
    Media are referred to by absolute path; ``metadata.path`` holds the path relative to ``root``.

    A symbolic link that resolves outside ``root`` (a file, or a folder) is not followed:
    it becomes a failed row naming its target, never a silent skip. A file whose name is
    not valid UTF-8 is named with ``\\xff`` escapes (:func:`display_name`); a text file so
    named is ingested, a media file is a failed row (a database cannot store its path).

    Args:
        root: the folder.
        recursive: descend into sub-folders (hidden ones are skipped).
        follow_links: follow every symbolic link, wherever it points.
        pdf: how PDF pages and decks become rows (default :class:`~connectors.ingest.documents.PdfOptions`).
        video_segments: how videos are cut (default: automatic, see
            :class:`~connectors.ingest.documents.VideoSegments`).
    """
    from .documents import PdfOptions, VideoSegments, document_rows, video_rows

    pdf = pdf or PdfOptions()
    video_segments = video_segments or VideoSegments()
    base = pathlib.Path(root).expanduser().resolve()
    for folder, files, outside in _walk(base, recursive, follow_links):
        for name in outside:
            rel = display_name((folder / name).relative_to(base).as_posix())
            target = display_name(os.path.realpath(folder / name))
            yield SourceRow(rel, error=f"symbolic link to the folder {target!r}, outside the source folder: not "
                                       "followed (pass --follow-links to follow links)")
        pairs, texts, docs = _group_folder(files)
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
            if kind == "video":
                yield from video_rows(path, rel, location, video_segments, row)
            else:
                yield SourceRow(location, row)
        for name in docs:
            path = folder / name
            rel = display_name(path.relative_to(base).as_posix())
            problem = _link_problem(path, base, follow_links)
            if problem is None and display_name(str(path)) != str(path):
                problem = (f"the file name is not valid UTF-8 ({rel!r}); a database cannot store its path: "
                           "rename the file")
            if problem is not None:
                yield SourceRow(rel, error=problem)
                continue
            yield from document_rows(path, rel, pdf)
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
    from .documents import pdf_page_count

    total = 0
    for folder, files, outside in _walk(pathlib.Path(root).expanduser().resolve(), recursive, follow_links):
        pairs, texts, docs = _group_folder(files)
        total += len(outside) + len(pairs) + len(texts)
        total += sum((name.lower().endswith(".pdf") and pdf_page_count(folder / name)) or 1 for name in docs)
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

    A metadata cell that is a number (``79``, ``-3``, ``9.5``, ``1e-3``) is stored as one, so a
    filter such as ``{"price": {"$lt": 100}}`` compares numbers; a leading zero (``007``) keeps a
    cell text, and the id, text and media columns are always text.

    Raises:
        InputError: a named column is not in the header.
    """
    p = pathlib.Path(path)
    base = media_roots(media_root, p.resolve().parent)
    sep = delimiter or ("\t" if p.suffix.lower() == ".tsv" else ",")
    with p.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=sep)
        columns.check(reader.fieldnames or [], p.name)
        content = {c or name for c, name in ((columns.id, "id"), (columns.text, "text"),
                                             (columns.image, "image"), (columns.video, "video"))}
        for record in reader:
            location = f"{p.name}:{reader.line_num}"
            clean = {k: (None if v == "" else v if k in content else _number_or_text(v))
                     for k, v in record.items() if k is not None}
            yield _mapped(location, clean, columns, base)


_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(0|[1-9][0-9]*)?\.[0-9]+([eE][-+]?[0-9]+)?|[-+]?(0|[1-9][0-9]*)[eE][-+]?[0-9]+")


def _number_or_text(cell: str) -> Any:
    """A CSV cell as an int or a float when it is written as one, else the text as it is."""
    if _INT.fullmatch(cell):
        return int(cell)
    if _FLOAT.fullmatch(cell):
        return float(cell)
    return cell


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
        pdf: how PDFs and decks become page rows (``folder`` only; None: the defaults).
        video_segments: how videos are cut into windows (``folder`` only; None: automatic).
    """

    kind: str
    location: str
    query: str | None = None
    columns: Columns = field(default_factory=Columns)
    media_root: tuple[str, ...] | None = None
    recursive: bool = True
    follow_links: bool = False
    pdf: "PdfOptions | None" = None
    video_segments: "VideoSegments | None" = None

    def rows(self) -> Iterator[SourceRow]:
        """Stream the source's records as :class:`SourceRow` objects."""
        if self.kind == "folder":
            return folder_rows(self.location, recursive=self.recursive, follow_links=self.follow_links,
                               pdf=self.pdf, video_segments=self.video_segments)
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
                recursive: bool = True, follow_links: bool = False, pdf: "PdfOptions | None" = None,
                video_segments: "VideoSegments | None" = None) -> Source:
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
        pdf: PDF and deck options for a folder source (:class:`~connectors.ingest.documents.PdfOptions`).
        video_segments: video windows for a folder source
            (:class:`~connectors.ingest.documents.VideoSegments`).

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
        return Source("folder", str(p), recursive=recursive, follow_links=follow_links, pdf=pdf,
                      video_segments=video_segments)
    kind = fmt or TABLE_FORMATS.get(p.suffix.lower())
    if kind not in ("jsonl", "csv", "parquet"):
        raise InputError(f"cannot tell the format of {str(source)!r}: expected a folder or a file ending in "
                         f"{sorted(TABLE_FORMATS)} (or pass --format jsonl|csv|parquet)")
    return Source(kind, str(p), columns=columns, media_root=root)


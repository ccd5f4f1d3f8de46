"""``qvl ingest``: the command-line face of :func:`connectors.ingest.ingest`.

::

    qvl ingest photos/ --to milvus:./qvl.db --collection photos
    qvl ingest items.csv --id-col sku --text-col title --image-col picture --meta-cols price,color
    qvl ingest --from-sql sqlite:///shop.db --query "SELECT * FROM products" --to postgresql://...

The handler checks what it can before loading a model (flags, ``--dim``, the source, the
target's scheme and connection, whether a hub id can be had at all), so a mistake costs a
second and one line.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pathlib
import sys
from typing import Any

from .common import (DEFAULT_COLLECTION, DEFAULT_DIM, DEFAULT_TARGET, add_model_args, api_key_of, check_dim_arg,
                     checkpoint_dim, checkpoint_min_dim, close_quietly, format_summary, load_embedder, model_spec,
                     one_line,
                     open_target_first, print_error, progress_bar)


def add_parser(subparsers: Any) -> None:
    """Add ``qvl ingest`` to the ``qvl`` command line."""
    _add_ingest(subparsers)


def _add_ingest(sub: Any) -> None:
    p = sub.add_parser(
        "ingest", help="embed a folder, a JSONL/CSV/Parquet file or a SQL query into a database",
        description="Embed a folder (images, videos, texts; name.txt next to name.jpg is its caption), a "
                    "JSONL/CSV/Parquet file or a SQL query into Milvus, Postgres/pgvector or Weaviate. "
                    "Re-running writes nothing new; --resume continues an interrupted run; rows that fail go "
                    "to the dead-letter file and the exit code is 1.")
    p.add_argument("source", nargs="?", metavar="SOURCE", help="a folder, or a .jsonl/.csv/.tsv/.parquet file")
    p.add_argument("--from-sql", metavar="URL", help="a SQLAlchemy URL to read from (with --query)")
    p.add_argument("--query", metavar="SQL", help="the SQL query whose rows are ingested (with --from-sql)")
    p.add_argument("--format", dest="fmt", choices=["jsonl", "csv", "parquet"], help="table format (default: suffix)")
    g = p.add_argument_group("column mapping (tables and SQL)")
    g.add_argument("--id-col", help="id column (default: 'id' if present, else a content hash)")
    g.add_argument("--text-col", help="text column (default: 'text')")
    g.add_argument("--image-col", help="image column: paths relative to the table's folder, URLs or bytes "
                                       "(default: 'image')")
    g.add_argument("--video-col", help="video column (default: 'video')")
    g.add_argument("--meta-cols", metavar="A,B", help="comma-separated columns stored as metadata "
                                                      "(default: every other column; '' for none)")
    g.add_argument("--media-root", metavar="DIR", action="append",
                   help="folder that media paths in a table must be in; the first is the base of relative paths; "
                        "repeat to allow several (default: the table's folder; the current folder for SQL). A row "
                        "whose file is elsewhere (or links elsewhere) goes to the dead letters")
    d = p.add_argument_group("documents and long videos (folders)")
    d.add_argument("--pdf-mode", choices=["fused", "image", "text"], default="fused",
                   help="a PDF page (or slide) is embedded from its rendered image fused with its text layer "
                        "(default), its image alone, or its text alone (a page without text: its image)")
    d.add_argument("--pdf-dpi", type=int, default=144, metavar="DPI",
                   help="render pages at this DPI, never above the model's 1,843,200 pixels (default: 144)")
    d.add_argument("--pdf-text-tokens", type=int, default=1024, metavar="N",
                   help="keep about N tokens of a page's text (4 characters a token, cut at a word; default: 1024)")
    d.add_argument("--video-segments", type=float, metavar="SECONDS",
                   help="cut videos into windows of SECONDS, one row each with t_start/t_end (0: one vector per "
                        "video; default: one vector up to 64 s, 30 s windows beyond; with --model URL: 0)")
    d.add_argument("--video-overlap", type=float, metavar="SECONDS",
                   help="seconds each window shares with the previous one (default: 5, or a sixth of a window "
                        "under 30 s)")
    p.add_argument("--no-recursive", dest="recursive", action="store_false", help="do not descend into sub-folders")
    p.add_argument("--follow-links", action="store_true",
                   help="follow symbolic links that lead out of the source folder (default: such links are not "
                        "read and are reported in the dead letters)")
    p.add_argument("--to", default=DEFAULT_TARGET, metavar="TARGET",
                   help="milvus:./file.db, milvus://host:19530, postgresql://..., weaviate://host:8080, memory: "
                        f"(default: {DEFAULT_TARGET})")
    p.add_argument("--collection", default=DEFAULT_COLLECTION,
                   help=f"collection / table (default: {DEFAULT_COLLECTION})")
    p.add_argument("--dim", type=int, help=f"vector dimension, an MRL dim of the model (default: {DEFAULT_DIM}, or "
                                           "the model's full dim if smaller)")
    p.add_argument("--batch-size", type=int, default=32, help="rows per embedding call and per write (default: 32)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its state file")
    p.add_argument("--state", metavar="FILE", help="state file recording what landed (default: in ~/.cache/qvl/ingest)")
    p.add_argument("--dead-letter", metavar="FILE",
                   help="JSONL of the rows that failed, with location and reason "
                        "(default: ./COLLECTION.dead-letters.jsonl)")
    p.add_argument("--overwrite", action="store_true", help="re-embed rows even when the target already has their id")
    p.add_argument("--limit", type=int, metavar="N", help="stop after N source records")
    p.add_argument("--retries", type=int, default=5, help="tries for transient failures (default: 5)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    add_model_args(p, reranker=False)
    from .ray_ingest import add_ray_args

    add_ray_args(p)
    p.set_defaults(func=run_ingest)


def _cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "qvl"


def default_state_path(source: str, target: str, collection: str) -> pathlib.Path:
    """Where the state of an ingest lives when ``--state`` is not given (under ``~/.cache/qvl/ingest``)."""
    key = f"{source}\0{target}\0{collection}".encode("utf-8", "surrogateescape")  # names need not be UTF-8
    digest = hashlib.sha256(key).hexdigest()[:16]
    return _cache_dir() / "ingest" / f"{digest}.state.jsonl"


def _print_summary(summary: Any, *, resume_hint: str | None = None) -> None:
    print(format_summary(summary))
    if summary.skipped and not (summary.written or summary.failed or summary.embedded):
        print(f"nothing new: all {summary.skipped} rows are already in the target")
    if summary.dead_letter:
        print(f"dead letters: {summary.dead_letter} ({summary.failed} rows, with location and reason)")
    if resume_hint:
        print(resume_hint)



def _columns(args: argparse.Namespace) -> Any:
    from connectors.ingest import Columns

    meta = None
    if args.meta_cols is not None:
        meta = tuple(c.strip() for c in args.meta_cols.split(",") if c.strip())
    return Columns(id=args.id_col, text=args.text_col, image=args.image_col, video=args.video_col, meta=meta)


def _positive(name: str, value: int | None) -> str | None:
    if value is not None and value < 1:
        return f"{name} must be a positive integer, got {value}"
    return None



def run_ingest(args: argparse.Namespace) -> int:
    """Handler of ``qvl ingest``; returns 0 when every row landed or was skipped, 1 when some failed,
    2 when the run could not start or stopped early, 130 on Ctrl-C.

    What can be checked without the model is checked first (flags, ``--dim``, the source,
    the target's scheme and connection), so that a mistake costs a second, not a model load.
    """
    import connectors
    from embedder.errors import QVLError

    from connectors import ingest as pl

    for name, value in (("--batch-size", args.batch_size), ("--limit", args.limit), ("--retries", args.retries)):
        problem = _positive(name, value)
        if problem:
            print_error(problem)
            return 2
    spec = model_spec(args)
    problem = check_dim_arg(args.dim, full=checkpoint_dim(spec), minimum=checkpoint_min_dim(spec))
    if problem:
        print_error(problem)
        return 2
    try:
        from connectors.ingest.documents import PdfOptions, VideoSegments
        from embedder.factory import is_url

        pdf = PdfOptions(mode=args.pdf_mode, dpi=args.pdf_dpi, text_tokens=args.pdf_text_tokens)
        window = args.video_segments
        if window is None and is_url(spec):
            window = 0  # a window is a path and a time range: only a service that reads the file could take it
        segments = VideoSegments(window, args.video_overlap)
        source = pl.open_source(args.source, from_sql=args.from_sql, query=args.query, fmt=args.fmt,
                                columns=_columns(args), media_root=args.media_root, recursive=args.recursive,
                                follow_links=args.follow_links, pdf=pdf, video_segments=segments)
    except QVLError as exc:
        print_error(str(exc))
        return 2
    if args.engine == "ray":
        from .ray_ingest import run_on_ray

        return run_on_ray(args, source, spec)
    embedder = store = None
    try:
        try:
            open_target_first(args.to, args.collection, dim=args.dim)
            # the client does not retry underneath: ingest retries with its one policy (--retries)
            embedder = load_embedder(spec, device=args.device, api_key=api_key_of(args), retries=0)
            dim = args.dim or min(DEFAULT_DIM, int(embedder.dim))
            problem = check_dim_arg(dim, full=int(embedder.dim), minimum=int(embedder.min_dim))
            if problem:
                print_error(problem)
                return 2
            store = connectors.connect(args.to, collection=args.collection, embedder=embedder, dim=dim)
            store.create(exist_ok=True)
        except (QVLError, ValueError) as exc:
            print_error(one_line(exc))
            return 2
        described = source.describe()
        state_path = pathlib.Path(args.state) if args.state else default_state_path(described, args.to,
                                                                                     args.collection)
        dead_letter = args.dead_letter or f"{args.collection}.dead-letters.jsonl"
        key = {"source": described, "target": args.to, "collection": args.collection, "dim": dim}
        bar, update = progress_bar(source.estimate() if args.progress else None, enabled=args.progress,
                                    desc=f"ingest -> {args.collection}")
        hint = f"state: {state_path} (continue an interrupted run with --resume)"
        try:
            summary = pl.ingest(source.rows(), store, embedder, dim=dim, batch_size=args.batch_size,
                                dead_letter=dead_letter, state_file=state_path, resume=args.resume, state_key=key,
                                overwrite=args.overwrite, retry=pl.RetryPolicy(attempts=args.retries),
                                limit=args.limit, on_progress=update)
        except pl.IngestInterrupted as exc:
            bar.close()
            _print_summary(exc.summary)
            print(f"interrupted: what landed is recorded in {state_path}; run the same command with --resume "
                  "to continue", file=sys.stderr)
            return 130
        except pl.IngestAborted as exc:
            bar.close()
            _print_summary(exc.summary)
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            print_error(f"ingest stopped: {cause}")
            if exc.summary.written:
                print(f"what landed is recorded in {state_path}; fix the cause and run the same command with "
                      "--resume", file=sys.stderr)
            return 2
        except QVLError as exc:
            bar.close()
            print_error(str(exc))
            return 2
        bar.close()
        _print_summary(summary, resume_hint=hint if not summary.ok else None)
        return 0 if summary.ok else 1
    finally:
        close_quietly(store)
        close_quietly(embedder)


"""``qvl migrate FROM TO``: copy a collection between databases without re-embedding.

::

    qvl migrate milvus:./qvl.db postgresql://localhost/app --collection photos

Ids, vectors, text, media references, metadata, declared fields and the embedding
fingerprint are copied page by page (:func:`connectors.migrate.migrate`). The copy resumes
where it stopped: the cursor after each page is kept in a state file (``--state``, by default
under ``~/.cache/qvl/migrate/``).
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys
import time
from typing import Any

from ..quantization import PRECISIONS
from .common import DEFAULT_COLLECTION, close_quietly, one_line, print_error


def add_parser(subparsers: Any) -> None:
    """Add ``qvl migrate`` to the ``qvl`` command line."""
    p = subparsers.add_parser(
        "migrate", help="copy a collection to another database (no re-embedding; resumable)",
        description="Copy every row of a collection (ids, vectors, text, media, metadata, fields and how its "
                    "vectors were made) from one database to another, page by page, without re-embedding. "
                    "Interrupted copies resume after the last page that landed.")
    p.add_argument("source", metavar="FROM", help="the database to copy from (milvus:..., postgresql://..., "
                   "weaviate://..., memory://NAME)")
    p.add_argument("target", metavar="TO", help="the database to copy to")
    p.add_argument("--collection", default=DEFAULT_COLLECTION,
                   help=f"the collection / table to copy (default: {DEFAULT_COLLECTION})")
    p.add_argument("--to-collection", metavar="NAME", help="its name in TO (default: the same)")
    p.add_argument("--page-size", type=int, default=1000, help="rows per page (default: 1000)")
    p.add_argument("--state", metavar="FILE", help="the resume state file (default: under ~/.cache/qvl/migrate/)")
    p.add_argument("--restart", action="store_true", help="copy from the first row even if a state file says "
                   "where the last copy stopped")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="copy into an existing collection whose vectors were made by another model")
    p.add_argument("--quantization", choices=("same", *PRECISIONS), metavar="PRECISION",
                   help="how a new TO collection stores the vectors: same (as FROM), float32, float16, int8 or "
                        "binary (default: float32; an existing one keeps its own)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_migrate)


def default_state_path(source: str, target: str, collection: str, to_collection: str) -> pathlib.Path:
    """Where the state of one copy lives by default: one file per (FROM, TO, collections)."""
    key = hashlib.sha256("\0".join((source, target, collection, to_collection)).encode()).hexdigest()[:16]
    return pathlib.Path.home() / ".cache" / "qvl" / "migrate" / f"{collection}-{key}.json"


def run_migrate(args: argparse.Namespace) -> int:
    import connectors
    from connectors.migrate import migrate
    from embedder.errors import NotFoundError, QVLError

    if args.page_size < 1:
        print_error(f"--page-size must be a positive integer, got {args.page_size}")
        return 2
    to_collection = args.to_collection or args.collection
    state = pathlib.Path(args.state) if args.state else default_state_path(args.source, args.target,
                                                                           args.collection, to_collection)
    state.parent.mkdir(parents=True, exist_ok=True)
    source = target = bar = None
    start = time.monotonic()
    try:
        try:
            source = connectors.connect(args.source, collection=args.collection, embedder=None)
            total = source.count()
            quantization = source.quantization if args.quantization == "same" else args.quantization
            target = connectors.connect(args.target, collection=to_collection, embedder=None, dim=source.dim,
                                        **({"quantization": quantization} if quantization else {}))
        except NotFoundError as exc:
            print_error(f"{one_line(exc)} (in {args.source})")
            return 2
        except (QVLError, ValueError) as exc:
            print_error(one_line(exc))
            return 2
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="row", desc=f"migrate {args.collection}", file=sys.stderr,
                   disable=True if args.no_progress else None, dynamic_ncols=True)

        def progress(p: Any) -> None:
            done = p.copied + p.failed
            if done > bar.n:
                bar.update(done - bar.n)

        try:
            report = migrate(source, target, page_size=args.page_size, state=state, resume=not args.restart,
                             allow_mismatch=args.allow_mismatch, on_progress=progress)
        except KeyboardInterrupt:
            bar.close()
            print(f"interrupted; run the same command again to resume (state: {state})", file=sys.stderr)
            return 130
        except (QVLError, ValueError) as exc:
            bar.close()
            print_error(f"{one_line(exc)} (state: {state}; the same command resumes)")
            return 1
        bar.close()
        elapsed = time.monotonic() - start
        rate = len(report.written) / elapsed if elapsed > 0 else 0.0
        print(f"copied {len(report.written)} rows from {args.source} to {args.target} "
              f"(collection {to_collection}), failed {len(report.failed)}, elapsed {elapsed:.1f} s "
              f"({rate:.0f} rows/s)")
        for f in report.failed[:10]:
            print(f"  not copied: {f.id}: {f.reason}", file=sys.stderr)
        if len(report.failed) > 10:
            print(f"  ... and {len(report.failed) - 10} more", file=sys.stderr)
        return 1 if report.failed else 0
    finally:
        close_quietly(source)
        close_quietly(target)

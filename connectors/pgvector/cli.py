"""``qvl pg``: keep a Postgres table's embeddings in sync from the command line.

* ``qvl pg sync``: add the embedding column (or side table) and index to an existing table,
  install the triggers, and queue the rows without an embedding.
* ``qvl pg worker``: embed queued rows in batches (``--once``: until the queue is drained).
* ``qvl pg status``: rows, embeddings, queue and failures.

Only ``sync`` changes the schema. ``worker`` and ``status`` open the table with
``attach(create=False)``: no DDL, so no lock on your table, and ``status`` needs only ``SELECT``.
The database is reached before any model is loaded, so a wrong ``--dsn`` fails at once; errors
name the command's flags. ``--model`` may be the URL of a ``qvl serve`` (its key from
``--api-key`` or ``$QVL_API_KEY``).

Example::

    qvl pg sync   --dsn postgresql://app@db/shop --table products --text-col title --image-col photo --dim 1024
    qvl pg worker --dsn postgresql://app@db/shop --table products --model Qwen/Qwen3-VL-Embedding-2B --once
    qvl pg status --dsn postgresql://app@db/shop --table products
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
from typing import Any, Iterator

API_KEY_ENV = "QVL_API_KEY"
# Python argument names in library messages -> this command's flags (the library speaks
# Python, the user typed flags).
_FLAG_FOR = [
    (re.compile(r"\bdoes not exist and create=False: attach the table first \(attach\(\.\.\.\) or qvl pg sync\)"),
     "does not exist: the table is not synced yet; run `qvl pg sync` on it first"),
    (re.compile(r"\bpass dim= \(or an embedder, whose full dim is used\)"), "pass --dim (or --model, whose full dim is used)"),
    (re.compile(r"\bpass at least one of text_column, image_column, video_column"),
     "pass at least one of --text-col, --image-col, --video-col"),
    (re.compile(r"\bpass primary_key= naming"), "pass --pk naming"),
    (re.compile(r"\bstorage='(\w+)'"), r"--storage \1"),
    (re.compile(r"\bstorage=(\w+)"), r"--storage \1"),
    (re.compile(r"\bmode='(\w+)'"), r"--mode \1"),
    (re.compile(r"\bmode=(\w+)"), r"--mode \1"),
    (re.compile(r"\brequested dim=(\d+)"), r"requested --dim \1"),
    (re.compile(r"^dim must be"), "--dim must be"),
    (re.compile(r"\b(dim|index_dim)=(\d+)"), r"\1 \2"),
    (re.compile(r"\btext_column\b"), "--text-col"),
    (re.compile(r"\bimage_column\b"), "--image-col"),
    (re.compile(r"\bvideo_column\b"), "--video-col"),
    (re.compile(r"\bprimary_key\b"), "--pk"),
    (re.compile(r"\bbatch_size\b"), "--batch-size"),
    (re.compile(r"\bmax_attempts\b"), "--max-attempts"),
    (re.compile(r"\bretry_delay\b"), "--retry-delay"),
    (re.compile(r"\blease\b(?= must)"), "--lease"),
    (re.compile(r"\bmax_outage\b"), "--max-outage"),
]


def flag_message(message: str) -> str:
    """A library error message with Python argument names replaced by ``qvl pg`` flags.

    Example:
        >>> flag_message("pass at least one of text_column, image_column, video_column")
        'pass at least one of --text-col, --image-col, --video-col'
    """
    for pattern, repl in _FLAG_FOR:
        message = pattern.sub(repl, message)
    return message


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``qvl pg {sync,worker,status}`` to the ``qvl`` parser's subparsers."""
    pg = subparsers.add_parser("pg", help="Postgres/pgvector: sync an existing table's embeddings",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = pg.add_subparsers(dest="pg_command", metavar="PG_COMMAND")
    pg.set_defaults(func=lambda args: (pg.print_help(), 2)[1])

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--dsn", default=os.environ.get("DATABASE_URL"),
                       help="postgresql:// URL (default: $DATABASE_URL)")
        p.add_argument("--table", required=True, help="existing table (table or schema.table)")
        p.add_argument("--pk", help="primary-key column (default: detected)")
        p.add_argument("--text-col", help="column holding text")
        p.add_argument("--image-col", help="column holding image paths/URLs/bytes")
        p.add_argument("--video-col", help="column holding video paths/URLs")
        p.add_argument("--mode", choices=["column", "side_table"], help="embedding column (default) or side table")
        p.add_argument("--dim", type=int, help="embedding dimension (default: the existing column's, else the model's)")
        p.add_argument("--storage", default="auto",
                       choices=["auto", "vector", "halfvec", "subvector", "binary", "exact"])
        p.add_argument("--model", help="embedding model directory, hub id, or http(s):// URL of qvl serve")
        p.add_argument("--api-key", metavar="KEY",
                       help=f"key of the `qvl serve` given as --model URL (default: ${API_KEY_ENV})")
        p.add_argument("--device", default="auto", help="torch device for --model (default: auto)")
        p.add_argument("--batch-size", type=int, default=32, help="rows per batch (default: 32)")

    def media_root(p: argparse.ArgumentParser) -> None:
        p.add_argument("--media-root", metavar="DIR", action="append",
                       help="folder that image/video paths in the table must be in (their real paths: links "
                            "are resolved); repeat to allow several. A row whose file is elsewhere is not read "
                            "and ends in the failed rows (default: any file the worker can read)")

    p_sync = sub.add_parser("sync", help="add embedding storage and triggers, queue rows without embeddings")
    common(p_sync)
    p_sync.add_argument("--no-enqueue", action="store_true", help="do not queue the existing rows")
    p_sync.set_defaults(func=cmd_sync)

    p_worker = sub.add_parser("worker", help="embed queued rows")
    common(p_worker)
    media_root(p_worker)
    p_worker.add_argument("--once", action="store_true", help="exit when no queued row is ready")
    p_worker.add_argument("--max-attempts", type=int, default=3, help="failures before a row is set aside (default: 3)")
    p_worker.add_argument("--retry-delay", type=float, default=5.0, help="seconds before the first retry (default: 5)")
    p_worker.add_argument("--lease", type=float, default=600.0,
                          help="seconds a claimed batch is reserved; a dead worker's rows return after it "
                               "(default: 600)")
    p_worker.add_argument("--poll-interval", type=float, default=1.0, help="seconds between polls of an empty queue")
    p_worker.add_argument("--max-outage", type=float, metavar="SECONDS",
                          help="give up (exit 1, rows stay queued) when the embedder has been unavailable this long "
                               "(default: wait, backing off up to 60 s between tries)")
    p_worker.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_worker.set_defaults(func=cmd_worker)

    p_status = sub.add_parser("status", help="rows, embeddings, queue and failures")
    common(p_status)
    p_status.add_argument("--show-failed", action="store_true", help="list the failed rows with their reasons")
    p_status.set_defaults(func=cmd_status)
    return pg


def _embedder(args: argparse.Namespace) -> Any:
    """The ``--model`` embedder (a ``qvl serve`` URL gets ``--api-key`` / ``$QVL_API_KEY``), or None.

    With ``--media-root`` it reads only media files inside those folders (``LoadOptions.path_roots``).
    """
    if not args.model:
        return None
    from connectors.cli.common import load_embedder

    key = args.api_key or os.environ.get(API_KEY_ENV) or None
    roots = getattr(args, "media_root", None) or None
    return load_embedder(args.model, device=args.device, api_key=key, path_roots=roots)


def _connect(args: argparse.Namespace, *, create: bool) -> Any:
    """The connection to ``--dsn``, opened before any model is loaded (a wrong DSN fails at once)."""
    from embedder.errors import InputError

    from .wire import connect_pg

    if not args.dsn:
        raise InputError("pass --dsn (or set DATABASE_URL)")
    conn, _ = connect_pg(args.dsn, create_extension=create)
    return conn


def _attach(args: argparse.Namespace, conn: Any, embedder: Any, *, create: bool) -> Any:
    """The attached store for ``args`` on ``conn``; ``create=False`` runs no DDL (worker, status)."""
    from .factories import attach

    return attach(conn, table=args.table, primary_key=args.pk, text_column=args.text_col,
                  image_column=args.image_col, video_column=args.video_col, embedder=embedder, dim=args.dim,
                  mode=args.mode, storage=args.storage, backfill=False, batch_size=args.batch_size, create=create)


@contextlib.contextmanager
def _opened(args: argparse.Namespace, *, create: bool, load_model: bool) -> Iterator[tuple[Any, Any]]:
    """The database connection and (when ``load_model``) the embedder of a command, closed afterwards."""
    conn = _connect(args, create=create)
    emb = None
    try:
        emb = _embedder(args) if load_model else None
        yield conn, emb
    finally:
        if emb is not None:
            emb.close()
        conn.close()


def _run(args: argparse.Namespace, body: Any) -> int:
    import sys

    from embedder.errors import QVLError

    try:
        return int(body() or 0)
    except QVLError as exc:
        print(f"qvl pg {args.pg_command}: {flag_message(str(exc))}", file=sys.stderr)
        return 1


def _print_note(store: Any) -> None:
    if store.name_note:
        print(f"note: {store.name_note}")


def cmd_sync(args: argparse.Namespace) -> int:
    """``qvl pg sync``: prepare storage and triggers, queue the backlog, print a summary."""
    def body() -> int:
        from .sync import install_sync, sync_grants, sync_status

        with _opened(args, create=True, load_model=args.dim is None) as (conn, emb):
            with _attach(args, conn, emb, create=True) as store:
                _print_note(store)
                queued = install_sync(store, enqueue_existing=not args.no_enqueue)
                st = sync_status(store)
                print(f"sync installed on {store.table} ({store.layout.mode}, {store.plan.column_sql}, "
                      f"storage {store.plan.storage}): {queued} rows queued; {st.embedded}/{st.rows} embedded, "
                      f"{st.queued} queued, {st.failed} failed")
                owner = conn.info.parameter_status("session_authorization") or "this role"
                print(f"the triggers run as {owner} (SECURITY DEFINER, fixed search_path): roles that write to "
                      f"{store.table} need no grants on the queue. A worker running as another role needs:")
                for grant in sync_grants(store, "WORKER_ROLE"):
                    print(f"  {grant}")
        return 0

    return _run(args, body)


def cmd_worker(args: argparse.Namespace) -> int:
    """``qvl pg worker``: embed queued rows; print a summary."""
    def body() -> int:
        from embedder.errors import InputError

        from .sync import Worker, sync_status

        if not args.model:
            raise InputError("pass --model (a model directory, hub id, or http(s):// URL of qvl serve)")
        with _opened(args, create=False, load_model=True) as (conn, emb):
            with _attach(args, conn, None, create=False) as store:  # opens while a qvl serve is down
                _print_note(store)
                store.embedder = emb  # the worker checks its fingerprint when it first answers
                worker = Worker(store, batch_size=args.batch_size, max_attempts=args.max_attempts,
                                retry_delay=args.retry_delay, lease=args.lease)
                report = worker.run(once=args.once, poll_interval=args.poll_interval,
                                    show_progress=not args.no_progress, max_outage=args.max_outage)
                st = sync_status(store)
                print(f"worker on {store.table}: {len(report.embedded)} embedded, {len(report.cleared)} cleared, "
                      f"{len(report.retried)} to retry, {len(report.failed)} failed in {report.batches} batches; "
                      f"now {st.embedded}/{st.rows} embedded, {st.queued} queued, {st.failed} failed")
                for key, reason in report.failed:
                    print(f"  failed {key}: {reason}")
        return 0

    return _run(args, body)


def cmd_status(args: argparse.Namespace) -> int:
    """``qvl pg status``: print counts (and the failed rows with ``--show-failed``)."""
    def body() -> int:
        from .sync import failed_rows, sync_status

        conn = _connect(args, create=False)
        try:
            with _attach(args, conn, None, create=False) as store:
                _print_note(store)
                st = sync_status(store)
                print(f"{store.table}: {st.rows} rows, {st.embedded} embedded, {st.queued} queued "
                      f"({st.ready} ready, {st.in_progress} in progress), {st.failed} failed; "
                      f"triggers {'installed' if st.installed else 'not installed'}")
                if args.show_failed and st.installed:
                    for row in failed_rows(store):
                        print(f"  failed {row.key} after {row.attempts} attempts: {row.reason}")
        finally:
            conn.close()
        return 0

    return _run(args, body)

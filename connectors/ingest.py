"""``qvl ingest`` and ``qvl search``: the command-line face of :mod:`connectors.pipeline`.

::

    qvl ingest photos/ --to milvus:./qvl.db --collection photos
    qvl ingest items.csv --id-col sku --text-col title --image-col picture --meta-cols price,color
    qvl ingest --from-sql sqlite:///shop.db --query "SELECT * FROM products" --to postgresql://...
    qvl search "a red bicycle" --in milvus:./qvl.db --collection photos --rerank --html hits.html

Heavy modules (torch through the embedder, database drivers through the connectors)
are imported inside the handlers only, so ``qvl --help`` stays fast. Each handler checks
what it can before loading a model (flags, ``--dim``, the source, the target's scheme and
connection, whether a hub id can be had at all), so a mistake costs a second and one line.

:func:`load_embedder` / :func:`load_reranker` (with :func:`add_model_args` and
:func:`api_key_of`) are the one way every ``qvl`` command turns ``--model``/``--reranker``,
``--api-key`` / ``$QVL_API_KEY`` and ``--device`` into a model.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import pathlib
import sys
import threading
from typing import Any, Callable, Sequence

from embedder.hub import quiet_model_loading

from .hits import format_table, hit_record, render_html

log = logging.getLogger(__name__)

DEFAULT_TARGET = "milvus:./qvl.db"
DEFAULT_COLLECTION = "qvl"
DEFAULT_MODEL = "Qwen/Qwen3-VL-Embedding-2B"
DEFAULT_RERANKER = "Qwen/Qwen3-VL-Reranker-2B"
DEFAULT_DIM = 1024

MODEL_HELP = ("embedding model: a local checkpoint directory, a Hugging Face id, or the URL of a running "
              f"`qvl serve` (default: $QVL_MODEL or {DEFAULT_MODEL})")
RERANKER_HELP = ("reranker model: a local directory, a Hugging Face id or a `qvl serve` URL "
                 f"(default: $QVL_RERANKER or {DEFAULT_RERANKER})")
API_KEY_ENV = "QVL_API_KEY"
API_KEY_HELP = f"key of a `qvl serve` given as --model/--reranker URL (default: ${API_KEY_ENV})"


# ============================================================================ parsers
def add_parser(subparsers: Any) -> None:
    """Add ``qvl ingest`` and ``qvl search`` to the ``qvl`` command line (``qvl demo``: :mod:`connectors.demo`)."""
    _add_ingest(subparsers)
    _add_search(subparsers)


def add_model_args(p: argparse.ArgumentParser, *, reranker: bool) -> None:
    """Add ``--model`` (and ``--reranker``), ``--api-key`` and ``--device`` to a command's parser."""
    p.add_argument("--model", metavar="PATH|ID|URL", help=MODEL_HELP)
    if reranker:
        p.add_argument("--reranker", metavar="PATH|ID|URL", help=RERANKER_HELP)
    p.add_argument("--api-key", metavar="KEY", help=API_KEY_HELP)
    p.add_argument("--device", default="auto", help="torch device for local models (default: auto)")



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
    p.set_defaults(func=run_ingest)


def _add_search(sub: Any) -> None:
    p = sub.add_parser("search", help="search a collection with text, an image or both",
                       description="Search a collection and print a table of hits (id, scores, text, media); "
                                   "--json for machines, --html FILE for a page of thumbnails.")
    p.add_argument("query", nargs="?", metavar="QUERY", help="query text (with --image: a fused query)")
    p.add_argument("--in", dest="target", default=DEFAULT_TARGET, metavar="TARGET",
                   help=f"the database (default: {DEFAULT_TARGET})")
    p.add_argument("--collection", default=DEFAULT_COLLECTION,
                   help=f"collection / table (default: {DEFAULT_COLLECTION})")
    p.add_argument("-k", type=int, default=10, help="number of hits (default: 10)")
    p.add_argument("--image", metavar="FILE", help="query image")
    p.add_argument("--video", metavar="FILE", help="query video")
    p.add_argument("--filter", metavar="EXPR",
                   help="a JSON object, the portable filter on every database ('{\"color\": \"red\", \"year\": "
                        "{\"$gte\": 2020}}', values bound: safe for any input); or, for trusted input, the "
                        "database's own form: a Milvus expression, an SQL condition for Postgres, key=value pairs "
                        "for Weaviate and memory:")
    p.add_argument("--rerank", action="store_true", help="rerank the vector hits with the reranker")
    p.add_argument("--candidates", type=int, help="vector hits to rerank (default: the store's)")
    p.add_argument("--dim", type=int, help="vector dimension (default: the collection's)")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.add_argument("--html", metavar="FILE", help="also write an HTML page with thumbnails")
    add_model_args(p, reranker=True)
    p.set_defaults(func=run_search)


# ============================================================================ shared helpers
def print_error(message: str) -> None:
    """Print ``qvl: MESSAGE`` on stderr (the CLI's one way to report an error)."""
    print(f"qvl: {message}", file=sys.stderr)


def one_line(exc: BaseException) -> str:
    """An error's message on one line (drivers like to wrap theirs)."""
    return " ".join(str(exc).split())


def _is_url(spec: str) -> bool:
    return spec.lower().startswith(("http://", "https://"))


def load_embedder(spec: str, *, device: str = "auto", api_key: str | None = None,
                  path_roots: Sequence[str] | None = None) -> Any:
    """An ``Embedder`` for a checkpoint path / hub id, or a ``RemoteEmbedder`` for a ``qvl serve`` URL.

    The one loader of every ``qvl`` command that takes ``--model``.

    Args:
        spec: a local checkpoint folder, a Hugging Face id, or ``http(s)://host:port`` of a ``qvl serve``.
        device: torch device for a local model.
        api_key: the service's key (sent as a bearer token; ignored for local models).
        path_roots: folders local media paths must be in (their real paths, links resolved);
            a path elsewhere is refused as that item's error (None: any readable file). For
            media paths that come from a database column (``qvl pg worker --media-root``).

    Raises:
        ModelLoadError: the checkpoint cannot be loaded; a hub id that is not cached on a
            machine without network says so at once, in one line.
        RemoteError: the service refused the key (HTTP 401/403) or cannot be reached.
    """
    if _is_url(spec):
        from embedder.remote import RemoteEmbedder

        remote = RemoteEmbedder(spec, api_key=api_key, path_roots=path_roots)
        _check_remote(remote, spec, api_key)
        return remote
    from embedder import Embedder
    from embedder.items import LoadOptions

    quiet_model_loading()
    if path_roots is None:
        return Embedder.from_pretrained(spec, device=device)
    return Embedder.from_pretrained(spec, device=device, load_options=LoadOptions(path_roots=tuple(path_roots)))


def load_reranker(spec: str, *, device: str = "auto", api_key: str | None = None) -> Any:
    """A ``Reranker`` for a checkpoint path / hub id, or a ``RemoteReranker`` for a ``qvl serve`` URL.

    Same arguments and errors as :func:`load_embedder`.
    """
    if _is_url(spec):
        from embedder.remote import RemoteReranker

        remote = RemoteReranker(spec, api_key=api_key)
        _check_remote(remote, spec, api_key)
        return remote
    from embedder import Reranker

    quiet_model_loading()
    return Reranker.from_pretrained(spec, device=device)


def _check_remote(remote: Any, spec: str, api_key: str | None) -> None:
    """Ask the service for its ``/meta`` now, so that a wrong key is one clear line before any work."""
    from embedder.errors import RemoteError

    try:
        remote.meta()
    except RemoteError as exc:
        remote.close()
        if exc.status in (401, 403):
            given = "was refused" if api_key else "is needed"
            raise RemoteError(f"the service at {spec} answered HTTP {exc.status}: its API key {given}; pass it with "
                              f"--api-key KEY or ${API_KEY_ENV}", status=exc.status, code=exc.code) from None
        raise


def model_spec(args: argparse.Namespace) -> str:
    """``--model``, else ``$QVL_MODEL``, else the released embedding model."""
    return args.model or os.environ.get("QVL_MODEL") or DEFAULT_MODEL


def reranker_spec(args: argparse.Namespace) -> str:
    """``--reranker``, else ``$QVL_RERANKER``, else the released reranker."""
    return getattr(args, "reranker", None) or os.environ.get("QVL_RERANKER") or DEFAULT_RERANKER


def api_key_of(args: argparse.Namespace) -> str | None:
    """The ``qvl serve`` key: ``--api-key``, else ``$QVL_API_KEY``, else None."""
    return getattr(args, "api_key", None) or os.environ.get(API_KEY_ENV) or None


def close_quietly(obj: Any) -> None:
    """Close ``obj`` if it can be closed; a failure to close is logged, never raised."""
    close = getattr(obj, "close", None)
    if callable(close):
        try:
            close()
        except Exception as exc:  # noqa: BLE001 - closing must not hide the real outcome
            log.debug("closing %r failed: %s", obj, exc)


def _cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "qvl"


def default_state_path(source: str, target: str, collection: str) -> pathlib.Path:
    """Where the state of an ingest lives when ``--state`` is not given (under ``~/.cache/qvl/ingest``)."""
    key = f"{source}\0{target}\0{collection}".encode("utf-8", "surrogateescape")  # names need not be UTF-8
    digest = hashlib.sha256(key).hexdigest()[:16]
    return _cache_dir() / "ingest" / f"{digest}.state.jsonl"


def progress_bar(total: int | None, *, enabled: bool, desc: str) -> tuple[Any, Callable[[Any], None]]:
    """A tqdm bar on stderr (rows done of ``total``, rate, ETA; off when stderr is not a terminal) and its
    ``on_progress`` callback for :func:`connectors.pipeline.ingest`."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="row", desc=desc, file=sys.stderr, disable=None if enabled else True,
               dynamic_ncols=True, smoothing=0.1)
    lock = threading.Lock()

    def update(p: Any) -> None:
        with lock:
            if p.done > bar.n:
                bar.update(p.done - bar.n)
            bar.set_postfix(embedded=p.embedded, written=p.written, skipped=p.skipped, failed=p.failed,
                            refresh=False)

    return bar, update


def format_summary(summary: Any) -> str:
    """The one-line summary of an ingest."""
    rate = summary.done / summary.elapsed if summary.elapsed > 0 else 0.0
    return (f"read {summary.read}, embedded {summary.embedded}, written {summary.written}, "
            f"skipped {summary.skipped} (already present), failed {summary.failed}, "
            f"elapsed {summary.elapsed:.1f} s ({rate:.1f} rows/s)")


def _print_summary(summary: Any, *, resume_hint: str | None = None) -> None:
    print(format_summary(summary))
    if summary.skipped and not (summary.written or summary.failed or summary.embedded):
        print(f"nothing new: all {summary.skipped} rows are already in the target")
    if summary.dead_letter:
        print(f"dead letters: {summary.dead_letter} ({summary.failed} rows, with location and reason)")
    if resume_hint:
        print(resume_hint)


# ============================================================================ qvl ingest
def _columns(args: argparse.Namespace) -> Any:
    from .pipeline import Columns

    meta = None
    if args.meta_cols is not None:
        meta = tuple(c.strip() for c in args.meta_cols.split(",") if c.strip())
    return Columns(id=args.id_col, text=args.text_col, image=args.image_col, video=args.video_col, meta=meta)


def _positive(name: str, value: int | None) -> str | None:
    if value is not None and value < 1:
        return f"{name} must be a positive integer, got {value}"
    return None


def checkpoint_dim(spec: str) -> int | None:
    """The full dim of a local checkpoint folder, read from its ``config.json`` (None when unknown)."""
    if _is_url(spec) or not os.path.isdir(spec):
        return None
    try:
        config = json.loads((pathlib.Path(spec) / "config.json").read_text(encoding="utf-8"))
        return int((config.get("text_config") or config)["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_dim_arg(dim: int | None, *, full: int | None = None, flag: str = "--dim") -> str | None:
    """Why ``--dim`` cannot be used (one line), or None. ``full``: the model's full dim, when known."""
    if dim is None:
        return None
    from embedder.embedder import MIN_DIM

    if isinstance(dim, bool) or not isinstance(dim, int) or dim < MIN_DIM or (full is not None and dim > full):
        allowed = f"from {MIN_DIM} to {full} (the model's full dim)" if full else f"at least {MIN_DIM}"
        return f"{flag} {dim}: the dim must be an integer {allowed}; nothing was created"
    return None


#: schemes whose stores talk to a database that can be checked before the model loads
_DATABASE_SCHEMES = frozenset({"milvus", "postgresql", "postgres", "weaviate"})


def open_target_first(target: str, collection: str, *, dim: int | None = None) -> None:
    """Check a target before the model loads: its scheme is known and its database answers.

    Opens the store without an embedder and closes it again, so that a typo in the
    scheme or an unreachable database is reported in a second instead of after the
    model load.

    Raises:
        ValueError: the scheme is not one of the registered ones.
        UnavailableError: the database cannot be reached.
        MissingDependencyError: the database's client is not installed.
    """
    import connectors

    scheme = connectors.scheme_of(target)
    if scheme not in connectors._REGISTRY:
        raise ValueError(f"unknown target {target!r}: scheme {scheme!r} is not one of "
                         f"{sorted(set(connectors._REGISTRY))}")
    if scheme not in _DATABASE_SCHEMES:
        return
    from embedder.errors import MissingDependencyError, UnavailableError

    try:
        store = connectors.connect(target, collection=collection, embedder=None, dim=dim)
    except (UnavailableError, MissingDependencyError):
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. "pass dim=": the real open, with the model, decides
        log.debug("early open of %s: %s: %s", target, type(exc).__name__, exc)
        return
    close_quietly(store)


def run_ingest(args: argparse.Namespace) -> int:
    """Handler of ``qvl ingest``; returns 0 when every row landed or was skipped, 1 when some failed,
    2 when the run could not start or stopped early, 130 on Ctrl-C.

    What can be checked without the model is checked first (flags, ``--dim``, the source,
    the target's scheme and connection), so that a mistake costs a second, not a model load.
    """
    import connectors
    from embedder.errors import QVLError

    from . import pipeline as pl

    for name, value in (("--batch-size", args.batch_size), ("--limit", args.limit), ("--retries", args.retries)):
        problem = _positive(name, value)
        if problem:
            print_error(problem)
            return 2
    spec = model_spec(args)
    problem = check_dim_arg(args.dim, full=checkpoint_dim(spec))
    if problem:
        print_error(problem)
        return 2
    try:
        source = pl.open_source(args.source, from_sql=args.from_sql, query=args.query, fmt=args.fmt,
                                columns=_columns(args), media_root=args.media_root, recursive=args.recursive,
                                follow_links=args.follow_links)
    except QVLError as exc:
        print_error(str(exc))
        return 2
    embedder = store = None
    try:
        try:
            open_target_first(args.to, args.collection, dim=args.dim)
            embedder = load_embedder(spec, device=args.device, api_key=api_key_of(args))
            dim = args.dim or min(DEFAULT_DIM, int(embedder.dim))
            problem = check_dim_arg(dim, full=int(embedder.dim))
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


# ============================================================================ qvl search
def _parse_pairs(expr: str) -> dict[str, Any]:
    """``color=red, year=2020`` (or ``color == "red" and ...``) -> ``{"color": "red", "year": 2020}``."""
    import re

    out: dict[str, Any] = {}
    for part in re.split(r",|\band\b", expr):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"""(?:metadata\[["'])?([\w.]+)(?:["']\])?\s*==?\s*(.+)""", part)
        if not m:
            raise ValueError(f"cannot read filter {part!r}: expected key=value")
        raw = m.group(2).strip()
        if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
            value: Any = raw[1:-1]
        else:
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        out[m.group(1)] = value
    return out


def filter_kwargs(store: Any, expr: str | None) -> dict[str, Any]:
    """The ``search`` keyword for a ``--filter`` expression on this store.

    A JSON object (``{"color": "red"}``) is the portable filter (:mod:`connectors.filters`),
    the same on every store. Anything else is the store's native form: Milvus takes the
    expression as is; Postgres takes it as an SQL condition; Weaviate and the in-memory
    store take ``key=value`` pairs (matched against fields, then metadata).

    Raises:
        ValueError: text starting with ``{`` that is not a JSON object.
    """
    if not expr:
        return {}
    if expr.lstrip().startswith("{"):
        try:
            portable = json.loads(expr)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--filter {expr!r} starts with '{{' but is not valid JSON: {exc}") from None
        if not isinstance(portable, dict):
            raise ValueError(f"--filter {expr!r} must be a JSON object")
        return {"filter": portable}
    module = type(store).__module__
    if module == "connectors.memory":
        pairs = _parse_pairs(expr)

        def predicate(fields: dict) -> bool:
            meta = fields.get("metadata") or {}
            return all(fields.get(k, meta.get(k)) == v or str(fields.get(k, meta.get(k))) == str(v)
                       for k, v in pairs.items())

        return {"filter": predicate}
    if module == "connectors.weaviate":
        return {"filter": _parse_pairs(expr)}
    return {"filter": expr}


def _query_item(args: argparse.Namespace) -> Any:
    item: dict[str, Any] = {}
    if args.query:
        item["text"] = args.query
    for kind in ("image", "video"):
        path = getattr(args, kind)
        if path:
            p = pathlib.Path(path).expanduser()
            if not p.is_file():
                raise FileNotFoundError(f"{kind} {path!r} does not exist")
            item[kind] = str(p.resolve())
    if not item:
        raise ValueError("give a QUERY text, --image FILE or --video FILE")
    return item["text"] if list(item) == ["text"] else item


def _describe_query(args: argparse.Namespace) -> str:
    """The query for people: ``"a cat" + image cat.png``."""
    parts = [json.dumps(args.query, ensure_ascii=False)] if args.query else []
    parts += [f"{kind} {getattr(args, kind)}" for kind in ("image", "video") if getattr(args, kind, None)]
    return " + ".join(parts)


def run_search(args: argparse.Namespace) -> int:
    """Handler of ``qvl search``; 0 on success, 2 when the search could not run."""
    import connectors
    from embedder.errors import NotFoundError, QVLError

    if args.k < 1 or (args.candidates is not None and args.candidates < args.k):
        print_error("-k must be positive and --candidates at least k")
        return 2
    try:
        query = _query_item(args)
    except (ValueError, OSError) as exc:
        print_error(str(exc))
        return 2
    problem = check_dim_arg(args.dim, full=checkpoint_dim(model_spec(args)))
    if problem:
        print_error(problem.replace("; nothing was created", ""))
        return 2
    embedder = reranker = store = None
    try:
        try:
            open_target_first(args.target, args.collection, dim=args.dim)
            key = api_key_of(args)
            embedder = load_embedder(model_spec(args), device=args.device, api_key=key)
            reranker = load_reranker(reranker_spec(args), device=args.device, api_key=key) if args.rerank else None
            store = connectors.connect(args.target, collection=args.collection, embedder=embedder, dim=args.dim)
            kwargs = filter_kwargs(store, args.filter)
            if reranker is not None:
                kwargs["rerank"] = reranker
                if args.candidates:
                    kwargs["candidates"] = args.candidates
            hits = store.search(query, k=args.k, **kwargs)
        except NotFoundError as exc:
            print_error(f"{exc} (in {args.target}; ingest something first: qvl ingest SOURCE --to {args.target} "
                 f"--collection {args.collection})")
            return 2
        except (QVLError, ValueError) as exc:
            print_error(one_line(exc))
            return 2
        records = [hit_record(i, h) for i, h in enumerate(hits, 1)]
        if args.json:
            # the query as given: its text, or {"text": ..., "image": path, "video": path}
            print(json.dumps({"query": query, "target": args.target, "collection": args.collection,
                              "hits": records}, ensure_ascii=False, indent=2))
        else:
            print(format_table(records))
        if args.html:
            page = render_html(records, title=f"qvl search {_describe_query(args)}",
                               query_media=args.image or args.video)
            pathlib.Path(args.html).write_text(page, encoding="utf-8")
            if not args.json:
                print(f"wrote {args.html}")
        return 0
    finally:
        close_quietly(store)
        close_quietly(reranker)
        close_quietly(embedder)

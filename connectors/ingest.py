"""``qvl ingest``, ``qvl search`` and ``qvl demo``: the command-line face of :mod:`connectors.pipeline`.

::

    qvl demo                                   # sample corpus -> Milvus Lite -> searches
    qvl ingest photos/ --to milvus:./qvl.db --collection photos
    qvl ingest items.csv --id-col sku --text-col title --image-col picture --meta-cols price,color
    qvl ingest --from-sql sqlite:///shop.db --query "SELECT * FROM products" --to postgresql://...
    qvl search "a red bicycle" --in milvus:./qvl.db --collection photos --rerank --html hits.html

Heavy modules (torch through the embedder, database drivers through the connectors)
are imported inside the handlers only, so ``qvl --help`` stays fast.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import html
import io
import json
import logging
import os
import pathlib
import sys
import tempfile
import threading
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

DEFAULT_TARGET = "milvus:./qvl.db"
DEFAULT_COLLECTION = "qvl"
DEFAULT_MODEL = "Qwen/Qwen3-VL-Embedding-2B"
DEFAULT_RERANKER = "Qwen/Qwen3-VL-Reranker-2B"
DEFAULT_DIM = 1024
DEMO_COLLECTION = "qvl_demo"
THUMBNAIL_SIZE = 256

MODEL_HELP = ("embedding model: a local checkpoint directory, a Hugging Face id, or the URL of a running "
              f"`qvl serve` (default: $QVL_MODEL or {DEFAULT_MODEL})")
RERANKER_HELP = ("reranker model: a local directory, a Hugging Face id or a `qvl serve` URL "
                 f"(default: $QVL_RERANKER or {DEFAULT_RERANKER})")


# ============================================================================ parsers
def add_parser(subparsers: Any) -> None:
    """Add ``qvl ingest``, ``qvl search`` and ``qvl demo`` to the ``qvl`` command line."""
    _add_ingest(subparsers)
    _add_search(subparsers)
    _add_demo(subparsers)


def _add_model_args(p: argparse.ArgumentParser, *, reranker: bool) -> None:
    p.add_argument("--model", metavar="PATH|ID|URL", help=MODEL_HELP)
    if reranker:
        p.add_argument("--reranker", metavar="PATH|ID|URL", help=RERANKER_HELP)
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
    g.add_argument("--media-root", metavar="DIR", help="folder for relative media paths (default: the table's "
                                                       "folder; the current folder for SQL)")
    p.add_argument("--no-recursive", dest="recursive", action="store_false", help="do not descend into sub-folders")
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
    _add_model_args(p, reranker=False)
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
                   help="Milvus expression (metadata[\"color\"] == \"red\"), SQL condition for Postgres, or "
                        "key=value pairs for Weaviate and memory:")
    p.add_argument("--rerank", action="store_true", help="rerank the vector hits with the reranker")
    p.add_argument("--candidates", type=int, help="vector hits to rerank (default: the store's)")
    p.add_argument("--dim", type=int, help="vector dimension (default: the collection's)")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.add_argument("--html", metavar="FILE", help="also write an HTML page with thumbnails")
    _add_model_args(p, reranker=True)
    p.set_defaults(func=run_search)


def _add_demo(sub: Any) -> None:
    p = sub.add_parser("demo", help="build a sample corpus, ingest it and search it (start here)",
                       description="Build a small corpus (coloured shapes with captions, and a few texts), "
                                   "ingest it into Milvus Lite, and run text and image searches with reranking.")
    p.add_argument("--dir", metavar="DIR", help="where to put the corpus and database (default: a new temp folder)")
    p.add_argument("--to", metavar="TARGET", help="database (default: milvus:DIR/demo.db)")
    p.add_argument("--collection", default=DEMO_COLLECTION, help=f"collection (default: {DEMO_COLLECTION})")
    p.add_argument("-k", type=int, default=3, help="hits per search (default: 3)")
    p.add_argument("--html", metavar="FILE", help="write the image-query results as an HTML page")
    p.add_argument("--offline-test-model", action="store_true",
                   help="use a tiny RANDOM checkpoint built locally (no download; results are meaningless)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    _add_model_args(p, reranker=True)
    p.set_defaults(func=run_demo)


# ============================================================================ shared helpers
def _err(message: str) -> None:
    print(f"qvl: {message}", file=sys.stderr)


def _is_url(spec: str) -> bool:
    return spec.lower().startswith(("http://", "https://"))


def load_embedder(spec: str, *, device: str = "auto") -> Any:
    """An ``Embedder`` for a checkpoint path / hub id, or a ``RemoteEmbedder`` for a ``qvl serve`` URL."""
    if _is_url(spec):
        from embedder.remote import RemoteEmbedder

        return RemoteEmbedder(spec)
    from embedder import Embedder

    return Embedder.from_pretrained(spec, device=device)


def load_reranker(spec: str, *, device: str = "auto") -> Any:
    """A ``Reranker`` for a checkpoint path / hub id, or a ``RemoteReranker`` for a ``qvl serve`` URL."""
    if _is_url(spec):
        from embedder.remote import RemoteReranker

        return RemoteReranker(spec)
    from embedder import Reranker

    return Reranker.from_pretrained(spec, device=device)


def _model_spec(args: argparse.Namespace) -> str:
    return args.model or os.environ.get("QVL_MODEL") or DEFAULT_MODEL


def _reranker_spec(args: argparse.Namespace) -> str:
    return getattr(args, "reranker", None) or os.environ.get("QVL_RERANKER") or DEFAULT_RERANKER


def _close(obj: Any) -> None:
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
    digest = hashlib.sha256(f"{source}\0{target}\0{collection}".encode()).hexdigest()[:16]
    return _cache_dir() / "ingest" / f"{digest}.state.jsonl"


def _progress_bar(total: int | None, *, enabled: bool, desc: str) -> tuple[Any, Callable[[Any], None]]:
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


def run_ingest(args: argparse.Namespace) -> int:
    """Handler of ``qvl ingest``; returns 0 when every row landed or was skipped, 1 when some failed,
    2 when the run could not start or stopped early, 130 on Ctrl-C."""
    import connectors
    from embedder.errors import QVLError

    from . import pipeline as pl

    for name, value in (("--batch-size", args.batch_size), ("--dim", args.dim), ("--limit", args.limit),
                        ("--retries", args.retries)):
        problem = _positive(name, value)
        if problem:
            _err(problem)
            return 2
    try:
        source = pl.open_source(args.source, from_sql=args.from_sql, query=args.query, fmt=args.fmt,
                                columns=_columns(args), media_root=args.media_root, recursive=args.recursive)
    except QVLError as exc:
        _err(str(exc))
        return 2
    embedder = store = None
    try:
        try:
            embedder = load_embedder(_model_spec(args), device=args.device)
            dim = args.dim or min(DEFAULT_DIM, int(embedder.dim))
            store = connectors.connect(args.to, collection=args.collection, embedder=embedder, dim=dim)
            store.create(exist_ok=True)
        except (QVLError, ValueError) as exc:
            _err(str(exc))
            return 2
        described = source.describe()
        state_path = pathlib.Path(args.state) if args.state else default_state_path(described, args.to,
                                                                                     args.collection)
        dead_letter = args.dead_letter or f"{args.collection}.dead-letters.jsonl"
        key = {"source": described, "target": args.to, "collection": args.collection, "dim": dim}
        bar, update = _progress_bar(source.estimate() if args.progress else None, enabled=args.progress,
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
            _err(f"ingest stopped: {cause}")
            if exc.summary.written:
                print(f"what landed is recorded in {state_path}; fix the cause and run the same command with "
                      "--resume", file=sys.stderr)
            return 2
        except QVLError as exc:
            bar.close()
            _err(str(exc))
            return 2
        bar.close()
        _print_summary(summary, resume_hint=hint if not summary.ok else None)
        return 0 if summary.ok else 1
    finally:
        _close(store)
        _close(embedder)


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

    Milvus takes the expression as is; Postgres takes it as an SQL condition; Weaviate and
    the in-memory store take ``key=value`` pairs (matched against fields, then metadata).
    """
    if not expr:
        return {}
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


def hit_record(rank: int, hit: Any) -> dict[str, Any]:
    """A JSON-ready dict for one hit."""
    fields = dict(hit.fields or {})
    return {"rank": rank, "id": hit.id, "score": round(float(hit.score), 6),
            "rerank_score": None if hit.rerank_score is None else round(float(hit.rerank_score), 6),
            "text": fields.pop("text", None), "media": fields.pop("media", None),
            "modality": fields.pop("modality", None), "metadata": fields.pop("metadata", None) or {},
            "fields": {k: v for k, v in fields.items() if not k.startswith("_")}}


def _clip(text: Any, width: int) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= width else s[: width - 1] + "…"


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of hits: rank, id, score, rerank score, modality, text, media."""
    if not records:
        return "(no hits)"
    reranked = any(r["rerank_score"] is not None for r in records)
    head = ["#", "id", "score"] + (["rerank"] if reranked else []) + ["kind", "text", "media"]
    rows = []
    for r in records:
        media = r["media"] or ""
        if media and not media.startswith(("http://", "https://", "data:")):
            media = _clip_path(media, 40)
        row = [str(r["rank"]), _clip(r["id"], 14), f"{r['score']:.4f}"]
        if reranked:
            row.append("-" if r["rerank_score"] is None else f"{r['rerank_score']:.4f}")
        row += [r["modality"] or "", _clip(r["text"], 48), media]
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _clip_path(path: str, width: int) -> str:
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            path = rel
    except ValueError:  # another drive (Windows)
        pass
    return path if len(path) <= width else "…" + path[-(width - 1):]


def _thumbnail(media: str, modality: str | None) -> str:
    """HTML for a hit's media: an inline JPEG thumbnail, a video's first frame, or a <video> tag."""
    if media.startswith(("http://", "https://")):
        tag = "video" if modality == "video" else "img"
        extra = " controls preload=\"metadata\"" if tag == "video" else ""
        return f'<{tag} src="{html.escape(media)}"{extra}></{tag}>' if tag == "video" else \
            f'<img src="{html.escape(media)}" alt="">'
    path = pathlib.Path(media)
    if not path.is_file():
        return f'<div class="missing">missing: {html.escape(media)}</div>'
    try:
        from PIL import Image

        if modality == "video" or path.suffix.lower() in {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}:
            frame = _first_frame(path)
            if frame is None:
                return (f'<video src="{html.escape(path.resolve().as_uri())}" controls preload="metadata">'
                        "</video>")
            img = frame
        else:
            with Image.open(path) as opened:
                img = opened.convert("RGB")
        img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return f'<img src="data:image/jpeg;base64,{data}" alt="{html.escape(path.name)}">'
    except Exception as exc:  # noqa: BLE001 - a broken file gets a note, not a crash
        return f'<div class="missing">cannot show {html.escape(path.name)}: {html.escape(str(exc))}</div>'


def _first_frame(path: pathlib.Path) -> Any:
    """The first frame of a video as a PIL image, or None when no decoder is available."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return frame.to_image().convert("RGB")
    except Exception as exc:  # noqa: BLE001
        log.debug("cannot decode %s: %s", path, exc)
    return None


def render_html(records: Sequence[dict[str, Any]], *, title: str) -> str:
    """A self-contained HTML page of hits, with inline thumbnails for image and video hits."""
    cards = []
    for r in records:
        media = r["media"] or ""
        visual = _thumbnail(media, r["modality"]) if media else ""
        scores = f"score {r['score']:.4f}"
        if r["rerank_score"] is not None:
            scores += f" · rerank {r['rerank_score']:.4f}"
        meta = html.escape(json.dumps(r["metadata"], ensure_ascii=False)) if r["metadata"] else ""
        cards.append(
            '<div class="hit">'
            f'<div class="rank">#{r["rank"]}</div>{visual}'
            f'<div class="scores">{html.escape(scores)}</div>'
            f'<div class="text">{html.escape(r["text"] or "")}</div>'
            f'<div class="meta">{html.escape(str(r["id"]))} {html.escape(media)}<br>{meta}</div>'
            "</div>")
    style = ("body{font-family:sans-serif;margin:1.5em}.grid{display:flex;flex-wrap:wrap;gap:12px}"
             ".hit{width:272px;border:1px solid #ddd;border-radius:6px;padding:8px}"
             ".hit img,.hit video{max-width:256px;max-height:256px;display:block;margin:auto}"
             ".rank{font-weight:bold}.scores{color:#555;font-size:90%}.meta{color:#888;font-size:75%;"
             "word-break:break-all}.missing{color:#a00;font-size:80%}")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<div class=\"grid\">{''.join(cards) or '<p>no hits</p>'}</div></body></html>\n")


def _describe_query(args: argparse.Namespace) -> str:
    parts = [repr(args.query)] if args.query else []
    parts += [f"{kind} {getattr(args, kind)}" for kind in ("image", "video") if getattr(args, kind, None)]
    return " + ".join(parts)


def run_search(args: argparse.Namespace) -> int:
    """Handler of ``qvl search``; 0 on success, 2 when the search could not run."""
    import connectors
    from embedder.errors import NotFoundError, QVLError

    if args.k < 1 or (args.candidates is not None and args.candidates < args.k):
        _err("-k must be positive and --candidates at least k")
        return 2
    try:
        query = _query_item(args)
    except (ValueError, OSError) as exc:
        _err(str(exc))
        return 2
    embedder = reranker = store = None
    try:
        try:
            embedder = load_embedder(_model_spec(args), device=args.device)
            reranker = load_reranker(_reranker_spec(args), device=args.device) if args.rerank else None
            store = connectors.connect(args.target, collection=args.collection, embedder=embedder, dim=args.dim)
            kwargs = filter_kwargs(store, args.filter)
            if reranker is not None:
                kwargs["rerank"] = reranker
                if args.candidates:
                    kwargs["candidates"] = args.candidates
            hits = store.search(query, k=args.k, **kwargs)
        except NotFoundError as exc:
            _err(f"{exc} (in {args.target}; ingest something first: qvl ingest SOURCE --to {args.target} "
                 f"--collection {args.collection})")
            return 2
        except (QVLError, ValueError) as exc:
            _err(str(exc))
            return 2
        records = [hit_record(i, h) for i, h in enumerate(hits, 1)]
        if args.json:
            print(json.dumps({"query": _describe_query(args), "target": args.target, "collection": args.collection,
                              "hits": records}, ensure_ascii=False, indent=2))
        else:
            print(format_table(records))
        if args.html:
            pathlib.Path(args.html).write_text(render_html(records, title=f"qvl search {_describe_query(args)}"),
                                               encoding="utf-8")
            if not args.json:
                print(f"wrote {args.html}")
        return 0
    finally:
        _close(store)
        _close(reranker)
        _close(embedder)


# ============================================================================ qvl demo
DEMO_COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 80, 220), "yellow": (240, 210, 20),
                "purple": (140, 50, 170)}
DEMO_SHAPES = ("circle", "square", "triangle", "star")
DEMO_TEXTS = {
    "tomatoes.txt": "Ripe tomatoes and strawberries are bright red fruit.",
    "sky.txt": "On a clear day the sky and the sea look deep blue.",
    "forest.txt": "A dense green forest of pine trees after the rain.",
    "bananas.txt": "A bunch of yellow bananas on the kitchen table.",
    "geometry.txt": "A polygon with three sides is called a triangle; one with four equal sides is a square.",
}


def _draw_shape(shape: str, colour: tuple[int, int, int], size: int = 160) -> Any:
    import math

    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (250, 250, 250))
    d = ImageDraw.Draw(img)
    m = size // 6
    box = (m, m, size - m, size - m)
    if shape == "circle":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
    elif shape == "triangle":
        d.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=colour)
    else:
        c, r_out, r_in = size / 2, size / 2 - m, (size / 2 - m) * 0.45
        pts = [(c + (r_out if i % 2 == 0 else r_in) * math.sin(i * math.pi / 5),
                c - (r_out if i % 2 == 0 else r_in) * math.cos(i * math.pi / 5)) for i in range(10)]
        d.polygon(pts, fill=colour)
    return img


def build_demo_corpus(folder: str | os.PathLike) -> pathlib.Path:
    """Write the demo corpus to ``folder``: 20 coloured shapes (most with a caption sidecar) and 5 texts.

    Returns the folder.
    """
    out = pathlib.Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for i, (colour, rgb) in enumerate(DEMO_COLOURS.items()):
        for j, shape in enumerate(DEMO_SHAPES):
            stem = f"{colour}_{shape}"
            _draw_shape(shape, rgb).save(out / f"{stem}.png")
            if (i + j) % 4 != 3:  # a few images go without a caption
                (out / f"{stem}.txt").write_text(f"A {colour} {shape} on a white background.\n", encoding="utf-8")
    for name, text in DEMO_TEXTS.items():
        (out / name).write_text(text + "\n", encoding="utf-8")
    return out


def _demo_models(args: argparse.Namespace, folder: pathlib.Path) -> tuple[Any, Any] | int:
    from embedder.errors import MissingDependencyError, ModelLoadError

    if args.offline_test_model:
        from embedder.testing import build_tiny_checkpoint

        print("=" * 78, file=sys.stderr)
        print("WARNING: --offline-test-model uses a tiny checkpoint with RANDOM weights, built locally.\n"
              "Everything runs for real (loading, preprocessing, embedding, database, reranking), but the\n"
              "scores and rankings below are RANDOM and mean nothing about the model's quality.",
              file=sys.stderr)
        print("=" * 78, file=sys.stderr)
        models = folder / ".models"
        try:
            emb_path = build_tiny_checkpoint(models / "tiny-embedding", kind="embedding")
            rr_path = build_tiny_checkpoint(models / "tiny-reranker", kind="reranker", seed=1)
        except MissingDependencyError as exc:
            _err(str(exc))
            return 2
        return load_embedder(emb_path, device="cpu"), load_reranker(rr_path, device="cpu")
    model, reranker_spec = _model_spec(args), _reranker_spec(args)
    try:
        print(f"loading {model} and {reranker_spec} (the first run downloads them) ...", file=sys.stderr)
        embedder = load_embedder(model, device=args.device)
    except ModelLoadError as exc:
        _demo_no_model(model, exc)
        return 1
    try:
        reranker = load_reranker(reranker_spec, device=args.device)
    except ModelLoadError as exc:
        _close(embedder)
        _demo_no_model(reranker_spec, exc)
        return 1
    return embedder, reranker


def _demo_no_model(spec: str, exc: BaseException) -> None:
    _err(f"cannot load the model {spec!r}.\n\n{exc}\n\n"
         "No model could be loaded: this machine may be offline with nothing cached. You can:\n"
         "  - point --model / --reranker (or $QVL_MODEL / $QVL_RERANKER) at local checkpoint folders or at a\n"
         "    running `qvl serve` URL, or\n"
         "  - run `qvl demo --offline-test-model` to try the whole pipeline with a tiny checkpoint built\n"
         "    locally. Its weights are RANDOM: it shows that everything runs, not what the model can do.")


def run_demo(args: argparse.Namespace) -> int:
    """Handler of ``qvl demo``: corpus -> ingest -> text and image searches with reranking."""
    import connectors
    from embedder.errors import MissingDependencyError, QVLError

    from . import pipeline as pl

    folder = pathlib.Path(args.dir).expanduser() if args.dir else pathlib.Path(tempfile.mkdtemp(prefix="qvl-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    loaded = _demo_models(args, folder)
    if isinstance(loaded, int):
        return loaded
    embedder, reranker = loaded
    store = None
    try:
        corpus = build_demo_corpus(folder / "corpus")
        print(f"sample corpus: {corpus} (20 shapes, most with a caption sidecar, and 5 texts)")
        dim = min(DEFAULT_DIM, int(embedder.dim))
        target = args.to or f"milvus:{folder / 'demo.db'}"
        try:
            store = connectors.connect(target, collection=args.collection, embedder=embedder, dim=None)
        except MissingDependencyError as exc:
            print(f"note: {exc}\nnote: using the in-memory store instead", file=sys.stderr)
            target = "memory:"
            store = connectors.connect(target, collection=args.collection, embedder=embedder, dim=dim)
        store.drop()  # the demo collection is rebuilt every time (the model or its dim may differ)
        _close(store)
        store = connectors.connect(target, collection=args.collection, embedder=embedder, dim=dim)
        store.create(exist_ok=True)
        source = pl.open_source(corpus)
        bar, update = _progress_bar(source.estimate(), enabled=args.progress, desc=f"ingest -> {args.collection}")
        try:
            summary = pl.ingest(source.rows(), store, embedder, dim=dim, batch_size=8,
                                dead_letter=folder / "dead-letters.jsonl", on_progress=update)
        finally:
            bar.close()
        print(f"ingested into {target} (collection {args.collection}, dim {dim}): {format_summary(summary)}")
        queries: list[tuple[str, Any]] = [
            ("text: 'a red circle'", "a red circle"),
            ("text: 'something blue and square'", "something blue and square"),
            ("text: 'fruit'", "fruit"),
            ("image: yellow_star.png", {"image": str(corpus / "yellow_star.png")}),
        ]
        image_records: list[dict[str, Any]] = []
        for label, query in queries:
            hits = store.search(query, k=args.k, rerank=reranker)
            records = [hit_record(i, h) for i, h in enumerate(hits, 1)]
            print(f"\n{label}  (top {args.k}, reranked)")
            print(format_table(records))
            if label.startswith("image"):
                image_records = records
        if args.html:
            page = render_html(image_records, title="qvl demo: image query yellow_star.png")
            pathlib.Path(args.html).write_text(page, encoding="utf-8")
            print(f"\nwrote {args.html}")
        if target != "memory:":
            models = f" --model {embedder.name} --reranker {reranker.name}" if (
                args.offline_test_model or args.model or args.reranker) else ""
            print(f"\nsearch it yourself:\n  qvl search \"a green triangle\" --in {target} --collection "
                  f"{args.collection} --rerank --html hits.html{models}")
        return 0 if summary.ok else 1
    except (QVLError, pl.IngestAborted) as exc:
        _err(str(exc))
        return 2
    finally:
        _close(store)
        _close(reranker)
        _close(embedder)

"""``qvl search``: search a collection with text, an image or both; a table, JSON or an HTML page of hits.

::

    qvl search "a red bicycle" --in milvus:./qvl.db --collection photos --rerank --html hits.html
    qvl search "revenue by quarter" --collection reports --group-by doc     # the best page of each PDF
"""
from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

from connectors.hits import format_table, group_by_doc, hit_record, render_html

from .common import (DEFAULT_COLLECTION, DEFAULT_TARGET, add_model_args, api_key_of, check_dim_arg,
                     checkpoint_dim, checkpoint_min_dim, close_quietly, load_embedder, load_reranker, model_spec,
                     one_line, open_target_first, print_error, print_missing_collection, reranker_spec)


#: --group-by doc looks at this many hits per document asked for
GROUP_FETCH = 5


def add_parser(subparsers: Any) -> None:
    """Add ``qvl search`` to the ``qvl`` command line."""
    _add_search(subparsers)


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
    p.add_argument("--where", "--filter", dest="where", metavar="EXPR",
                   help="a JSON object, the portable filter, the same on every database ('{\"color\": \"red\", "
                        "\"year\": {\"$gte\": 2020}}', values bound: safe for any input); or, for trusted input, "
                        "the database's own text form (a Milvus expression, an SQL condition for Postgres), or "
                        "key=value pairs (equalities) where the database has none (--filter is the old name)")
    p.add_argument("--rerank", action="store_true", help="rerank the vector hits with the reranker")
    p.add_argument("--candidates", type=int, help="vector hits to rerank (default: the store's)")
    p.add_argument("--dim", type=int, help="vector dimension (default: the collection's)")
    p.add_argument("--group-by", choices=["doc"], dest="group_by",
                   help="doc: the best page (or video window) of each document, k documents (from the best "
                        f"{GROUP_FETCH}k hits)")
    p.add_argument("--json", action="store_true", help="print hits as JSON")
    p.add_argument("--html", metavar="FILE", help="also write an HTML page with thumbnails")
    add_model_args(p, reranker=True)
    p.set_defaults(func=run_search)



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
    """The ``search`` keyword for a ``--where`` expression on this store.

    A JSON object (``{"color": "red"}``) is the portable filter (:mod:`connectors.filters`),
    the same on every store. Anything else is, on a store whose native filter is text
    (``text_filter``: Milvus expressions, Postgres SQL conditions), that text as is (trusted
    input); on the others, ``key=value`` pairs read as the portable filter's equalities.

    Raises:
        ValueError: text starting with ``{`` that is not a JSON object, or pairs that cannot be read.
    """
    if not expr:
        return {}
    if expr.lstrip().startswith("{"):
        try:
            portable = json.loads(expr)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--where {expr!r} starts with '{{' but is not valid JSON: {exc}") from None
        if not isinstance(portable, dict):
            raise ValueError(f"--where {expr!r} must be a JSON object")
        return {"filter": portable}
    if getattr(store, "text_filter", False):
        return {"filter": expr}
    return {"filter": _parse_pairs(expr)}


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
    spec = model_spec(args)
    problem = check_dim_arg(args.dim, full=checkpoint_dim(spec), minimum=checkpoint_min_dim(spec))
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
            kwargs = filter_kwargs(store, args.where)
            k = args.k * GROUP_FETCH if args.group_by else args.k
            if reranker is not None:
                kwargs["rerank"] = reranker
                if args.candidates or args.group_by:
                    kwargs["candidates"] = max(args.candidates or 0, k)
            hits = store.search(query, k=k, **kwargs)
            if args.group_by:
                hits = group_by_doc(hits, args.k)
        except NotFoundError as exc:
            print_missing_collection(exc, args.target, args.collection)
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

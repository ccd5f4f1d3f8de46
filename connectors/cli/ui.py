"""``qvl ui``: a search page for a collection, in the browser (:mod:`connectors.ui`).

::

    qvl ui --in milvus:./qvl.db --collection photos --media-root ~/Pictures
    qvl ui --in postgresql://... --collection docs --model http://127.0.0.1:8080 --reranker http://127.0.0.1:8080

The port is bound and the database checked before the model loads (a port in use or a typo
in ``--in`` costs a second); "serving on" is printed once the server listens. The key
(``--api-key`` or ``$QVL_API_KEY``) protects the page and, with ``--model URL``, is also the
key sent to that ``qvl serve``.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import (DEFAULT_COLLECTION, DEFAULT_TARGET, add_model_args, api_key_of, close_quietly, load_embedder,
                     load_reranker, model_spec, one_line, open_target_first, print_error, print_missing_collection)

DEFAULT_PORT = 8090


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``qvl ui`` to the ``qvl`` sub-commands."""
    p = subparsers.add_parser(
        "ui", help="a search page for a collection, in the browser",
        description="Serve a search page: a text box, an image upload (drop or paste), filters built from the "
                    "collection's fields, k, a rerank toggle, and a grid of hits with thumbnails and links to "
                    "the source. Media are served only from the --media-root folders.")
    p.add_argument("--in", dest="target", default=DEFAULT_TARGET, metavar="TARGET",
                   help=f"the database (default: {DEFAULT_TARGET})")
    p.add_argument("--collection", default=DEFAULT_COLLECTION,
                   help=f"collection / table (default: {DEFAULT_COLLECTION})")
    p.add_argument("--media-root", metavar="DIR", action="append", default=[],
                   help="show thumbnails of and link to media files only inside DIR (links resolved); repeat "
                        "for several folders. Without it no local file is served (hits show their path)")
    p.add_argument("--dim", type=int, help="vector dimension (default: the collection's)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, local only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT})")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest query image in MB (default: 10)")
    add_model_args(p, reranker=True)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """Handler of ``qvl ui``: 0 after a clean stop, 1 when the port cannot be bound, 2 on bad input."""
    import os

    from embedder.errors import NotFoundError, QVLError

    from .serve import bind_socket

    for root in args.media_root:
        if not os.path.isdir(os.path.expanduser(root)):
            print_error(f"--media-root {root!r} is not a folder")
            return 2
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print_error(str(exc))
        return 1
    key = api_key_of(args)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not key:
        print(f"warning: serving on {args.host} without an API key; anyone who can reach it can search "
              "and see the media", file=sys.stderr)
    embedder = reranker = store = None
    try:
        try:
            import connectors

            open_target_first(args.target, args.collection, dim=args.dim)
            embedder = load_embedder(model_spec(args), device=args.device, api_key=key)
            if args.reranker or os.environ.get("QVL_RERANKER"):
                reranker = load_reranker(args.reranker or os.environ["QVL_RERANKER"], device=args.device, api_key=key)
            store = connectors.connect(args.target, collection=args.collection, embedder=embedder, dim=args.dim)
            rows = store.count()  # NotFoundError when the collection does not exist
        except NotFoundError as exc:
            print_missing_collection(exc, args.target, args.collection)
            return 2
        except (QVLError, ValueError) as exc:
            print_error(one_line(exc))
            return 2
        return _serve(args, sock, store, reranker, key, rows)
    finally:
        sock.close()
        close_quietly(store)
        close_quietly(reranker)
        close_quietly(embedder)


def _serve(args: argparse.Namespace, sock: Any, store: Any, reranker: Any, key: str | None, rows: int) -> int:
    try:
        import uvicorn

        from connectors.ui import create_app
    except ImportError as exc:
        print_error(f'qvl ui needs the "server" extra: pip install -e ".[server]" ({exc})')
        return 2
    app = create_app(store, reranker=reranker, media_roots=args.media_root, api_key=key,
                     max_upload_bytes=int(args.max_upload_mb * 1024 * 1024))
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if ":" in args.host else args.host
    banner = (f"serving on http://{host}:{port} ({args.collection}: {rows} rows"
              f"{', reranker' if reranker else ''}{', auth on' if key else ''})")

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                print(banner, file=sys.stderr, flush=True)

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    Server(config).run(sockets=[sock])
    return 0

"""``qvl serve``: the command line of the embedding service.

Settings are read once here (flags, and ``QVL_API_KEY`` for the key) and passed down;
the library never reads the environment itself. Heavy imports happen in the handler.

The port is bound before the model is loaded, so a port in use is reported at once
(one line on stderr, exit 1) instead of after seconds of loading weights; "serving on"
is printed only once the server really listens.
"""
from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
from typing import Any

from embedder.service import ROUTE_NAMES, ServiceSettings

API_KEY_ENV = "QVL_API_KEY"


def _route_dim(text: str) -> tuple[str, int]:
    route, sep, value = text.partition("=")
    if not sep or route not in ROUTE_NAMES or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected ROUTE=N with ROUTE one of {list(ROUTE_NAMES)}, got {text!r}")
    return route, int(value)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to the ``qvl`` sub-commands; its ``func`` runs the server."""
    p = subparsers.add_parser(
        "serve", help="serve the embedder (and reranker) over HTTP",
        description="Run Qwen3-VL embedding/reranking as an HTTP service with dynamic batching. Speaks a native "
                    "API, DashScope's request shape, OpenAI /v1/embeddings, Hugging Face TEI /embed and /rerank, "
                    "and the Weaviate module protocols (multi2vec-clip, text2vec-transformers, "
                    "reranker-transformers).")
    p.add_argument("--model", required=True, metavar="PATH_OR_ID", help="embedding checkpoint (directory or hub id)")
    p.add_argument("--reranker", metavar="PATH_OR_ID", help="reranker checkpoint (enables /v1/rerank and /rerank)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, local only)")
    p.add_argument("--port", type=int, default=8080, help="TCP port (default: 8080)")
    p.add_argument("--api-key", default=None,
                   help=f"require 'Authorization: Bearer KEY' on model routes (default: env {API_KEY_ENV}). "
                        "Prefer the environment variable: command lines are visible to other users")
    p.add_argument("--allow-urls", action="store_true",
                   help="let requests name http(s) media URLs the server will fetch (SSRF risk; off by default)")
    p.add_argument("--allow-private-urls", action="store_true",
                   help="with --allow-urls, also fetch from loopback, private and link-local addresses "
                        "(off by default: internal services stay out of reach)")
    p.add_argument("--allow-paths", action="store_true",
                   help="let requests name files on the server (file disclosure risk; off by default)")
    p.add_argument("--path-root", metavar="DIR", action="append", default=[],
                   help="read only request paths whose real path (links resolved) is inside DIR; repeat to "
                        "allow several folders. Implies --allow-paths, confined to these folders")
    p.add_argument("--default-dim", type=int, default=None, metavar="N",
                   help="MRL dimension for requests that give none (default: the model's full size)")
    p.add_argument("--route-dim", type=_route_dim, action="append", default=[], metavar="ROUTE=N",
                   help=f"default dimension of one route family, e.g. clip=512; ROUTE is one of {list(ROUTE_NAMES)}")
    p.add_argument("--max-batch-tokens", type=int, default=None,
                   help="padded tokens per forward pass (default: 4096 on CPU, 16384 on GPU)")
    p.add_argument("--max-batch-items", type=int, default=64, help="items per forward pass")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="wait for more requests before a partial batch")
    p.add_argument("--max-queue", type=int, default=1024, help="items waiting for the model before 503")
    from embedder.items import LoadOptions  # light: no PIL, no torch

    d = ServiceSettings()
    p.add_argument("--max-items", type=int, default=d.max_items, help="items (or documents) per request (413 above)")
    p.add_argument("--max-body-bytes", type=int, default=d.max_body_bytes,
                   help=f"request body limit in bytes, refused before reading (413 above; default {d.max_body_bytes})")
    p.add_argument("--max-text-chars", type=int, default=d.max_text_chars,
                   help="characters of text per item, instruction included, refused before tokenising "
                        f"(413 above; default {d.max_text_chars})")
    p.add_argument("--max-frames", type=int, default=d.max_frames,
                   help=f"frames in one video frame list (413 above; default {d.max_frames})")
    lib = LoadOptions()
    p.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                   help="refuse images whose header announces more pixels, before decoding "
                        f"(413; default: the library's, {lib.max_source_pixels})")
    p.add_argument("--max-video-pixels", type=int, default=None, metavar="N",
                   help="refuse videos whose width x height x frames is larger, before decoding "
                        f"(413; default: the library's, {getattr(lib, 'max_video_pixels', 'none')})")
    p.add_argument("--url-timeout", type=float, default=None, metavar="SECONDS",
                   help="with --allow-urls: total seconds for one URL fetch (default: the library's)")
    p.add_argument("--url-min-rate", type=int, default=None, metavar="BYTES_PER_S",
                   help="with --allow-urls: slowest average transfer accepted (default: the library's)")
    p.add_argument("--max-url-bytes", type=int, default=None, metavar="N",
                   help="with --allow-urls: largest body fetched from a URL (default: the library's)")
    p.add_argument("--no-video", dest="allow_video", action="store_false",
                   help="refuse video items (no decoding of untrusted video at all)")
    p.add_argument("--max-inflight", type=int, default=d.max_inflight,
                   help=f"requests handled at once; one more is 503 at once (default {d.max_inflight})")
    p.add_argument("--max-inflight-bytes", type=int, default=d.max_inflight_bytes,
                   help=f"request body bytes held at once across requests (503 above; default {d.max_inflight_bytes})")
    p.add_argument("--max-preprocess-queue", type=int, default=d.max_preprocess_queue,
                   help=f"items waiting for preprocessing (503 above; default {d.max_preprocess_queue})")
    p.add_argument("--body-timeout", type=float, default=d.body_timeout,
                   help=f"seconds a client may take to send its body (408 after; default {d.body_timeout:g})")
    p.add_argument("--timeout", type=float, default=d.timeout, help="seconds per request before 504")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1, mps")
    p.add_argument("--preprocess-workers", type=int, default=2, help="threads decoding and tokenising inputs")
    p.set_defaults(func=run)
    return p


def settings_from_args(args: argparse.Namespace) -> ServiceSettings:
    """Build :class:`ServiceSettings` from parsed flags (the key falls back to ``QVL_API_KEY``)."""
    return ServiceSettings(
        model=args.model, reranker=args.reranker, host=args.host, port=args.port,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None,
        allow_urls=args.allow_urls, allow_private_urls=args.allow_private_urls, allow_paths=args.allow_paths or bool(args.path_root),
        path_roots=tuple(args.path_root) or None,
        default_dim=args.default_dim,
        route_dims=dict(args.route_dim), max_batch_tokens=args.max_batch_tokens,
        max_batch_items=args.max_batch_items, max_wait_ms=args.max_wait_ms, max_queue=args.max_queue,
        max_items=args.max_items, max_body_bytes=args.max_body_bytes, max_text_chars=args.max_text_chars,
        max_frames=args.max_frames, max_image_pixels=args.max_image_pixels, max_video_pixels=args.max_video_pixels,
        url_timeout=args.url_timeout, url_min_rate=args.url_min_rate, max_url_bytes=args.max_url_bytes,
        allow_video=args.allow_video, max_inflight=args.max_inflight, max_inflight_bytes=args.max_inflight_bytes,
        max_preprocess_queue=args.max_preprocess_queue, body_timeout=args.body_timeout,
        timeout=args.timeout, device=args.device, preprocess_workers=args.preprocess_workers)


def bind_socket(host: str, port: int) -> socket.socket:
    """Bind (not yet listen on) ``host:port`` for the server, so a port in use is known before loading.

    Raises:
        OSError: the address cannot be bound; the message says why in one line.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot resolve --host {host!r}: {exc.strerror}") from exc
    # IPv4 first unless the host is an IPv6 literal, as uvicorn binds ("localhost": 127.0.0.1).
    infos.sort(key=lambda info: info[0] != (socket.AF_INET6 if ":" in host else socket.AF_INET))
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no obstacle
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OSError(f"cannot listen on {host}:{port}: address already in use (another process holds the "
                          "port; stop it or pick another with --port)") from exc
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def run(args: argparse.Namespace) -> int:
    """Bind the port, load the models (failing fast with a clear message), then serve until interrupted."""
    try:
        settings = settings_from_args(args)
    except ValueError as exc:
        print(f"qvl serve: {exc}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(settings.host, settings.port)
    except OSError as exc:
        print(f"qvl serve: {exc}", file=sys.stderr)
        return 1
    try:
        return _load_and_serve(settings, sock)
    finally:
        sock.close()


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Cap glibc's malloc arenas for this process (``M_ARENA_MAX``), as ``MALLOC_ARENA_MAX`` would.

    The service decodes images and video frames on many threads (uvicorn's pool, the
    preprocessing workers); glibc gives threads arenas of their own, up to 8 per core, and keeps
    the memory each one freed, so the resident size ratchets up under concurrent large media
    (the soak test's peak). Two arenas keep it near the working set at no measurable cost to
    throughput. Called before any worker thread starts; a no-op (False) off glibc.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return bool(libc.mallopt(-8, int(arenas)))  # -8: M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def _load_and_serve(settings: Any, sock: socket.socket) -> int:
    from embedder.errors import QVLError

    limit_malloc_arenas()

    try:
        import uvicorn

        from embedder.embedder import Embedder
        from embedder.reranker import Reranker
        from embedder.service.app import create_app, load_option_values
    except ImportError as exc:
        print(f'qvl serve needs the "server" extra: pip install -e ".[server]" in the qvl checkout ({exc})', file=sys.stderr)
        return 2
    from embedder.items import LoadOptions

    try:
        load_option_values(settings, [f for f in LoadOptions.__dataclass_fields__])
    except ValueError as exc:
        print(f"qvl serve: {exc}", file=sys.stderr)
        return 2
    if settings.host not in ("127.0.0.1", "localhost", "::1") and not settings.api_key:
        print(f"warning: serving on {settings.host} without an API key; anyone who can reach it can use it",
              file=sys.stderr)
    from embedder.hub import quiet_model_loading

    quiet_model_loading()
    try:
        print(f"loading {settings.model} ...", file=sys.stderr)
        embedder = Embedder.from_pretrained(settings.model, device=settings.device,
                                            max_batch_tokens=settings.max_batch_tokens,
                                            allow_urls=settings.allow_urls, allow_paths=settings.allow_paths)
        reranker = None
        if settings.reranker:
            print(f"loading {settings.reranker} ...", file=sys.stderr)
            reranker = Reranker.from_pretrained(settings.reranker, device=settings.device,
                                                max_batch_tokens=settings.max_batch_tokens,
                                                allow_urls=settings.allow_urls, allow_paths=settings.allow_paths)
        if settings.default_dim is not None and not 64 <= settings.default_dim <= embedder.dim:
            print(f"qvl serve: --default-dim must be from 64 to {embedder.dim}, got {settings.default_dim}",
                  file=sys.stderr)
            return 2
    except QVLError as exc:
        print(f"qvl serve: {exc}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    banner = (f"serving on http://{settings.host}:{port} (dim {embedder.dim}"
              f"{', reranker' if reranker else ''}{', auth on' if settings.api_key else ''})")

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:  # listening: only now is "serving on" true
                print(banner, file=sys.stderr, flush=True)

    try:
        app = create_app(settings, embedder=embedder, reranker=reranker)
        config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        Server(config).run(sockets=[sock])
    finally:
        embedder.close()
        if reranker is not None:
            reranker.close()
    return 0

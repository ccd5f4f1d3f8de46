"""Start and stop a real Weaviate server binary for the tests.

The server itself is :func:`connectors.localdb.start_weaviate` (what ``qvl db weaviate``
runs; see :mod:`connectors.localdb.weaviate` for how the binary is built once per machine
into ``~/.cache/qvl/weaviate-bin`` and how it is locked down). The tests run it on
127.0.0.1 with free ports, a temporary data directory, anonymous access, no telemetry,
and the modules ``multi2vec-clip``, ``text2vec-transformers`` and
``reranker-transformers`` pointed at a ``qvl serve`` URL (``inference_url=``). The modules
do not wait for that service at start-up, so the service may be started later on the
reserved port.

``WEAVIATE_URL`` (e.g. ``http://127.0.0.1:8080``, ``?grpc=50051`` for a non-default gRPC
port) makes the tests use an external server instead.

:func:`start_qvl_serve` starts that ``qvl serve`` (``python -m connectors.cli serve``) on
127.0.0.1; :data:`SHARED_SERVICE` keeps one per test process on the shared server's
reserved port, so every test module that needs the modules uses the same service.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from typing import Iterator, Sequence

from connectors.localdb.common import LocalServerError, free_ports, wait_http
from connectors.localdb.weaviate import (BUILD_TIMEOUT_S, MODULES, WEAVIATE_MODULE, WEAVIATE_VERSION,  # noqa: F401
                                         WeaviateServer, cache_dir, ensure_binary, server_env, start_weaviate)

REPO = pathlib.Path(__file__).resolve().parents[2]

#: No Weaviate server can be provided on this machine; the message says why.
ServerUnavailable = LocalServerError


def stop_weaviate(server: WeaviateServer, *, grace: float = 20.0) -> None:
    """Stop a server started by :func:`start_weaviate` (SIGTERM, then SIGKILL). Idempotent."""
    server.stop(grace=grace)


@contextlib.contextmanager
def running_weaviate(data_dir: str | os.PathLike, **kwargs: object) -> Iterator[WeaviateServer]:
    """:func:`start_weaviate` as a context manager that always stops the server."""
    server = start_weaviate(data_dir, **kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        stop_weaviate(server)


def external_server() -> WeaviateServer | None:
    """The server named by ``WEAVIATE_URL`` (``http://host:port[?grpc=PORT]``), if set."""
    url = os.environ.get("WEAVIATE_URL", "").strip()
    if not url:
        return None
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    query = urllib.parse.parse_qs(parts.query)
    grpc = int(query.get("grpc", [os.environ.get("WEAVIATE_GRPC_PORT", "50051")])[0])
    scheme = "https" if parts.scheme == "https" else "http"
    return WeaviateServer(url=f"{scheme}://{parts.hostname}:{parts.port or 8080}", grpc_port=grpc,
                          inference_url=os.environ.get("WEAVIATE_INFERENCE_URL") or None)


# ---------------------------------------------------------------------------- qvl serve
@dataclass(frozen=True)
class QvlService:
    """A running ``qvl serve``.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        process: the service process.
        log_path: its combined stdout/stderr.
    """

    url: str
    process: subprocess.Popen
    log_path: pathlib.Path

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the service log."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


def start_qvl_serve(model: str | os.PathLike, *, port: int, log_path: str | os.PathLike,
                    reranker: str | os.PathLike | None = None, default_dim: int | None = None,
                    extra_args: Sequence[str] = (), timeout: float = 180.0) -> QvlService:
    """Start ``python -m connectors.cli serve`` on 127.0.0.1:``port`` and wait until it is ready.

    Args:
        model: embedding checkpoint (directory or hub id).
        port: the TCP port (e.g. the one a Weaviate server's modules were pointed at).
        log_path: file for the service's output.
        reranker: reranker checkpoint, if any.
        default_dim: ``--default-dim`` (the dimension of the Weaviate modules' vectors).
        extra_args: more ``qvl serve`` flags.
        timeout: seconds to wait for ``/.well-known/ready``.

    Raises:
        ServerUnavailable: the service exited or did not become ready (with its log tail).
    """
    cmd = [sys.executable, "-m", "connectors.cli", "serve", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port)]
    if reranker is not None:
        cmd += ["--reranker", str(reranker)]
    if default_dim is not None:
        cmd += ["--default-dim", str(default_dim)]
    cmd += list(extra_args)
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    log_path = pathlib.Path(log_path)
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    service = QvlService(url=f"http://127.0.0.1:{port}", process=proc, log_path=log_path)
    try:
        wait_http(f"{service.url}/.well-known/ready", timeout=timeout, process=proc, what="qvl serve")
    except ServerUnavailable as exc:
        stop_qvl_serve(service)
        raise ServerUnavailable(f"{exc}\n--- qvl serve log ---\n{service.log_tail()}") from None
    return service


def stop_qvl_serve(service: QvlService, *, grace: float = 20.0) -> None:
    """Stop a service started by :func:`start_qvl_serve` (SIGTERM, then SIGKILL). Idempotent."""
    proc = service.process
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def running_qvl_serve(model: str | os.PathLike, **kwargs: object) -> Iterator[QvlService]:
    """:func:`start_qvl_serve` as a context manager that always stops the service."""
    service = start_qvl_serve(model, **kwargs)  # type: ignore[arg-type]
    try:
        yield service
    finally:
        stop_qvl_serve(service)


# ---------------------------------------------------------------------------- shared per process
class SharedServer:
    """One Weaviate per test process, started on first use and stopped at exit.

    The modules point at ``inference_url``, a port reserved at start for a ``qvl serve``
    that tests start only when they need it (see ``test_weaviate.py``).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: WeaviateServer | None = None
        self._error: str | None = None
        self._tmp: str | None = None

    def get(self) -> WeaviateServer:
        """The shared server (external or started here).

        Raises:
            ServerUnavailable: no server can be provided (the reason is kept for later calls).
        """
        with self._lock:
            if self._server is not None:
                return self._server
            if self._error is not None:
                raise ServerUnavailable(self._error)
            try:
                self._server = external_server() or self._start()
            except ServerUnavailable as exc:
                self._error = str(exc)
                raise
            return self._server

    def _start(self) -> WeaviateServer:
        self._tmp = tempfile.mkdtemp(prefix="qvl-weaviate-")
        (inference_port,) = free_ports(1)
        server = start_weaviate(pathlib.Path(self._tmp) / "data", inference_url=f"http://127.0.0.1:{inference_port}")
        atexit.register(self.stop)
        return server

    def stop(self) -> None:
        """Stop the server started here and remove its data. Idempotent."""
        with self._lock:
            server, self._server = self._server, None
            if server is not None:
                stop_weaviate(server)
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None


SHARED = SharedServer()


class SharedService:
    """One ``qvl serve`` per test process, on the port the shared server's modules call.

    Started on first use with the checkpoints of that first caller (the session's tiny
    checkpoints) and stopped at exit.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._service: QvlService | None = None
        self._tmp: str | None = None

    def get(self, server: WeaviateServer, *, model: str | os.PathLike, reranker: str | os.PathLike | None = None,
            default_dim: int | None = None) -> QvlService:
        """The shared service for ``server`` (its ``inference_url``).

        Raises:
            ServerUnavailable: ``server`` has no inference URL, or the service did not start.
        """
        with self._lock:
            if self._service is not None and self._service.process.poll() is None:
                return self._service
            if not server.inference_url:
                raise ServerUnavailable("WEAVIATE_URL is set without WEAVIATE_INFERENCE_URL "
                                        "(the qvl serve URL its modules call)")
            port = urllib.parse.urlsplit(server.inference_url).port
            if port is None:
                raise ServerUnavailable(f"no port in the inference URL {server.inference_url!r}")
            self._tmp = self._tmp or tempfile.mkdtemp(prefix="qvl-serve-")
            self._service = start_qvl_serve(model, port=port, reranker=reranker, default_dim=default_dim,
                                            log_path=pathlib.Path(self._tmp) / "serve.log")
            atexit.register(self.stop)
            return self._service

    def stop(self) -> None:
        """Stop the service started here. Idempotent."""
        with self._lock:
            service, self._service = self._service, None
            if service is not None:
                stop_qvl_serve(service)
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None


SHARED_SERVICE = SharedService()

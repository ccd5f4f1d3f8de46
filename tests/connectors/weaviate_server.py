"""Start and stop a real Weaviate server binary for the tests.

No package registry ships the Weaviate server, but it is a Go module: when the binary
is missing and ``go`` is on ``PATH`` it is built once per machine with::

    GOBIN=~/.cache/qvl/weaviate-bin go install github.com/weaviate/weaviate/cmd/weaviate-server@v1.38.11

(``$XDG_CACHE_HOME`` is honoured; the first build takes minutes). The server runs on
127.0.0.1 with free ports, a temporary data directory, anonymous access, no telemetry,
and the modules ``multi2vec-clip``, ``text2vec-transformers`` and
``reranker-transformers`` pointed at a ``qvl serve`` URL. The modules do not wait for
that service at start-up, so the service may be started later on the reserved port.

``WEAVIATE_URL`` (e.g. ``http://127.0.0.1:8080``, ``?grpc=50051`` for a non-default gRPC
port) makes the tests use an external server instead.

:func:`start_qvl_serve` starts that ``qvl serve`` (``python -m connectors.cli serve``) on
127.0.0.1; :data:`SHARED_SERVICE` keeps one per test process on the shared server's
reserved port, so every test module that needs the modules uses the same service.

Weaviate 1.38 binds two listeners to every interface, with no setting to change that:
the public gRPC API and the internal cluster (data) API; the latter is protected with
throw-away basic-auth credentials. Everything else binds 127.0.0.1.
"""
from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pathlib
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Iterator, Sequence

log = logging.getLogger(__name__)

WEAVIATE_VERSION = "v1.38.11"
WEAVIATE_MODULE = f"github.com/weaviate/weaviate/cmd/weaviate-server@{WEAVIATE_VERSION}"
MODULES = ("multi2vec-clip", "text2vec-transformers", "reranker-transformers")
BUILD_TIMEOUT_S = 1200
REPO = pathlib.Path(__file__).resolve().parents[2]


class ServerUnavailable(RuntimeError):
    """No Weaviate server can be provided on this machine; the message says why."""


@dataclass(frozen=True)
class WeaviateServer:
    """A running Weaviate server.

    Attributes:
        url: ``http://host:port`` of the REST API.
        grpc_port: the gRPC port.
        inference_url: the ``qvl serve`` URL the modules call, or None (external server).
        process: the server process, or None for an external server.
        data_dir: the data directory (None for an external server).
        log_path: the server's combined stdout/stderr (None for an external server).
    """

    url: str
    grpc_port: int
    inference_url: str | None = None
    process: subprocess.Popen | None = None
    data_dir: pathlib.Path | None = None
    log_path: pathlib.Path | None = None

    @property
    def target(self) -> str:
        """The connector target, ``weaviate://host:port?grpc=PORT``."""
        parts = urllib.parse.urlsplit(self.url)
        return f"weaviate://{parts.hostname}:{parts.port or 8080}?grpc={self.grpc_port}"

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def http_port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or 8080

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the server log (empty for an external server)."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])


# ---------------------------------------------------------------------------- binary
def cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/qvl/weaviate-bin`` (default ``~/.cache/qvl/weaviate-bin``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "qvl" / "weaviate-bin"


def ensure_binary(*, build: bool = True) -> pathlib.Path:
    """The cached ``weaviate-server`` binary, built with ``go install`` when missing.

    Raises:
        ServerUnavailable: the binary is missing and cannot be built (no ``go``, or the
            build failed); the message says which.
    """
    gobin = cache_dir()
    binary = gobin / "weaviate-server"
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = shutil.which("go")
    if go is None or not build:
        raise ServerUnavailable(f"no Weaviate server: {binary} is missing and `go` is not on PATH "
                                f"(build it with GOBIN={gobin} go install {WEAVIATE_MODULE}, or set WEAVIATE_URL)")
    gobin.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOBIN=str(gobin))
    env.setdefault("GOFLAGS", "-buildvcs=false")
    log.warning("building the Weaviate server (%s); this takes a few minutes once per machine", WEAVIATE_VERSION)
    started = time.monotonic()
    try:
        proc = subprocess.run([go, "install", WEAVIATE_MODULE], env=env, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise ServerUnavailable(f"building the Weaviate server took over {BUILD_TIMEOUT_S} s") from exc
    if proc.returncode != 0 or not binary.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise ServerUnavailable(f"`go install {WEAVIATE_MODULE}` failed (exit {proc.returncode}):\n{tail}")
    log.warning("built %s in %.0f s", binary, time.monotonic() - started)
    return binary


# ---------------------------------------------------------------------------- ports
def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_http(url: str, *, timeout: float, process: subprocess.Popen | None = None,
              what: str = "server") -> None:
    """Poll ``url`` until it answers 2xx; fail early when ``process`` exits."""
    deadline = time.monotonic() + timeout
    last = ""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerUnavailable(f"{what} exited with code {process.returncode} before it was ready")
        try:
            with opener.open(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ServerUnavailable(f"{what} not ready at {url} after {timeout:.0f} s ({last})")


# ---------------------------------------------------------------------------- server
def server_env(data_dir: pathlib.Path, *, grpc_port: int, cluster_ports: tuple[int, int, int, int],
               inference_url: str | None) -> dict[str, str]:
    """The environment of a private single-node Weaviate on 127.0.0.1."""
    gossip, data, raft, raft_rpc = cluster_ports
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update({
        "PERSISTENCE_DATA_PATH": str(data_dir),
        "AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED": "true",
        "AUTHENTICATION_APIKEY_ENABLED": "false",
        "AUTHORIZATION_RBAC_ENABLED": "false",
        "DEFAULT_VECTORIZER_MODULE": "none",
        "DISABLE_TELEMETRY": "true",
        "LOG_LEVEL": "warning",
        "QUERY_DEFAULTS_LIMIT": "25",
        "GRPC_PORT": str(grpc_port),
        "CLUSTER_HOSTNAME": "node1",
        "CLUSTER_BIND_ADDR": "127.0.0.1",
        "CLUSTER_ADVERTISE_ADDR": "127.0.0.1",
        "CLUSTER_GOSSIP_BIND_PORT": str(gossip),
        "CLUSTER_DATA_BIND_PORT": str(data),
        "RAFT_PORT": str(raft),
        "RAFT_INTERNAL_RPC_PORT": str(raft_rpc),
        "RAFT_JOIN": f"node1:{raft_rpc}",
        "RAFT_BOOTSTRAP_EXPECT": "1",
        # The internal cluster API listens on every interface (Weaviate has no host
        # setting for it): protect it with throw-away credentials.
        "CLUSTER_BASIC_AUTH_USERNAME": "qvl-" + secrets.token_hex(4),
        "CLUSTER_BASIC_AUTH_PASSWORD": secrets.token_urlsafe(24),
        "GO_PROFILING_DISABLE": "true",
        "PROMETHEUS_MONITORING_ENABLED": "false",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    if inference_url:
        env.update({
            "ENABLE_MODULES": ",".join(MODULES),
            "CLIP_INFERENCE_API": inference_url,
            "TRANSFORMERS_INFERENCE_API": inference_url,
            "RERANKER_INFERENCE_API": inference_url,
            # The service may start after Weaviate (on the reserved port).
            "CLIP_WAIT_FOR_STARTUP": "false",
            "TRANSFORMERS_WAIT_FOR_STARTUP": "false",
            "RERANKER_WAIT_FOR_STARTUP": "false",
        })
    return env


def start_weaviate(data_dir: str | os.PathLike, *, inference_url: str | None = None,
                   binary: str | os.PathLike | None = None, timeout: float = 90.0) -> WeaviateServer:
    """Start a single-node Weaviate on 127.0.0.1 and wait until it is ready.

    Args:
        data_dir: an empty directory for its data (the log goes next to it).
        inference_url: ``qvl serve`` URL for the three modules (None: no modules).
        binary: the server binary (default: :func:`ensure_binary`).
        timeout: seconds to wait for readiness.

    Raises:
        ServerUnavailable: no binary, or the server did not become ready.
    """
    data_dir = pathlib.Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = pathlib.Path(binary) if binary else ensure_binary()
    http_port, grpc_port, *cluster = free_ports(6)
    env = server_env(data_dir, grpc_port=grpc_port, cluster_ports=tuple(cluster),  # type: ignore[arg-type]
                     inference_url=inference_url)
    log_path = data_dir.with_name(data_dir.name + ".log")
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([str(binary), "--host", "127.0.0.1", "--port", str(http_port), "--scheme", "http"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = WeaviateServer(url=f"http://127.0.0.1:{http_port}", grpc_port=grpc_port, inference_url=inference_url,
                            process=proc, data_dir=data_dir, log_path=log_path)
    try:
        wait_http(f"{server.url}/v1/.well-known/ready", timeout=timeout, process=proc, what="Weaviate")
    except ServerUnavailable as exc:
        stop_weaviate(server)
        raise ServerUnavailable(f"{exc}\n--- weaviate log ---\n{server.log_tail()}") from None
    log.info("Weaviate %s ready at %s (gRPC %d)", WEAVIATE_VERSION, server.url, grpc_port)
    return server


def stop_weaviate(server: WeaviateServer, *, grace: float = 20.0) -> None:
    """Stop a server started by :func:`start_weaviate` (SIGTERM, then SIGKILL). Idempotent."""
    proc = server.process
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        log.warning("Weaviate did not stop within %.0f s; killing it", grace)
        proc.kill()
        proc.wait(timeout=10)


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

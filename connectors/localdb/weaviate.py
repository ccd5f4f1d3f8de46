"""A local Weaviate server, from the Weaviate binary (built once with Go).

No package registry ships the Weaviate server, but it is a Go module: when the binary is
missing and ``go`` (>= 1.26) is on ``PATH``, :func:`ensure_binary` builds it once per machine::

    GOBIN=~/.cache/qvl/weaviate-bin go install github.com/weaviate/weaviate/cmd/weaviate-server@v1.38.11

(``$XDG_CACHE_HOME`` is honoured; the build takes a few minutes). :func:`start_weaviate`
runs it as a private single node::

    from connectors.localdb import start_weaviate

    with start_weaviate("./wv") as wv:         # ports remembered in ./wv for the next start
        print(wv.target)                        # weaviate://127.0.0.1:PORT?grpc=PORT
        store = connectors.connect(wv.target, collection="Photos", embedder=emb)

It binds the REST API to 127.0.0.1, allows anonymous access (a local playground), sends no
telemetry, and keeps its data in the folder given. Weaviate 1.38 binds two listeners to
every interface, with no setting to change that: the public gRPC API and the internal
cluster (data) API; the latter is protected with throw-away basic-auth credentials (new
at every start). ``inference_url=`` enables the ``multi2vec-clip``,
``text2vec-transformers`` and ``reranker-transformers`` modules pointed at a ``qvl serve``.
"""
from __future__ import annotations

import fcntl
import logging
import os
import pathlib
import secrets
import shutil
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass
from typing import Callable

from connectors.localdb.common import (LocalServerError, check_port, free_ports, log_tail, port_is_free, read_state,
                                       wait_http, write_state)

log = logging.getLogger(__name__)

WEAVIATE_VERSION = "v1.38.11"
WEAVIATE_MODULE = f"github.com/weaviate/weaviate/cmd/weaviate-server@{WEAVIATE_VERSION}"
WEAVIATE_IMAGE = f"cr.weaviate.io/semitechnologies/weaviate:{WEAVIATE_VERSION.lstrip('v')}"
GO_VERSION = "1.26"
MODULES = ("multi2vec-clip", "text2vec-transformers", "reranker-transformers")
BUILD_TIMEOUT_S = 1200
LOG_FILE = "weaviate.log"
# state-file keys of the six ports, in the order free_ports() hands them out
PORT_KEYS = ("port", "grpc_port", "gossip_port", "data_port", "raft_port", "raft_rpc_port")


@dataclass(frozen=True)
class WeaviateServer:
    """A Weaviate server (started here, or an external one).

    Attributes:
        url: ``http://host:port`` of the REST API.
        grpc_port: the gRPC port.
        inference_url: the ``qvl serve`` URL the modules call, or None (no modules / unknown).
        process: the server process, or None for an external server (never stopped).
        data_dir: the data folder (None for an external server).
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

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (None otherwise, or for an external server)."""
        return self.process.pid if self.is_running() else None

    def is_running(self) -> bool:
        """True while the server started here runs."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, n: int = 40) -> str:
        """The last ``n`` lines of the server log (empty for an external server)."""
        return log_tail(self.log_path, n)

    def stop(self, *, grace: float = 20.0) -> None:
        """Stop a server started here: SIGTERM (Weaviate flushes its data), SIGKILL after ``grace`` s.

        Idempotent; an external server is left alone.
        """
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("Weaviate did not stop within %.0f s; killing it", grace)
            proc.kill()
            proc.wait(timeout=10)

    close = stop

    def __enter__(self) -> "WeaviateServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------- binary
def cache_dir() -> pathlib.Path:
    """``$XDG_CACHE_HOME/qvl/weaviate-bin`` (default ``~/.cache/qvl/weaviate-bin``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "qvl" / "weaviate-bin"


def binary_path() -> pathlib.Path:
    """Where the cached ``weaviate-server`` binary is (or will be)."""
    return cache_dir() / "weaviate-server"


def no_go_message() -> str:
    """What to do when the binary is missing and ``go`` is not on PATH."""
    return (f"no Weaviate server binary: {binary_path()} is missing and `go` is not on PATH to build it. "
            f"Install Go >= {GO_VERSION} (https://go.dev/dl/) and run the command again (it builds Weaviate "
            f"{WEAVIATE_VERSION} once, a few minutes), or run Weaviate with Docker: docker run -p 8080:8080 "
            f"-p 50051:50051 -e AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED=true -e DISABLE_TELEMETRY=true "
            f"{WEAVIATE_IMAGE} (then use weaviate://localhost:8080)")


def ensure_binary(*, build: bool = True, progress: Callable[[str], None] | None = None) -> pathlib.Path:
    """The cached ``weaviate-server`` binary, built with ``go install`` when missing.

    Args:
        build: build it when missing (False: only look).
        progress: called with a line before and after a build (default: a log warning).

    Raises:
        LocalServerError: the binary is missing and cannot be built (no ``go``, or the
            build failed); the message says which and what to do.
    """
    gobin = cache_dir()
    binary = binary_path()
    if binary.is_file() and os.access(binary, os.X_OK):
        return binary
    go = shutil.which("go")
    if go is None or not build:
        raise LocalServerError(no_go_message())
    gobin.mkdir(parents=True, exist_ok=True)
    # One build per machine: a second process (another `qvl db weaviate`, a second test worker)
    # waits for the first one's build instead of compiling the same module next to it.
    with open(gobin / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
        return _build(go, gobin, binary, progress or log.warning)


def _build(go: str, gobin: pathlib.Path, binary: pathlib.Path, say: Callable[[str], None]) -> pathlib.Path:
    env = dict(os.environ, GOBIN=str(gobin))
    env.setdefault("GOFLAGS", "-buildvcs=false")
    say(f"building Weaviate {WEAVIATE_VERSION} once into {gobin} with {go} (a few minutes) ...")
    started = time.monotonic()
    try:
        proc = subprocess.run([go, "install", WEAVIATE_MODULE], env=env, capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise LocalServerError(f"building the Weaviate server took over {BUILD_TIMEOUT_S} s") from exc
    if proc.returncode != 0 or not binary.is_file():
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise LocalServerError(f"`go install {WEAVIATE_MODULE}` failed (exit {proc.returncode}; it needs Go >= "
                               f"{GO_VERSION} and network access to the Go module proxy):\n{tail}")
    say(f"built {binary} in {time.monotonic() - started:.0f} s")
    return binary


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
            # The service may start after Weaviate.
            "CLIP_WAIT_FOR_STARTUP": "false",
            "TRANSFORMERS_WAIT_FOR_STARTUP": "false",
            "RERANKER_WAIT_FOR_STARTUP": "false",
        })
    return env


def _choose_ports(state: dict, port: int | None, grpc_port: int | None) -> list[int]:
    """The six ports: chosen, else those of the last start when free, else free ones."""
    chosen: dict[str, int] = {}
    if port is not None:
        chosen["port"] = check_port(port, "Weaviate HTTP", "--port")
    if grpc_port is not None:
        chosen["grpc_port"] = check_port(grpc_port, "Weaviate gRPC", "--grpc-port")
    if port is not None and port == grpc_port:
        raise LocalServerError(f"--port and --grpc-port are both {port}: they must differ")
    spare = iter(free_ports(len(PORT_KEYS)))
    ports = []
    for key in PORT_KEYS:
        if key in chosen:
            ports.append(chosen[key])
            continue
        saved = state.get(key)
        if isinstance(saved, int) and saved not in chosen.values() and saved not in ports and port_is_free(saved):
            ports.append(saved)
            continue
        if saved and key in ("port", "grpc_port"):
            log.warning("Weaviate's %s %s (used last time) is in use; choosing another", key, saved)
        new = next(spare)
        while new in chosen.values() or new in ports:
            new = next(spare)
        ports.append(new)
    return ports


def start_weaviate(data_dir: str | os.PathLike, *, port: int | None = None, grpc_port: int | None = None,
                   inference_url: str | None = None, binary: str | os.PathLike | None = None,
                   log_path: str | os.PathLike | None = None, timeout: float = 90.0) -> WeaviateServer:
    """Start a single-node Weaviate on 127.0.0.1 and wait until it is ready.

    Args:
        data_dir: the data folder (created if missing; kept across restarts).
        port: the REST port (default: the one this folder used last time if free, else a free one).
        grpc_port: the gRPC port (same default).
        inference_url: ``qvl serve`` URL for the three modules (None: no modules).
        binary: the server binary (default: :func:`ensure_binary`, which may build it).
        log_path: the server's output (default: ``weaviate.log`` in ``data_dir``).
        timeout: seconds to wait for readiness.

    Returns:
        The running server; ``stop()`` it (or use it as a context manager).

    Raises:
        LocalServerError: no binary, a port in use, or the server did not become ready (with its log).
    """
    data_dir = pathlib.Path(data_dir).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    binary = pathlib.Path(binary) if binary else ensure_binary()
    state = read_state(data_dir)
    http_port, grpc, *cluster = _choose_ports(state, port, grpc_port)
    env = server_env(data_dir, grpc_port=grpc, cluster_ports=tuple(cluster),  # type: ignore[arg-type]
                     inference_url=inference_url)
    log_path = pathlib.Path(log_path) if log_path else data_dir / LOG_FILE
    with open(log_path, "ab") as out:
        proc = subprocess.Popen([str(binary), "--host", "127.0.0.1", "--port", str(http_port), "--scheme", "http"],
                                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    server = WeaviateServer(url=f"http://127.0.0.1:{http_port}", grpc_port=grpc, inference_url=inference_url,
                            process=proc, data_dir=data_dir, log_path=log_path)
    try:
        wait_http(f"{server.url}/v1/.well-known/ready", timeout=timeout, process=proc, what="Weaviate")
    except LocalServerError as exc:
        server.stop()
        raise LocalServerError(f"{exc}\n--- {log_path} ---\n{server.log_tail()}") from None
    write_state(data_dir, {**state, **dict(zip(PORT_KEYS, [http_port, grpc, *cluster]))})
    log.info("Weaviate %s ready at %s (gRPC %d)", WEAVIATE_VERSION, server.url, grpc)
    return server

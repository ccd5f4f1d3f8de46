"""What the local servers share: their error, free ports, readiness polling, the state file.

The state file (``qvl-localdb.json`` in the data folder) remembers what a restart needs to
come back the same: the ports (so the URL stays the same) and, for PostgreSQL, the password.
"""
from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from embedder.errors import UnavailableError

STATE_FILE = "qvl-localdb.json"


class LocalServerError(UnavailableError):
    """A local database server cannot be started (or stopped); the message says why and what to do."""


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


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server can listen on ``host:port`` now (nothing listens there).

    Like the servers (PostgreSQL and Go set ``SO_REUSEADDR``), connections of a stopped
    server still in TIME_WAIT do not count.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_port(port: int, what: str, flag: str) -> int:
    """``port`` if it is a valid TCP port that is free on 127.0.0.1.

    Raises:
        LocalServerError: naming the port, what it was for and the flag that chooses another.
    """
    if not 1 <= port <= 65535:
        raise LocalServerError(f"{what} port {port} is not a TCP port (allowed: 1..65535)")
    if not port_is_free(port):
        raise LocalServerError(f"{what} port {port} on 127.0.0.1 is in use: stop what listens there or choose "
                               f"another with {flag} N")
    return port


def wait_http(url: str, *, timeout: float, process: subprocess.Popen | None = None,
              what: str = "server") -> None:
    """Poll ``url`` until it answers 2xx; fail early when ``process`` exits.

    Raises:
        LocalServerError: the process exited, or ``timeout`` seconds passed.
    """
    deadline = time.monotonic() + timeout
    last = ""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise LocalServerError(f"{what} exited with code {process.returncode} before it was ready")
        try:
            with opener.open(url, timeout=2) as resp:
                if 200 <= resp.status < 300:
                    return
                last = f"HTTP {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise LocalServerError(f"{what} not ready at {url} after {timeout:.0f} s ({last})")


def read_state(data_dir: pathlib.Path) -> dict[str, Any]:
    """The saved state of the server in ``data_dir`` (empty when there is none or it is unreadable)."""
    try:
        state = json.loads((data_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def write_state(data_dir: pathlib.Path, state: dict[str, Any]) -> None:
    """Save ``state`` in ``data_dir`` (readable by this user only: it may hold a password)."""
    path = data_dir / STATE_FILE
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(state, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def log_tail(path: pathlib.Path | None, n: int = 30) -> str:
    """The last ``n`` lines of a log file (empty when there is none)."""
    if path is None:
        return ""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""

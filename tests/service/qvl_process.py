"""``qvl serve`` as users run it: the real console script in its own process, on 127.0.0.1."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator, Sequence

from ..conftest import skip_or_fail


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def qvl_executable() -> str:
    exe = shutil.which("qvl") or os.path.join(os.path.dirname(sys.executable), "qvl")
    if not os.path.exists(exe):
        skip_or_fail("the 'qvl' console script is not installed (pip install -e .)")
    return exe


@dataclass
class ServeProcess:
    """A running ``qvl serve``: its URL, process and the stderr lines it printed so far."""

    url: str
    process: subprocess.Popen
    stderr: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid


def start(model: str, *, args: Sequence[str] = (), env: dict[str, str] | None = None,
          timeout: float = 120.0) -> ServeProcess:
    """Start ``qvl serve --model MODEL ARGS`` on a free port and wait until it prints "serving on"."""
    port = free_port()
    cmd = [qvl_executable(), "serve", "--model", model, "--port", str(port), "--device", "cpu", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    served = ServeProcess(f"http://127.0.0.1:{port}", proc)
    listening = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            served.stderr.append(line.rstrip("\n"))
            if line.startswith("serving on"):
                listening.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not listening.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(served)
            raise RuntimeError("qvl serve did not start: " + " | ".join(served.stderr[-5:]))
    return served


def stop(served: ServeProcess) -> None:
    if served.process.poll() is None:
        served.process.terminate()
        try:
            served.process.wait(20)
        except subprocess.TimeoutExpired:
            served.process.kill()
            served.process.wait(10)


class PeakRSS:
    """Samples a process's resident memory every few milliseconds; ``peak`` and ``baseline`` in bytes."""

    def __init__(self, pid: int, interval: float = 0.005) -> None:
        import psutil

        self._proc = psutil.Process(pid)
        self.interval = interval
        self.baseline = self._proc.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self._proc.memory_info().rss)
            except Exception:  # noqa: BLE001 - the process ended
                return
            time.sleep(self.interval)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def raw_request(url: str, head: bytes, body_parts: Iterator[bytes] | Sequence[bytes] = (), *,
                read_timeout: float = 30.0) -> tuple[int, dict[str, str], bytes, float]:
    """Send a hand-made HTTP/1.1 request on a raw socket; return (status, headers, body, seconds).

    Sending stops at the first error (the server may answer and close before the body is
    all sent: that is the point of several tests); the response is read either way.
    """
    host, port = url.removeprefix("http://").split(":")
    start = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=read_timeout) as sock:
        try:
            sock.sendall(head)
            for part in body_parts:
                sock.sendall(part)
        except OSError:
            pass
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
    seconds = time.perf_counter() - start
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body, seconds


def _expected_length(data: bytes) -> int:
    head, sep, _ = data.partition(b"\r\n\r\n")
    if not sep:
        return 1 << 62
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value.strip())
    return 1 << 62

"""Soak test of ``qvl serve`` under hostile traffic (issue 14, "Done when").

Starts the real ``qvl serve`` (the console script) on 127.0.0.1 with the tiny test
checkpoint (``embedder.testing.build_tiny_checkpoint``, or ``--checkpoint``) and
configured limits, then drives it for ``--duration`` seconds with, all at once:

* huge texts (a 20 MB text over the body cap, a 6 MB one under it: both 413);
* pathological base64 (60 KB and 2 MB of base64 characters and whitespace, then a bad one);
* huge bodies (a declared 200 MB body, an endless chunked one) and bodies held open;
* many concurrent ordinary requests (texts and small images), more than ``--max-inflight``;
* clients that hang up right after sending 48 items, and in the middle of their body;
* a frame list of one huge (4096 x 4096) frame repeated 64 times;
* hostile videos (8 frames of 4K, over ``--max-video-pixels``, and of 1080p, within it;
  when PyAV is installed and ``--no-video`` is not given);
* a health check every 50 ms, whose latency is recorded.

It samples the server's resident memory every 20 ms and prints requests by kind and
status, peak RSS against the budget (the RSS after warm-up, with ordinary requests and one
accepted 1080p video, plus ``--budget-mb``) and
the health check's p50/p99 latency. Exit status 1 if any 5xx other than 503 appears
(seen by the clients, or counted in the server's own ``/metrics``, which also holds the
requests of clients that left), if RSS passes the budget, or if the health check's p99
passes ``--max-health-p99``.

Usage:
    python benchmarks/soak_service.py                    # 60 s
    python benchmarks/soak_service.py --duration 20 --no-video
"""
from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Callable, Iterator

MB = 1024 * 1024
HOST = "127.0.0.1"


# ---------------------------------------------------------------------------- the server
def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start_server(checkpoint: str, port: int, limits: list[str]) -> subprocess.Popen:
    exe = shutil.which("qvl") or os.path.join(os.path.dirname(sys.executable), "qvl")
    cmd = [exe, "serve", "--model", checkpoint, "--host", HOST, "--port", str(port), "--device", "cpu", *limits]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = threading.Event()
    lines: list[str] = []

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip())
            if line.startswith("serving on"):
                started.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 180
    while not started.wait(0.1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("qvl serve did not start: " + " | ".join(lines[-5:]))
    return proc


# ---------------------------------------------------------------------------- HTTP on raw sockets
def request(port: int, method: str, path: str, body_parts: Iterator[bytes] | list[bytes] = (), *,
            length: int | None = None, chunked: bool = False, hang_up_after: float | None = None,
            timeout: float = 60.0) -> int:
    """One HTTP/1.1 request; the status (0: connection error or hung up on purpose)."""
    size = "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length or 0}\r\n"
    head = (f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n{size}"
            "Connection: close\r\n\r\n").encode()
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            try:
                sock.sendall(head)
                for part in body_parts:
                    sock.sendall(part)
            except OSError:
                pass  # the server answered and closed before the body was all sent
            if hang_up_after is not None:
                time.sleep(hang_up_after)
                return 0
            data = b""
            while b"\r\n" not in data:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    except OSError:
        return 0


def post_json(port: int, path: str, obj: object, **kwargs: object) -> int:
    body = json.dumps(obj).encode()
    return request(port, "POST", path, [body], length=len(body), **kwargs)


# ---------------------------------------------------------------------------- hostile inputs
def png_uri(width: int, height: int, seed: int = 0, solid: bool = False) -> str:
    import numpy as np
    from PIL import Image

    if solid:
        img = Image.new("RGB", (width, height), (200, 30, 30))
    else:
        img = Image.fromarray((np.random.RandomState(seed).rand(height, width, 3) * 255).astype("uint8"))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def video_uri(width: int, height: int, frames: int) -> str | None:
    try:
        import av
        import numpy as np
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "hostile.mp4")
        with av.open(path, "w") as container:
            stream = container.add_stream("mpeg4", rate=4)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for i in range(frames):
                arr = np.full((height, width, 3), 40 * i % 255, dtype="uint8")
                for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        with open(path, "rb") as fh:
            return "data:video/mp4;base64," + base64.b64encode(fh.read()).decode()


def hostile_kinds(port: int, *, video: bool) -> dict[str, Callable[[], int]]:
    """Each kind: a callable sending one request and returning its status."""
    small_image = png_uri(64, 48, seed=1)
    huge_frame = png_uri(4096, 4096, solid=True)      # ~50 KB of PNG, 16.7 M pixels decoded
    bad_b64_60k = "A" * 64 + " " * 60_000 + "!"
    bad_b64_2m = "A" * 64 + " " * 2_000_000 + "!"
    huge_text = json.dumps({"input": ["word " * (4 * MB)]}).encode()        # 20 MB: over the body cap
    big_text = json.dumps({"input": ["word " * (1200 * 1024)]}).encode()    # 6 MB: under it, over max_text_chars
    many = json.dumps({"inputs": [f"disconnecting client item {i}" for i in range(48)]}).encode()
    counter = iter(range(1 << 62))

    def ordinary() -> int:
        i = next(counter)
        items = [f"ordinary request {i}", {"image": small_image, "text": f"image {i}"}]
        return post_json(port, "/v1/embed", {"inputs": items, "dimension": 64})

    def endless() -> Iterator[bytes]:
        for _ in range(800):  # 200 MB at most, unless the server stops reading (it must)
            yield b"%x\r\n" % (256 * 1024) + b"x" * (256 * 1024) + b"\r\n"

    kinds: dict[str, Callable[[], int]] = {
        "ordinary": ordinary,
        "huge text (20 MB)": lambda: request(port, "POST", "/v1/embeddings", [huge_text[:MB]], length=len(huge_text)),
        "big text (6 MB)": lambda: request(port, "POST", "/v1/embeddings", [big_text], length=len(big_text)),
        "bad base64 60 KB": lambda: post_json(port, "/v1/embed", {"inputs": [{"image": bad_b64_60k}]}),
        "bad base64 2 MB": lambda: post_json(port, "/v1/embed", {"inputs": [{"image": bad_b64_2m}]}),
        "declared 200 MB body": lambda: request(port, "POST", "/v1/embed", [b"x" * MB], length=200 * MB),
        "endless chunked body": lambda: request(port, "POST", "/v1/embed", endless(), chunked=True),
        "body held open": lambda: request(port, "POST", "/v1/embed", [b'{"inputs": ["'], length=4 * MB,
                                          timeout=30),
        "hang up mid-body": lambda: request(port, "POST", "/v1/embed", [many[: len(many) // 2]], length=len(many),
                                            hang_up_after=0.05),
        "hang up after sending": lambda: request(port, "POST", "/v1/embed", [many], length=len(many),
                                                 hang_up_after=0.05),
        "huge frame x64": lambda: post_json(port, "/v1/embed", {"inputs": [{"video": [huge_frame] * 64}]}),
    }
    if video:
        uhd, hd = video_uri(3840, 2160, 8), video_uri(1920, 1080, 8)
        if uhd is not None and hd is not None:  # over and within --max-video-pixels
            kinds["4K video x8"] = lambda: post_json(port, "/v1/embed", {"inputs": [{"video": uhd}]})
            kinds["1080p video x8"] = lambda: post_json(port, "/v1/embed", {"inputs": [{"video": hd}]})
    return kinds


# ---------------------------------------------------------------------------- measuring
class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        import psutil

        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except Exception:  # noqa: BLE001 - the server ended
                return
            time.sleep(0.02)


def server_statuses(port: int) -> dict[tuple[str, int], int]:
    """``qvl_requests_total`` by (route, status) from the server's /metrics: what clients that left never saw."""
    import urllib.request

    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("qvl_requests_total{"):
            labels, value = line[len("qvl_requests_total{"):].split("} ")
            fields = dict(part.split("=", 1) for part in labels.split(","))
            out[(fields["route"].strip('"'), int(fields["status"].strip('"')))] = int(float(value))
    return out


def health_loop(port: int, until: float, latencies: list[float], statuses: collections.Counter) -> None:
    while time.monotonic() < until:
        t = time.perf_counter()
        status = request(port, "GET", "/health", timeout=10)
        latencies.append(time.perf_counter() - t)
        statuses[("health", status)] += 1
        time.sleep(0.05)


def drive(kind: str, send: Callable[[], int], until: float, statuses: collections.Counter,
          lock: threading.Lock) -> None:
    while time.monotonic() < until:
        status = send()
        with lock:
            statuses[(kind, status)] += 1
        if status == 503:
            time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="seconds of hostile traffic (default 60)")
    p.add_argument("--checkpoint", help="model directory (default: build the tiny test checkpoint)")
    p.add_argument("--budget-mb", type=float, default=1024.0,
                   help="allowed RSS growth over the warmed-up server, in MiB (default 1024)")
    p.add_argument("--max-health-p99", type=float, default=0.5, help="seconds (default 0.5)")
    p.add_argument("--ordinary-clients", type=int, default=16, help="concurrent ordinary clients (default 16)")
    p.add_argument("--no-video", action="store_true", help="serve with --no-video and send no video")
    args = p.parse_args(argv)

    tmp = None
    checkpoint = args.checkpoint
    if checkpoint is None:
        from embedder.testing import build_tiny_checkpoint

        tmp = tempfile.TemporaryDirectory()
        checkpoint = build_tiny_checkpoint(tmp.name, kind="embedding")
    limits = ["--max-body-bytes", str(8 * MB), "--max-text-chars", "100000", "--max-items", "64",
              "--max-frames", "64", "--max-inflight", "8", "--max-inflight-bytes", str(32 * MB),
              "--max-preprocess-queue", "128", "--max-queue", "256", "--body-timeout", "5", "--timeout", "30",
              "--max-image-pixels", str(4096 * 4096), "--max-video-pixels", str(1920 * 1080 * 8),
              "--preprocess-workers", "2"]
    if args.no_video:
        limits.append("--no-video")
    port = free_port()
    server = start_server(checkpoint, port, limits)
    try:
        kinds = hostile_kinds(port, video=not args.no_video)
        for _ in range(3):  # warm up: the first requests load lazy modules
            kinds["ordinary"]()
        if "1080p video x8" in kinds:  # and one accepted video: the budget is growth under load, not the
            kinds["1080p video x8"]()  # video path's own working set (decoder, frame buffers) met once
        import psutil

        baseline = psutil.Process(server.pid).memory_info().rss
        budget = baseline + int(args.budget_mb * MB)
        sampler = Sampler(server.pid)
        sampler.start()
        statuses: collections.Counter = collections.Counter()
        lock = threading.Lock()
        latencies: list[float] = []
        until = time.monotonic() + args.duration
        threads = [threading.Thread(target=health_loop, args=(port, until, latencies, statuses), daemon=True)]
        for kind, send in kinds.items():
            n = args.ordinary_clients if kind == "ordinary" else 1
            threads += [threading.Thread(target=drive, args=(kind, send, until, statuses, lock), daemon=True)
                        for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(args.duration + 120)
        sampler.stop.set()
        sampler.join(5)
        alive = server.poll() is None
        server_side = server_statuses(port) if alive else {}
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        if tmp is not None:
            tmp.cleanup()

    bad = {k: n for k, n in statuses.items() if k[1] >= 500 and k[1] != 503}
    bad.update({("server: " + route, status): n for (route, status), n in server_side.items()
                if status >= 500 and status != 503})
    print(f"{'request':<24} {'status':>6} {'count':>7}")
    for (kind, status), n in sorted(statuses.items()):
        label = "hung up / closed" if status == 0 else str(status)
        print(f"{kind:<24} {label:>6} {n:>7}")
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = sorted(latencies)[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    by_status: collections.Counter = collections.Counter()
    for (_, status), n in server_side.items():
        by_status[status] += n
    print("\nserver side, requests by status: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items())))
    print(f"\npeak RSS {sampler.peak / MB:.0f} MiB (warm {baseline / MB:.0f} MiB, budget {budget / MB:.0f} MiB)")
    print(f"health p50 {p50 * 1000:.1f} ms, health p99 {p99 * 1000:.1f} ms over {len(latencies)} checks")
    failures = []
    if not alive:
        failures.append("the server died")
    if bad:
        failures.append(f"5xx other than 503: {bad}")
    if sampler.peak > budget:
        failures.append(f"peak RSS {sampler.peak / MB:.0f} MiB over the budget {budget / MB:.0f} MiB")
    if not latencies or p99 > args.max_health_p99:
        failures.append(f"health p99 {p99:.3f} s over {args.max_health_p99} s")
    if not any(k[0] == "ordinary" and k[1] == 200 for k in statuses):
        failures.append("no ordinary request succeeded")
    for f in failures:
        print("FAIL:", f)
    if not failures:
        print("OK")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

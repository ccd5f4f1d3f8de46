"""Load test of ``qvl serve``: 1, 8 and 64 concurrent clients sending single items.

Compares the service's throughput with the in-process batched embedder
(``Embedder.embed`` on the same items) and reports items/s, p50/p95 latency, errors
and the server's resident memory before and after each level.

The model is a random checkpoint with the real Qwen3-VL-2B widths and two layers
(``embedder.testing.BENCH_2B``, shared with the other benchmarks: ``common.bench_checkpoint``). Everything runs on
127.0.0.1; every request loop is bounded in time and in count.

Usage:
    python benchmarks/bench_service.py                       # defaults below
    python benchmarks/bench_service.py --duration 30 --clients 1,8,64 --items 192
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import bench_checkpoint  # noqa: E402

HOST = "127.0.0.1"
MAX_REQUESTS_PER_LEVEL = 100_000
SUBJECTS = ["a cat", "a dog", "a red car", "a mountain lake", "a city street", "a bowl of fruit", "an old bridge",
            "a sailing boat"]


@dataclass(frozen=True)
class LevelResult:
    """Outcome of one concurrency level."""

    clients: int
    requests: int
    errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    rss_before_mb: float
    rss_after_mb: float
    model_busy: float  # share of the wall time the model worker spent in forward passes
    mean_batch: float

    @property
    def items_per_s(self) -> float:
        return (self.requests - self.errors) / self.seconds if self.seconds else 0.0


def make_items(n: int) -> list[str]:
    """Distinct short texts (about 30 tokens with the prompt), as a search query would be."""
    return [f"photo {i}: {SUBJECTS[i % len(SUBJECTS)]} at {['dawn', 'noon', 'dusk'][i % 3]}, seen from afar"
            for i in range(n)]


def in_process_throughput(checkpoint: Path, items: list[str], max_seconds: float) -> float:
    """Items/s of ``Embedder.embed`` on ``items`` (after a warm-up), in this process."""
    import gc

    from embedder import Embedder

    with Embedder.from_pretrained(str(checkpoint), device="cpu") as emb:
        emb.embed(items[:8])
        done, start = 0, time.perf_counter()
        while done < len(items) and time.perf_counter() - start < max_seconds:
            chunk = items[done:done + 64]
            emb.embed(chunk)
            done += len(chunk)
        rate = done / (time.perf_counter() - start)
    del emb
    gc.collect()
    return rate


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_server(checkpoint: Path, port: int, log_path: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "connectors.cli", "serve", "--model", str(checkpoint), "--host", HOST,
           "--port", str(port), "--device", "cpu", "--max-queue", "4096", "--timeout", "600",
           # throughput, not admission control, is measured here: admit all 64 clients
           "--max-inflight", "256"]
    print("server:", " ".join(cmd), file=sys.stderr)
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[1])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


async def run_level(url: str, items: list[str], clients: int, duration: float) -> tuple[list[float], int]:
    """``clients`` loops, each sending one item per request until ``duration`` passes."""
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = 0
    deadline = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        async def worker() -> None:
            nonlocal counter, errors
            while time.monotonic() < deadline and counter < MAX_REQUESTS_PER_LEVEL:
                item = items[counter % len(items)]
                counter += 1
                start = time.perf_counter()
                try:
                    resp = await client.post("/v1/embed", json={"inputs": [item]})
                    ok = resp.status_code == 200 and len(resp.json()["embeddings"]) == 1
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                if not ok:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, errors


def model_counters(url: str) -> tuple[float, float, float]:
    """(seconds in forward passes, forward passes, items) from the service's /metrics."""
    import httpx

    values = {"qvl_batch_seconds_sum": 0.0, "qvl_batch_size_count": 0.0, "qvl_batch_size_sum": 0.0}
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        name = line.split("{", 1)[0]
        if name in values and 'model="embed"' in line:
            values[name] = float(line.rsplit(" ", 1)[1])
    return values["qvl_batch_seconds_sum"], values["qvl_batch_size_count"], values["qvl_batch_size_sum"]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a checkpoint directory (default: the shared benchmark checkpoint, built if missing)")
    parser.add_argument("--clients", default="1,8,64", help="comma-separated concurrency levels")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load per level")
    parser.add_argument("--items", type=int, default=192, help="distinct items cycled through")
    parser.add_argument("--baseline-seconds", type=float, default=60.0, help="cap on the in-process measurement")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.clients.split(",")]
    items = make_items(args.items)
    checkpoint = args.checkpoint or Path(bench_checkpoint("embedding"))

    # The machine may be shared: measure the in-process rate before and after the
    # service levels and compare with their mean.
    print("measuring the in-process batched embedder ...", file=sys.stderr)
    baseline_before = in_process_throughput(checkpoint, items, args.baseline_seconds)
    print(f"in-process: {baseline_before:.2f} items/s", file=sys.stderr)

    port = free_port()
    url = f"http://{HOST}:{port}"
    proc = start_server(checkpoint, port, Path(os.environ.get("TMPDIR", "/tmp")) / "qvl-bench-server.log")
    results: list[LevelResult] = []
    try:
        wait_ready(url, proc)
        asyncio.run(run_level(url, items, 4, 3.0))  # warm-up
        rss_start = rss_mb(proc.pid)
        for clients in levels:
            before = rss_mb(proc.pid)
            busy0, batches0, items0 = model_counters(url)
            start = time.perf_counter()
            latencies, errors = asyncio.run(run_level(url, items, clients, args.duration))
            seconds = time.perf_counter() - start
            busy1, batches1, items1 = model_counters(url)
            results.append(LevelResult(clients=clients, requests=len(latencies), errors=errors, seconds=seconds,
                                       p50_ms=1000 * percentile(latencies, 50),
                                       p95_ms=1000 * percentile(latencies, 95),
                                       rss_before_mb=before, rss_after_mb=rss_mb(proc.pid),
                                       model_busy=(busy1 - busy0) / seconds,
                                       mean_batch=(items1 - items0) / max(1.0, batches1 - batches0)))
            r = results[-1]
            print(f"{clients} clients: {r.items_per_s:.2f} items/s, {errors} errors", file=sys.stderr)
        rss_end = rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print("measuring the in-process batched embedder again ...", file=sys.stderr)
    baseline_after = in_process_throughput(checkpoint, items, args.baseline_seconds)
    baseline = (baseline_before + baseline_after) / 2

    print(f"\nmodel: BENCH_2B (Qwen3-VL-2B widths, 2 layers, random weights), CPU, {os.cpu_count()} cores; "
          f"{args.items} distinct single-text requests, {args.duration:g} s per level")
    print(f"in-process batched Embedder.embed: {baseline:.2f} items/s "
          f"(mean of {baseline_before:.2f} before and {baseline_after:.2f} after the service runs)\n")
    print("| clients | requests | items/s | p50 ms | p95 ms | errors | mean batch | model busy | RSS before MB "
          "| RSS after MB | vs in-process |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.clients} | {r.requests} | {r.items_per_s:.2f} | {r.p50_ms:.0f} | {r.p95_ms:.0f} | {r.errors} | "
              f"{r.mean_batch:.1f} | {100 * r.model_busy:.0f}% | {r.rss_before_mb:.0f} | {r.rss_after_mb:.0f} | "
              f"{100 * r.items_per_s / baseline:.0f}% |")
    print(f"\nserver RSS after warm-up {rss_start:.0f} MB, at the end {rss_end:.0f} MB")
    return 0 if all(r.errors == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

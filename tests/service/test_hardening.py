"""Hostile input against ``qvl serve``: bounded work, memory and latency per request (issues 13.10, 14.3-14.5, 13.7).

Memory is the server process's peak resident memory, sampled while the request runs;
latency is measured by the client. Servers that must be measured alone run as the
real console script in their own process; the others run in-process on uvicorn.
"""
from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from embedder import OverloadedError, RemoteEmbedder, RemoteError
from embedder.embedder import Embedder
from embedder.service import ServiceSettings

from . import qvl_process
from .test_service import metric, serve, slow

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.timeout(300)

MB = 1024 * 1024


def post_head(path: str, length: int | None, *, extra: str = "") -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{size}{extra}"
            "Connection: close\r\n\r\n").encode()


class HealthProbe:
    """Polls ``/health`` every 20 ms in a thread; ``worst`` is the slowest answer in seconds."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set():
                t = time.perf_counter()
                assert c.get("/health").status_code == 200
                self.latencies.append(time.perf_counter() - t)
                time.sleep(0.02)

    @property
    def worst(self) -> float:
        return max(self.latencies)

    def __enter__(self) -> "HealthProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(35)


# ---------------------------------------------------------------------------- 13.10 / 14.4: huge text
def test_huge_text_refused_before_tokenising(tiny_embedding_path):
    """One 50 MB text: 413 fast with a small footprint (it took 88 s and 7.5 GB), whether the body cap
    or the text limit refuses it."""
    text = "word " * (10 * MB)  # 50 MB
    body = json.dumps({"model": "m", "input": [text]}).encode()
    proc = qvl_process.start(tiny_embedding_path, args=["--max-body-bytes", str(64 * MB)])
    try:
        with qvl_process.PeakRSS(proc.pid) as rss:
            t = time.perf_counter()
            resp = httpx.post(proc.url + "/v1/embeddings", content=body, timeout=60,
                              headers={"content-type": "application/json"})
            seconds = time.perf_counter() - t
        assert resp.status_code == 413, resp.text
        err = resp.json()["error"]
        assert err["code"] == "text_too_long" and "52428800 characters" in err["message"]
        assert "limit is 327680" in err["message"]
        assert seconds < 5, seconds
        # the body (50 MB) and its decoded string (50 MB) at most, never tokens of it
        assert rss.growth < 200 * MB, rss.growth / MB
        assert httpx.post(proc.url + "/v1/embeddings", json={"input": "still fine"}, timeout=30).status_code == 200
    finally:
        qvl_process.stop(proc)
    # With the default body cap (32 MiB) the same request is refused from its Content-Length alone.
    proc = qvl_process.start(tiny_embedding_path)
    try:
        with qvl_process.PeakRSS(proc.pid) as rss:
            status, _, answer, seconds = qvl_process.raw_request(
                proc.url, post_head("/v1/embeddings", len(body)), [body[:MB]])
        assert status == 413 and b"body_too_large" in answer and b"exceeds the limit of 33554432" in answer
        assert seconds < 2 and rss.growth < 20 * MB, (seconds, rss.growth / MB)
    finally:
        qvl_process.stop(proc)


def test_limits_refuse_with_413_and_a_reason_before_decoding(embedder):
    settings = ServiceSettings(max_items=3, max_text_chars=1000, max_frames=4)
    with serve(settings, embedder) as url, httpx.Client(base_url=url, timeout=60) as c:
        # item 1 is an invalid image: the count is refused first, nothing is decoded
        resp = c.post("/v1/embed", json={"inputs": ["a", {"image": "data:image/png;base64,AAAA"}, "c", "d"]})
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_many_items"
        assert "4 entries in 'inputs'" in resp.json()["error"]["message"] and "limit is 3" in resp.json()["error"]["message"]
        resp = c.post("/v1/embed", json={"inputs": ["ok", {"text": "x" * 600, "instruction": "y" * 600}]})
        assert resp.status_code == 413 and resp.json()["error"]["index"] == 1
        assert "1200 characters" in resp.json()["error"]["message"]
        frames = ["data:image/png;base64,AAAA"] * 5
        resp = c.post("/v1/embed", json={"inputs": [{"video": frames}]})
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_many_frames"
        # every protocol: OpenAI, TEI, DashScope, Weaviate, rerank
        assert c.post("/v1/embeddings", json={"input": "x" * 1001}).status_code == 413
        assert c.post("/embed", json={"inputs": ["x"] * 4}).status_code == 413
        ds = c.post("/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding",
                    json={"input": {"contents": [{"text": "x" * 1001}]}})
        assert ds.status_code == 413 and ds.json()["code"] == "InvalidParameter"
        assert c.post("/vectors", json={"text": "x" * 1001}).status_code == 413
        assert c.post("/vectorize", json={"texts": ["a", "b"], "images": ["AAAA", "BBBB"]}).status_code == 413
        assert c.post("/", json={"inputs": "x" * 1001}).status_code == 413
        assert c.post("/embed", json={"inputs": ["x" * 1000]}).status_code == 200


def test_pixel_and_frame_limits_are_413_before_decoding(embedder):
    """Pixels (an image's header) and a video's pixels x frames, through the embedder's LoadOptions."""
    from .test_service import png_uri
    from ..conftest import make_image

    big = png_uri(make_image(200, 200, seed=1))
    frames = [png_uri(make_image(64, 64, seed=i)) for i in range(5)]  # 5 distinct frames of 64 x 64
    settings = ServiceSettings(max_image_pixels=150 * 150, max_video_pixels=64 * 64 * 4)
    with serve(settings, embedder) as url, httpx.Client(base_url=url, timeout=60) as c:
        resp = c.post("/v1/embed", json={"inputs": ["ok", {"image": big}]})
        assert resp.status_code == 413, resp.text
        err = resp.json()["error"]
        assert err["index"] == 1 and err["code"] == "over_limit"
        assert "200x200 = 40000 pixels exceeds the limit of 22500" in err["message"]
        resp = c.post("/v1/embed", json={"inputs": [{"video": frames}]})
        assert resp.status_code == 413 and "max_video_pixels" in resp.json()["error"]["message"]
        resp = c.post("/v1/embed", json={"inputs": [{"video": frames[:4]}]})
        assert resp.status_code == 200, resp.text
        skipped = c.post("/v1/embed", json={"inputs": ["ok", {"image": big}], "on_error": "skip"}).json()
        assert skipped["embeddings"][1] is None and "exceeds the limit" in skipped["errors"][0]["message"]
        assert c.get("/meta").json()["limits"]["max_image_pixels"] == 22500


def test_no_video_refuses_video_items(embedder):
    with serve(ServiceSettings(allow_video=False), embedder) as url, httpx.Client(base_url=url, timeout=60) as c:
        resp = c.post("/v1/embed", json={"inputs": ["ok", {"video": "data:video/mp4;base64,AAAA"}]})
        assert resp.status_code == 400 and resp.json()["error"]["index"] == 1
        assert "--no-video" in resp.json()["error"]["message"]
        assert c.get("/meta").json()["limits"]["allow_video"] is False
        assert c.post("/v1/embed", json={"inputs": ["text still works"]}).status_code == 200


# ---------------------------------------------------------------------------- 14.3: pathological strings
@pytest.mark.parametrize("size", [60_000, 2_000_000])
def test_pathological_base64_is_linear_and_off_the_event_loop(embedder, size):
    """A string of base64 characters and whitespace ending in a bad character (60 KB took 15 s)."""
    hostile = "A" * 64 + " " * size + "!"
    with serve(ServiceSettings(), embedder) as url, HealthProbe(url) as probe:
        time.sleep(0.1)
        t = time.perf_counter()
        resp = httpx.post(url + "/v1/embed", json={"inputs": [{"image": hostile}]}, timeout=60)
        seconds = time.perf_counter() - t
        time.sleep(0.1)
    assert resp.status_code == 400 and resp.json()["error"]["index"] == 0
    assert seconds < 3, seconds
    assert probe.worst < 0.5, probe.worst


def test_large_body_parsed_off_the_event_loop(embedder):
    """JSON decoding of a large body runs on a parse thread: /health keeps answering meanwhile."""
    texts = ["x" * 300_000] * 100  # 30 MB of JSON, parsed and checked, then refused (413)
    body = json.dumps({"inputs": texts}).encode()
    with serve(ServiceSettings(max_text_chars=100), embedder) as url, HealthProbe(url) as probe:
        for _ in range(3):
            resp = httpx.post(url + "/v1/embed", content=body, timeout=60)
            assert resp.status_code == 413
    assert probe.worst < 0.5, probe.worst


# ---------------------------------------------------------------------------- 14.5: admission control
def burst(url: str, n: int) -> list[tuple[httpx.Response, float]]:
    """``n`` embed requests released at once (clients built up front, not timed): (response, seconds) each."""
    clients = [httpx.Client(base_url=url, timeout=60) for _ in range(n)]
    go = threading.Barrier(n)

    def call(i):
        go.wait()
        t = time.perf_counter()
        resp = clients[i].post("/v1/embed", json={"inputs": [f"load {i}", f"more {i}"]})
        return resp, time.perf_counter() - t

    try:
        with ThreadPoolExecutor(n) as pool:
            return list(pool.map(call, range(n)))
    finally:
        for c in clients:
            c.close()


def test_overload_is_503_at_once_not_504(embedder):
    """24 concurrent requests on a slow model: the surplus is refused at once with Retry-After."""
    settings = ServiceSettings(max_inflight=4, timeout=20, retry_after=2)
    with serve(settings, slow(embedder, 0.3)) as url:
        results = burst(url, 24)
    statuses = [r.status_code for r, _ in results]
    assert 504 not in statuses
    refused = [(r, s) for r, s in results if r.status_code == 503]
    assert refused and statuses.count(200) >= 4, statuses
    assert all(r.headers["retry-after"] == "2" for r, _ in refused)
    assert max(s for _, s in refused) < 1.0, [s for _, s in refused]
    assert "in flight" in refused[0][0].json()["error"]["message"]


def test_work_that_cannot_finish_in_time_is_503_at_once(embedder):
    """Within the in-flight limit, a queue longer than a request's time left is refused at once (503), not 504.

    Before: 24 concurrent requests waited in the model queue until their timeout (24 of 24 were 504).
    """
    settings = ServiceSettings(timeout=3, max_batch_items=2, max_wait_ms=0, retry_after=1)
    with serve(settings, slow(embedder, 0.5)) as url:
        assert httpx.post(url + "/v1/embed", json={"inputs": ["warm", "up"]}, timeout=30).status_code == 200
        results = burst(url, 24)
    statuses = [r.status_code for r, _ in results]
    assert 504 not in statuses, statuses
    refused = [(r, s) for r, s in results if r.status_code == 503]
    assert refused and statuses.count(200) >= 2, statuses
    assert all(r.headers["retry-after"] == "1" for r, _ in refused)
    assert max(s for _, s in refused) < 1.5, [round(s, 2) for _, s in refused]
    assert "too long to answer in time" in refused[0][0].json()["error"]["message"]


def test_inflight_body_bytes_are_bounded(embedder):
    """Bodies held open by slow clients count against max_inflight_bytes: the next is 503 at once."""
    settings = ServiceSettings(max_inflight_bytes=3 * MB, body_timeout=20)
    with serve(settings, embedder) as url:
        host, port = url.removeprefix("http://").split(":")
        held = []
        try:
            for _ in range(2):  # two clients announce 1.4 MB each and send only a little
                s = socket.create_connection((host, int(port)))
                s.sendall(post_head("/v1/embed", int(1.4 * MB)) + b'{"inputs": ["')
                held.append(s)
            time.sleep(0.3)
            status, headers, body, seconds = qvl_process.raw_request(
                url, post_head("/v1/embed", int(0.5 * MB)), [b" " * int(0.5 * MB)])
            assert status == 503 and headers.get("retry-after") and b"bytes" in body, (status, body[:200])
            assert seconds < 1
        finally:
            for s in held:
                s.close()
        time.sleep(0.3)
        assert httpx.post(url + "/v1/embed", json={"inputs": ["after"]}, timeout=30).status_code == 200


def test_body_read_timeout_is_408(embedder):
    with serve(ServiceSettings(body_timeout=0.5), embedder) as url:
        status, _, answer, seconds = qvl_process.raw_request(url, post_head("/v1/embed", 100) + b'{"inputs"')
        assert status == 408 and b"body_timeout" in answer and b"0.5 s" in answer
        assert seconds < 3


def test_oversized_body_refused_without_reading_it(tiny_embedding_path):
    """A declared 200 MB body and an endless chunked one: 413 once past the cap; memory stays flat."""
    proc = qvl_process.start(tiny_embedding_path, args=["--max-body-bytes", str(MB)])
    try:
        with qvl_process.PeakRSS(proc.pid) as rss:
            status, _, body, seconds = qvl_process.raw_request(
                proc.url, post_head("/v1/embed", 200 * MB), [b"x" * 65536])
            assert status == 413 and b"200" in body and seconds < 2

            def endless():
                for _ in range(400):  # up to 100 MB, 256 KB a chunk, unless the server stops reading
                    yield b"%x\r\n" % (256 * 1024) + b"x" * (256 * 1024) + b"\r\n"

            status, _, body, seconds = qvl_process.raw_request(proc.url, post_head("/v1/embed", None), endless())
            assert status == 413 and b"exceeds the limit of 1048576" in body and seconds < 5
        assert rss.growth < 20 * MB, rss.growth / MB
    finally:
        qvl_process.stop(proc)


class CountingSlowPrepare(Embedder):
    """Counts prepared items and takes ``delay`` seconds for each (to keep items queued)."""

    delay = 0.2
    calls: list[int]

    def prepare(self, item, *, instruction=None, index=None):  # type: ignore[override]
        self.calls.append(index)
        time.sleep(self.delay)
        return super().prepare(item, instruction=instruction, index=index)


def test_disconnected_client_work_is_dropped(embedder):
    view = copy.copy(embedder)
    view.__class__ = CountingSlowPrepare
    view.calls = []
    settings = ServiceSettings(preprocess_workers=1)
    with serve(settings, view) as url:
        host, port = url.removeprefix("http://").split(":")
        body = json.dumps({"inputs": [f"item {i}" for i in range(20)]}).encode()
        with socket.create_connection((host, int(port))) as s:
            s.sendall(post_head("/v1/embed", len(body)) + body)
            time.sleep(0.5)  # two or three items prepared, the rest queued
        time.sleep(1.0)
        prepared = len(view.calls)
        time.sleep(0.5)
        assert len(view.calls) == prepared, "preprocessing went on after the client left"
        text = httpx.get(url + "/metrics").text
        assert prepared <= 6, prepared
        assert metric(text, "qvl_dropped_items_total", stage="preprocess") >= 20 - prepared - 1
        assert metric(text, "qvl_requests_total", route="/v1/embed", status="499") == 1
        assert "qvl_client_disconnects_total 1" in text
        assert "qvl_inflight_requests 0" in text and "qvl_preprocess_items 0" in text


def test_client_gone_mid_body_is_499_not_500(embedder):
    with serve(ServiceSettings(), embedder) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(post_head("/v1/embed", 1000) + b'{"inputs": ["half')
            time.sleep(0.2)
        time.sleep(0.5)
        text = httpx.get(url + "/metrics").text
    assert metric(text, "qvl_requests_total", route="/v1/embed", status="499") == 1
    assert 'status="500"' not in text


# ---------------------------------------------------------------------------- the client side
def test_remote_client_413_not_retried_503_retried(embedder):
    with serve(ServiceSettings(max_text_chars=50), embedder) as url:
        with RemoteEmbedder(url, retries=3, backoff=0.01) as remote, pytest.raises(RemoteError) as info:
            remote.embed(["x" * 51])
        assert info.value.status == 413 and not isinstance(info.value, OverloadedError)
        assert "too large" in str(info.value) and "limit is 50" in str(info.value)
        text = httpx.get(url + "/metrics").text
        assert metric(text, "qvl_requests_total", route="/v1/embed", status="413") == 1  # not retried
    with serve(ServiceSettings(max_inflight=1), slow(embedder, 3.0)) as url:
        with ThreadPoolExecutor(1) as pool:
            busy = pool.submit(httpx.post, url + "/v1/embed", json={"inputs": ["busy"]}, timeout=30)
            time.sleep(0.3)
            with RemoteEmbedder(url, retries=1, backoff=0.01) as remote, pytest.raises(OverloadedError) as over:
                remote.embed(["refused"], dim=64)
            assert "overloaded" in str(over.value) and over.value.retry_after == 1
            assert busy.result().status_code == 200
        text = httpx.get(url + "/metrics").text
        assert metric(text, "qvl_requests_total", route="/v1/embed", status="503") == 2  # one retry


def test_remote_client_reads_no_environment(monkeypatch, embedder):
    """RemoteEmbedder sends only the key it is given, and ignores proxy variables."""
    monkeypatch.setenv("QVL_API_KEY", "from-env")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")   # a dead proxy: used, it would fail
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    with serve(ServiceSettings(api_key="from-env"), embedder) as url:
        with RemoteEmbedder(url, retries=0) as remote, pytest.raises(RemoteError) as info:
            remote.embed(["x"])
        assert info.value.status == 401
        with RemoteEmbedder(url, api_key="from-env", retries=0) as remote:
            assert np.allclose(remote.embed(["x"]), embedder.embed(["x"]), atol=1e-5)


# ---------------------------------------------------------------------------- 13.7: the port first
def test_cli_port_in_use_fails_before_loading(tiny_embedding_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t = time.perf_counter()
        out = subprocess.run([qvl_process.qvl_executable(), "serve", "--model", tiny_embedding_path,
                              "--port", str(port), "--device", "cpu"],
                             capture_output=True, text=True, timeout=120)
        seconds = time.perf_counter() - t
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode != 0
    assert lines == [f"qvl serve: cannot listen on 127.0.0.1:{port}: address already in use (another process "
                     "holds the port; stop it or pick another with --port)"], lines
    assert "serving on" not in out.stderr and "loading" not in out.stderr
    assert seconds < 5, seconds  # the CLI's imports only: no torch, no weights (0.6 s here)


# ---------------------------------------------------------------------------- soak (issue 14 "Done when")
def test_soak_short(tiny_embedding_path):
    """benchmarks/soak_service.py for 25 s: hostile traffic, no 5xx but 503, RSS under its budget."""
    script = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "soak_service.py")
    out = subprocess.run([sys.executable, script, "--duration", "25", "--checkpoint", tiny_embedding_path],
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "peak RSS" in out.stdout and "health p99" in out.stdout

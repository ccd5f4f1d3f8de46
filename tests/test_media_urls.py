"""URL fetching (issue 14.5/14.6), on 127.0.0.1 only: a total deadline and a minimum rate
against servers that trickle, no DNS rebinding (the checked address is the one connected
to), the connected peer checked, and size limits."""
from __future__ import annotations

import http.server
import io
import socket
import threading
import time

import numpy as np
import pytest

from embedder import InputError
from embedder.items import LoadOptions
from embedder.urls import check_peer, fetch_url

from .conftest import make_image


def png_bytes() -> bytes:
    buf = io.BytesIO()
    make_image(40, 30, seed=2).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def server():
    """A local server: /pic.png, /redirect, /slow-body, /slow-headers, /trickle (records requests)."""
    pic = png_bytes()
    seen: list[str] = []
    stop = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):  # noqa: N802 - http.server's name
            seen.append(self.path)
            if self.path == "/pic.png":
                self.send_response(200)
                self.send_header("Content-Length", str(len(pic)))
                self.end_headers()
                self.wfile.write(pic)
            elif self.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", "/pic.png")
                self.end_headers()
            elif self.path in ("/slow-body", "/trickle"):
                delay, step = (0.2, 1) if self.path == "/slow-body" else (0.05, 5)
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                t0 = time.monotonic()
                try:
                    while not stop.is_set() and time.monotonic() - t0 < 15:
                        self.wfile.write(b"x" * step)
                        self.wfile.flush()
                        time.sleep(delay)
                except OSError:
                    pass
            elif self.path == "/slow-headers":
                t0 = time.monotonic()
                try:
                    for byte in b"HTTP/1.1 200 OK\r\nX-Padding: " + b"a" * 10_000:
                        if stop.is_set() or time.monotonic() - t0 > 15:
                            break
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.1)
                except OSError:
                    pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.server_address[1], seen, pic
    finally:
        stop.set()
        httpd.shutdown()
        httpd.server_close()


def private(**kw) -> LoadOptions:
    return LoadOptions(allow_urls=True, allow_private_urls=True, **kw)


def test_fetch_and_redirect(server):
    base, _, seen, pic = server
    assert fetch_url(base + "/pic.png", "image", private()) == pic
    assert fetch_url(base + "/redirect", "image", private()) == pic
    assert seen == ["/pic.png", "/redirect", "/pic.png"]


@pytest.mark.parametrize("path", ["/slow-body", "/slow-headers"])
def test_total_deadline_cuts_a_trickling_server(server, path):
    base = server[0]
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"the deadline of 2 s \(url_timeout\) passed"):
        fetch_url(base + path, "image", private(url_timeout=2.0, url_min_rate=0))
    assert time.monotonic() - t0 < 3.5


def test_minimum_rate_cuts_a_slow_server_before_the_deadline(server):
    base = server[0]
    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"slower than the minimum of 1000 bytes/s \(url_min_rate\)"):
        fetch_url(base + "/trickle", "image", private(url_timeout=30.0, url_min_rate=1000))
    assert time.monotonic() - t0 < 4


def test_size_limit(server):
    base = server[0]
    with pytest.raises(InputError, match=r"larger than the limit of 100 bytes \(max_url_bytes\)"):
        fetch_url(base + "/pic.png", "image", private(max_url_bytes=100))


def test_dns_rebinding_cannot_reach_loopback(server, monkeypatch, embedder):
    """The name resolves to a public address when checked and to 127.0.0.1 afterwards:
    the fetch must go to the checked (public, here unreachable) address, never to the
    local server."""
    _, port, seen, _ = server
    real = socket.getaddrinfo
    calls = []

    def rebinding(host, *args, **kwargs):
        if host != "rebind.example":
            return real(host, *args, **kwargs)
        calls.append(host)
        ip = "93.184.216.34" if len(calls) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    url = f"http://rebind.example:{port}/pic.png"
    with pytest.raises(InputError, match="cannot fetch image URL"):
        fetch_url(url, "image", LoadOptions(allow_urls=True, url_timeout=2.0))
    assert seen == [] and len(calls) == 1
    from embedder import Embedder

    view = Embedder(embedder.model, embedder.tokenizer, embedder.image_processor, embedder.video_processor,
                    embedder.device, load_options=LoadOptions(allow_urls=True, url_timeout=2.0))
    try:
        calls.clear()
        with pytest.raises(InputError, match="item 0: cannot fetch image URL"):
            view.embed([{"image": url}])
        assert seen == []
    finally:
        view.close()


def test_the_connected_peer_is_checked(server):
    _, port, _, _ = server
    with socket.create_connection(("127.0.0.1", port)) as sock:
        with pytest.raises(InputError, match="non-public address 127.0.0.1"):
            check_peer(sock, "http://name.example/x.png", allow_private=False)
        check_peer(sock, "http://name.example/x.png", allow_private=True)


def test_url_image_equals_the_local_file(server, embedder, tmp_path):
    base, _, _, pic = server
    (tmp_path / "pic.png").write_bytes(pic)
    from embedder import Embedder

    view = Embedder(embedder.model, embedder.tokenizer, embedder.image_processor, embedder.video_processor,
                    embedder.device, load_options=private())
    try:
        got = view.embed([{"image": base + "/redirect"}])
    finally:
        view.close()
    assert np.allclose(got, embedder.embed([{"image": str(tmp_path / "pic.png")}]), atol=1e-6)

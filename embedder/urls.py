"""Fetching ``http(s)://`` media for callers, safely (only when ``allow_urls`` is on).

* **No DNS rebinding.** The host is resolved ONCE; every address is checked (loopback,
  private, link-local and reserved addresses are refused unless ``allow_private_urls``)
  and the connection goes to one of those checked addresses, with the original host in
  the ``Host`` header and, for HTTPS, in SNI and certificate verification. The connected
  peer is checked again before anything is sent. Redirects (at most
  :data:`MAX_REDIRECTS`) are resolved and checked the same way.
* **Bounded time and size.** A fetch has a total deadline (``url_timeout`` seconds for
  connecting, headers, redirects and body together, enforced by closing the socket), a
  minimum average transfer rate after :data:`RATE_GRACE_SECONDS` (``url_min_rate``
  bytes/s, so a server trickling bytes is cut off early) and a size limit
  (``max_url_bytes``).

Proxies from the environment are not used.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from .errors import InputError

if TYPE_CHECKING:
    from .items import LoadOptions

MAX_REDIRECTS = 5
RATE_GRACE_SECONDS = 2.0  # the minimum rate is enforced from this many seconds on
CHUNK = 64 * 1024


def _refuse_private(url: str, ip: Any) -> InputError:
    return InputError(
        f"URL {url!r} refused: its host resolves to the non-public address {ip} "
        "(enable allow_private_urls, or --allow-private-urls in the service, to permit it)")


def _split(url: str) -> urllib.parse.SplitResult:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"unsupported URL {url!r}: only http(s) URLs with a host are fetched")
    return parsed


def resolve_checked(url: str, *, allow_private: bool) -> list[tuple[int, tuple]]:
    """Resolve the URL's host once; return its ``(family, sockaddr)`` addresses, all checked.

    Raises:
        InputError: bad URL, unresolvable host, or (without ``allow_private``) any address
            that is not globally routable.
    """
    parsed = _split(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parsed.hostname, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise InputError(f"cannot resolve the host of URL {url!r}: {exc}") from exc
    if not infos:
        raise InputError(f"cannot resolve the host of URL {url!r}: no address")
    addresses = []
    for family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not allow_private and not ip.is_global:
            raise _refuse_private(url, ip)
        addresses.append((family, sockaddr))
    return addresses


def check_url_host(url: str, *, allow_private: bool) -> None:
    """Refuse URLs whose host resolves to a loopback, private, link-local or reserved address."""
    resolve_checked(url, allow_private=allow_private)


def check_peer(sock: socket.socket, url: str, *, allow_private: bool) -> None:
    """Refuse a connected socket whose peer is not a public address (defence in depth)."""
    if allow_private:
        return
    ip = ipaddress.ip_address(str(sock.getpeername()[0]).split("%", 1)[0])
    if not ip.is_global:
        raise _refuse_private(url, ip)


def _connect(addresses: list[tuple[int, tuple]], timeout: float, url: str, allow_private: bool) -> socket.socket:
    error: OSError | None = None
    for family, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect(sockaddr)
            check_peer(sock, url, allow_private=allow_private)
            return sock
        except InputError:
            sock.close()
            raise
        except OSError as exc:
            sock.close()
            error = exc
    assert error is not None  # addresses is never empty
    raise error


class _PinnedHTTP(http.client.HTTPConnection):
    """An HTTP connection to already checked addresses (the Host header keeps the name)."""

    def __init__(self, host: str, port: int, *, addresses: list, url: str, allow_private: bool,
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._addresses, self._url, self._allow_private = addresses, url, allow_private
        self.raw_sock: socket.socket | None = None

    def connect(self) -> None:
        self.sock = self.raw_sock = _connect(self._addresses, self.timeout, self._url, self._allow_private)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to already checked addresses; SNI and the certificate check use the host name."""

    def __init__(self, host: str, port: int, *, addresses: list, url: str, allow_private: bool,
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._addresses, self._url, self._allow_private = addresses, url, allow_private
        self.raw_sock: socket.socket | None = None

    def connect(self) -> None:
        self.raw_sock = _connect(self._addresses, self.timeout, self._url, self._allow_private)
        self.sock = self._context.wrap_socket(self.raw_sock, server_hostname=self.host)


def next_url(current: str, location: str | None, *, allow_private: bool) -> str:
    """The checked target of a redirect."""
    if not location:
        raise InputError(f"URL {current!r} redirects without a Location")
    target = urllib.parse.urljoin(current, location)
    resolve_checked(target, allow_private=allow_private)
    return target


def fetch_url(url: str, what: str, options: "LoadOptions") -> bytes:
    """GET ``url`` within the limits of ``options`` and return the body.

    Raises:
        InputError: refused address, HTTP error, too large, too slow, or past the deadline.
    """
    deadline = time.monotonic() + options.url_timeout
    start = time.monotonic()
    allow_private = options.allow_private_urls
    for _ in range(MAX_REDIRECTS + 1):
        parsed = _split(url)
        addresses = resolve_checked(url, allow_private=allow_private)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise InputError(f"cannot fetch {what} URL {url!r}: the deadline of {options.url_timeout:g} s passed")
        cls = _PinnedHTTPS if parsed.scheme == "https" else _PinnedHTTP
        conn = cls(parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80),
                   addresses=addresses, url=url, allow_private=allow_private, timeout=remaining)
        expired = threading.Event()

        def cut(conn: Any = conn, expired: threading.Event = expired) -> None:
            expired.set()
            if conn.raw_sock is not None:
                try:
                    conn.raw_sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        timer = threading.Timer(remaining, cut)
        timer.daemon = True
        timer.start()
        try:
            path = urllib.parse.urlunsplit(("", "", parsed.path or "/", parsed.query, ""))
            conn.request("GET", path, headers={"User-Agent": "qvl", "Accept": "*/*", "Connection": "close"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                url = next_url(url, resp.getheader("Location"), allow_private=allow_private)
                continue
            if resp.status != 200:
                raise InputError(f"cannot fetch {what} URL {url!r}: HTTP {resp.status} {resp.reason}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > options.max_url_bytes:
                raise InputError(f"{what} at {url!r} is {int(length)} bytes, larger than the limit of "
                                 f"{options.max_url_bytes} bytes (max_url_bytes)")
            body = _read_body(resp, url, what, options, start)
            if expired.is_set():  # the socket was shut at the deadline: the body is cut short
                raise OSError("connection closed at the deadline")
            return body
        except InputError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if expired.is_set():
                raise InputError(f"cannot fetch {what} URL {url!r}: the deadline of {options.url_timeout:g} s "
                                 "(url_timeout) passed") from exc
            raise InputError(f"cannot fetch {what} URL {url!r}: {type(exc).__name__}: {exc}") from exc
        finally:
            timer.cancel()
            conn.close()
    raise InputError(f"cannot fetch {what} URL {url!r}: more than {MAX_REDIRECTS} redirects")


def _read_body(resp: http.client.HTTPResponse, url: str, what: str, options: "LoadOptions", start: float) -> bytes:
    parts: list[bytes] = []
    received = 0
    while True:
        chunk = resp.read1(CHUNK)
        if not chunk:
            break
        parts.append(chunk)
        received += len(chunk)
        if received > options.max_url_bytes:
            raise InputError(f"{what} at {url!r} is larger than the limit of {options.max_url_bytes} bytes "
                             "(max_url_bytes)")
        elapsed = time.monotonic() - start
        if elapsed > RATE_GRACE_SECONDS and received / elapsed < options.url_min_rate:
            raise InputError(
                f"cannot fetch {what} URL {url!r}: {received} bytes in {elapsed:.1f} s is slower than the minimum "
                f"of {options.url_min_rate} bytes/s (url_min_rate)")
    return b"".join(parts)

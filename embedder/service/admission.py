"""Admission control: what the service lets in, and how request bodies are read.

Overload must be answered at once with 503 and ``Retry-After``, never by letting every
request wait until its timeout (504). :class:`Admission` keeps the service's bounded
resources in one place, all counted on the event loop (no locks needed):

* requests in flight (from the first byte of the body to the response), at most
  ``max_inflight``;
* request body bytes held in memory across those requests, at most ``max_inflight_bytes``
  (a declared ``Content-Length`` is reserved before anything is read; a chunked body
  reserves as it arrives);
* items waiting for a preprocessing thread, at most ``max_preprocess_queue``.

:func:`read_body` streams a body into one buffer sized from ``Content-Length``, refusing
a body over the cap (413) before reading it or as soon as the stream passes the cap,
and giving up (408) when the client takes longer than ``timeout`` to send it.
:func:`cancel_on_disconnect` cancels a request's work when its client hangs up, so
that its queued preprocessing and model work is dropped.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, AsyncIterator, Awaitable, Callable

from ..errors import OverloadedError


class BodyError(Exception):
    """A body that cannot be accepted: ``status`` 413 (too large) or 408 (too slow)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


class Admission:
    """The service's bounded resources: in-flight requests, body bytes, preprocessing queue.

    Args:
        max_inflight: requests admitted at once; one more is refused with 503.
        max_inflight_bytes: request body bytes held at once, across requests.
        max_preprocess_queue: items waiting for a preprocessing thread.
        retry_after: seconds suggested to refused clients.
    """

    def __init__(self, *, max_inflight: int, max_inflight_bytes: int, max_preprocess_queue: int,
                 retry_after: float) -> None:
        self.max_inflight = int(max_inflight)
        self.max_inflight_bytes = int(max_inflight_bytes)
        self.max_preprocess_queue = int(max_preprocess_queue)
        self.retry_after = float(retry_after)
        self.inflight = 0
        self.inflight_bytes = 0
        self.preprocess_queued = 0

    def _refuse(self, message: str) -> OverloadedError:
        return OverloadedError(f"{message}; retry after {self.retry_after:g} s", retry_after=self.retry_after)

    @contextlib.asynccontextmanager
    async def request(self) -> AsyncIterator["_Slot"]:
        """Admit one request or raise :class:`OverloadedError` at once; releases its bytes on exit."""
        if self.inflight >= self.max_inflight:
            raise self._refuse(f"the service is busy ({self.inflight} requests in flight, "
                               f"limit {self.max_inflight})")
        self.inflight += 1
        slot = _Slot(self)
        try:
            yield slot
        finally:
            self.inflight -= 1
            slot.release()

    def reserve_preprocessing(self, n: int) -> None:
        """Count ``n`` items into the preprocessing queue, or raise OverloadedError when it is full.

        An empty queue takes any request, so that one request larger than the limit is not
        refused forever.
        """
        if self.preprocess_queued and self.preprocess_queued + n > self.max_preprocess_queue:
            raise self._refuse(f"preprocessing queue is full ({self.preprocess_queued} items waiting, "
                               f"limit {self.max_preprocess_queue})")
        self.preprocess_queued += n

    def release_preprocessing(self, n: int) -> None:
        self.preprocess_queued = max(0, self.preprocess_queued - n)


class _Slot:
    """One admitted request's share of the body-byte budget."""

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.bytes = 0

    def reserve(self, n: int) -> None:
        a = self.admission
        # The only request in flight may use the whole budget, so a large body is never refused forever.
        if a.inflight_bytes and a.inflight_bytes + n > a.max_inflight_bytes:
            raise a._refuse(f"request bodies in flight hold {a.inflight_bytes} bytes; another {n} would pass "
                            f"the limit of {a.max_inflight_bytes}")
        a.inflight_bytes += n
        self.bytes += n

    def release(self) -> None:
        self.admission.inflight_bytes -= self.bytes
        self.bytes = 0


async def read_body(request: Any, slot: _Slot, *, limit: int, timeout: float) -> bytes | bytearray:
    """The request body, streamed into one buffer: at most ``limit`` bytes, within ``timeout`` seconds.

    Raises:
        BodyError: 413 when the declared or streamed size passes ``limit`` (nothing past the
            cap is read or kept), 408 when the client is slower than ``timeout``,
            400 for a bad ``Content-Length``.
        OverloadedError: the body-byte budget of the service is used up (503).
    """
    declared = request.headers.get("content-length")
    expected = None
    if declared is not None:
        if not declared.isdigit():
            raise BodyError(400, "bad_request", f"invalid Content-Length {declared[:40]!r}")
        expected = int(declared)
        if expected > limit:
            raise BodyError(413, "body_too_large",
                            f"request body of {expected} bytes exceeds the limit of {limit} bytes")
        slot.reserve(expected)
        buf = bytearray(expected)
    else:
        buf = bytearray()
    size = 0
    deadline = time.monotonic() + timeout
    stream = request.stream().__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BodyError(408, "body_timeout", f"the request body was not received within {timeout:g} s")
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), remaining)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise BodyError(408, "body_timeout",
                            f"the request body was not received within {timeout:g} s") from None
        except Exception as exc:
            if type(exc).__name__ == "ClientDisconnect":  # starlette's: the client left mid-body
                raise ClientDisconnected() from exc
            raise
        if not chunk:
            continue
        end = size + len(chunk)
        if end > limit or (expected is not None and end > expected):
            raise BodyError(413, "body_too_large", f"request body exceeds the limit of "
                                                   f"{limit if expected is None else expected} bytes")
        if expected is None:
            slot.reserve(len(chunk))
            buf += chunk
        else:
            buf[size:end] = chunk
        size = end
    if expected is not None and size != expected:
        raise BodyError(400, "bad_request", f"the body has {size} bytes, not the {expected} of its Content-Length")
    return buf


async def cancel_on_disconnect(request: Any, work: Awaitable[Any],
                               on_disconnect: Callable[[], None] | None = None) -> Any:
    """Await ``work``; if the client disconnects first, cancel it and re-raise the cancellation.

    Call only once the body has been read: the ASGI ``receive`` then waits for nothing but
    ``http.disconnect``.
    """
    task = asyncio.ensure_future(work)
    receive = request.receive

    async def watch() -> None:
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    if task.done():
        watcher.cancel()
        return task.result()
    task.cancel()
    if on_disconnect is not None:
        on_disconnect()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientDisconnected()


class ClientDisconnected(Exception):
    """The client hung up before its answer was ready; its work was cancelled."""

"""Dynamic batching: concurrent requests share token-budget batches on one model worker.

Requests arrive on the asyncio event loop already preprocessed (a list of
:class:`~embedder.model.Prepared` per request, so a bad item has failed its own
request before it could reach a shared batch). :meth:`DynamicBatcher.submit` puts
their items on a bounded queue; ONE worker thread takes a first-in-first-out window
of queued items, waits a few milliseconds for more when the window is not full,
groups the window into token-budget batches (:func:`~embedder.batching.token_budget_batches`),
runs each batch through the model and hands every request its own rows, in its own
order, as soon as its last item is done. A request's items may be spread over several
batches.

Backpressure: when the queue already holds ``max_queue`` items, :meth:`submit` raises
:class:`~embedder.errors.OverloadedError` at once (the service answers 503 with
``Retry-After``). So does a request given a ``deadline`` that the queue ahead of it
cannot meet: the worker measures its throughput (tokens per second, a moving average),
and a request whose tokens would wait longer than its time left is refused at once
instead of timing out later (504). A cancelled request (timeout, client gone) leaves
the queue.

If a shared batch fails in the model, its items are retried one by one, so only the
request owning the culprit fails.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..batching import token_budget_batches
from ..errors import OverloadedError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchStats:
    """What one forward pass did (passed to the ``on_batch`` callback).

    Attributes:
        name: the batcher's name (``embed`` or ``rerank``).
        items: items in the batch.
        requests: distinct requests the batch served.
        padded_tokens: longest item x items.
        seconds: time spent in the model.
    """

    name: str
    items: int
    requests: int
    padded_tokens: int
    seconds: float


class BatchError(RuntimeError):
    """The model failed on an item. ``position`` is the item's place in its request."""

    def __init__(self, message: str, *, position: int) -> None:
        self.position = position
        super().__init__(message)


class _Request:
    """One caller's items in flight. Touched by the worker only, except the flags under the lock."""

    __slots__ = ("future", "loop", "rows", "remaining", "queued", "tokens", "closed")

    def __init__(self, n: int, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future = loop.create_future()
        self.rows: list[Any] = [None] * n
        self.remaining = n
        self.queued = n       # entries still on the queue (under the batcher's lock)
        self.tokens = 0       # tokens of those entries
        self.closed = False   # answered, failed or cancelled: skip its remaining entries


class _Entry:
    __slots__ = ("request", "position", "prepared", "enqueued")

    def __init__(self, request: _Request, position: int, prepared: Any, enqueued: float) -> None:
        self.request = request
        self.position = position
        self.prepared = prepared
        self.enqueued = enqueued


def _resolve(future: asyncio.Future, value: Any, is_error: bool) -> None:
    if future.done():
        return
    if is_error:
        future.set_exception(value)
    else:
        future.set_result(value)


def _deliver(request: _Request, value: Any, is_error: bool) -> None:
    try:
        request.loop.call_soon_threadsafe(_resolve, request.future, value, is_error)
    except RuntimeError:  # the loop is closed: nobody is waiting any more
        pass


class DynamicBatcher:
    """Merge concurrent requests into token-budget batches run by one worker thread.

    Args:
        forward: runs one batch of prepared items and returns one row per item
            (``Embedder.forward`` or ``Reranker.forward``). Called from the worker thread only.
        name: label for logs and metrics.
        max_batch_tokens: padded-token budget of one forward pass.
        max_batch_items: most items in one forward pass.
        max_wait_s: how long the oldest queued item may wait for company before a
            batch that is not full runs anyway.
        max_queue: most items waiting; beyond it :meth:`submit` raises OverloadedError.
        retry_after: seconds suggested to refused clients.
        min_fill: smallest share of real tokens in a batch (see ``token_budget_batches``).
        on_batch: called with a :class:`BatchStats` after every forward pass.
        on_drop: called with the number of queued items a cancelled request left
            behind (they never reach the model).

    Example:
        >>> batcher = DynamicBatcher(embedder.forward, name="embed")   # doctest: +SKIP
        >>> batcher.start()                                               # doctest: +SKIP
        >>> rows = await batcher.submit(prepared_items)                   # doctest: +SKIP
        >>> batcher.stop()                                                # doctest: +SKIP
    """

    def __init__(self, forward: Callable[[list[Any]], np.ndarray], *, name: str = "embed",
                 max_batch_tokens: int = 16384, max_batch_items: int = 64, max_wait_s: float = 0.005,
                 max_queue: int = 1024, retry_after: float = 1.0, min_fill: float = 0.75,
                 on_batch: Callable[[BatchStats], None] | None = None,
                 on_drop: Callable[[int], None] | None = None) -> None:
        if max_batch_tokens <= 0 or max_batch_items <= 0 or max_queue <= 0:
            raise ValueError("max_batch_tokens, max_batch_items and max_queue must be positive")
        self._forward = forward
        self.name = name
        self.max_batch_tokens = int(max_batch_tokens)
        self.max_batch_items = int(max_batch_items)
        self.max_wait_s = max(0.0, float(max_wait_s))
        self.max_queue = int(max_queue)
        self.retry_after = float(retry_after)
        self.min_fill = float(min_fill)
        self._on_batch = on_batch
        self._on_drop = on_drop
        self._cond = threading.Condition()
        self._queue: collections.deque[_Entry] = collections.deque()
        self._depth = 0          # live entries on the queue (cancelled ones excluded)
        self._tokens = 0         # their tokens
        self._running = 0        # tokens of the window the worker is running
        self._rate: float | None = None  # tokens per second of the model, a moving average
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "DynamicBatcher":
        """Start the worker thread (idempotent). Returns self."""
        with self._cond:
            if self._thread is None:
                self._stopping = False
                self._thread = threading.Thread(target=self._work, name=f"qvl-{self.name}-worker", daemon=True)
                self._thread.start()
        return self

    def stop(self, *, timeout: float = 10.0) -> None:
        """Refuse new work, fail what is still queued, and join the worker. Idempotent."""
        with self._cond:
            self._stopping = True
            dropped = list(self._queue)
            self._queue.clear()
            self._depth = 0
            self._tokens = 0
            self._cond.notify_all()
        for entry in dropped:
            self._fail(entry.request, OverloadedError("the service is shutting down", retry_after=self.retry_after))
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def alive(self) -> bool:
        """True while the worker thread runs and accepts work."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    @property
    def queue_depth(self) -> int:
        """Items waiting for the model."""
        return self._depth

    # ------------------------------------------------------------------ callers (event loop)
    @property
    def tokens_per_second(self) -> float | None:
        """The model's measured throughput (None before the first batch)."""
        return self._rate

    async def submit(self, prepared: Sequence[Any], *, deadline: float | None = None) -> np.ndarray:
        """Queue one request's prepared items and wait for its rows, in its order.

        Args:
            prepared: the request's prepared items.
            deadline: ``time.monotonic()`` by which the request must be answered; when the
                queue ahead would take longer at the measured rate, it is refused at once.

        Raises:
            OverloadedError: the queue is full, cannot meet ``deadline``, or the service is stopping.
            BatchError: the model failed on one of this request's items.
        """
        n = len(prepared)
        if n == 0:
            raise ValueError("submit needs at least one item")
        request = _Request(n, asyncio.get_running_loop())
        tokens = sum(int(p.n_tokens) for p in prepared)
        now = time.monotonic()
        with self._cond:
            if deadline is not None and self._rate and (self._depth or self._running):
                wait = (self._running + self._tokens + tokens) / self._rate
                if wait > 0.8 * (deadline - now):  # a margin: the rate is an estimate
                    raise OverloadedError(
                        f"{self.name} queue is too long to answer in time ({self._depth} items, about {wait:.1f} s "
                        f"of work, {max(0.0, deadline - now):.1f} s left); retry after {self.retry_after:g} s",
                        retry_after=self.retry_after)
            if self._stopping or self._thread is None:
                raise OverloadedError("the model worker is not running", retry_after=self.retry_after)
            # An empty queue takes any request, so one larger than max_queue is not refused forever.
            if self._depth and self._depth + n > self.max_queue:
                raise OverloadedError(
                    f"{self.name} queue is full ({self._depth} items waiting, limit {self.max_queue}); "
                    f"retry after {self.retry_after:g} s", retry_after=self.retry_after)
            self._queue.extend(_Entry(request, i, p, now) for i, p in enumerate(prepared))
            self._depth += n
            self._tokens += tokens
            request.tokens = tokens
            self._cond.notify()
        try:
            return await request.future
        except BaseException:
            dropped = 0
            with self._cond:
                if not request.closed:
                    request.closed = True
                    dropped = request.queued
                    self._depth -= request.queued
                    self._tokens -= request.tokens
                    request.queued = request.tokens = 0
            if dropped and self._on_drop is not None:
                self._on_drop(dropped)
            raise

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        while True:
            with self._cond:
                window = self._next_window()
                if window is None:
                    return
            if window:
                try:
                    self._run_window(window)
                finally:
                    with self._cond:
                        self._running = 0

    def _next_window(self) -> list[_Entry] | None:
        """Wait for work (lock held); return a FIFO window of live entries, or None to stop."""
        while True:
            self._drop_closed_head()
            if self._stopping:
                return None
            if self._queue:
                break
            self._cond.wait()
        deadline = self._queue[0].enqueued + self.max_wait_s
        while not self._stopping and not self._window_full():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._cond.wait(remaining)
        if self._stopping:
            return None
        # A window of up to two batches' worth, so sorting by length can cut padding.
        window: list[_Entry] = []
        tokens = 0
        while self._queue and len(window) < 2 * self.max_batch_items:
            entry = self._queue[0]
            if entry.request.closed:
                self._queue.popleft()
                continue
            n = entry.prepared.n_tokens
            if window and tokens + n > 2 * self.max_batch_tokens:
                break
            self._queue.popleft()
            entry.request.queued -= 1
            entry.request.tokens -= n
            self._depth -= 1
            self._tokens -= n
            tokens += n
            window.append(entry)
        self._running = tokens
        return window

    def _drop_closed_head(self) -> None:
        while self._queue and self._queue[0].request.closed:
            self._queue.popleft()

    def _window_full(self) -> bool:
        count = longest = 0
        for entry in self._queue:
            if entry.request.closed:
                continue
            count += 1
            longest = max(longest, entry.prepared.n_tokens)
            if count >= self.max_batch_items or longest * count >= self.max_batch_tokens:
                return True
        return False

    def _run_window(self, window: list[_Entry]) -> None:
        lengths = [e.prepared.n_tokens for e in window]
        for batch in token_budget_batches(lengths, max_tokens=self.max_batch_tokens, max_items=self.max_batch_items,
                                          min_fill=self.min_fill):
            entries = [window[j] for j in batch if not window[j].request.closed]
            if entries:
                self._run_batch(entries)

    def _run_batch(self, entries: list[_Entry]) -> None:
        start = time.perf_counter()
        try:
            rows = self._forward([e.prepared for e in entries])
        except Exception as exc:  # noqa: BLE001 - isolate the failing item below
            if len(entries) == 1:
                entry = entries[0]
                log.error("%s: model failed on an item: %s: %s", self.name, type(exc).__name__, exc)
                self._fail(entry.request, BatchError(f"the model failed on this item: {type(exc).__name__}: {exc}",
                                                     position=entry.position))
                return
            log.warning("%s: batch of %d failed (%s); retrying its items one by one",
                        self.name, len(entries), type(exc).__name__)
            for entry in entries:
                if not entry.request.closed:
                    self._run_batch([entry])
            return
        seconds = time.perf_counter() - start
        if seconds > 0:
            rate = sum(e.prepared.n_tokens for e in entries) / seconds
            self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
        if self._on_batch is not None:
            try:
                self._on_batch(BatchStats(name=self.name, items=len(entries),
                                          requests=len({id(e.request) for e in entries}),
                                          padded_tokens=max(e.prepared.n_tokens for e in entries) * len(entries),
                                          seconds=seconds))
            except Exception:  # noqa: BLE001 - metrics must never break serving
                log.exception("%s: on_batch callback failed", self.name)
        for entry, row in zip(entries, rows):
            request = entry.request
            if request.closed:
                continue
            request.rows[entry.position] = row
            request.remaining -= 1
            if request.remaining == 0:
                request.closed = True
                _deliver(request, np.stack(request.rows), False)

    def _fail(self, request: _Request, exc: BaseException) -> None:
        with self._cond:
            if request.closed:
                return
            request.closed = True
            self._depth -= request.queued
            self._tokens -= request.tokens
            request.queued = request.tokens = 0
        _deliver(request, exc, True)

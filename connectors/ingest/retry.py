"""Transient failures and retries: :func:`is_transient`, the one rule for every retry and
back-off, and :class:`RetryPolicy` (exponential backoff).

Transient failures (connection reset, timeout, 503, overload) are retried; anything
else is the row's own failure and goes to the dead letters.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

from embedder.errors import InputError, OverloadedError, QVLError, RemoteError, UnavailableError

log = logging.getLogger(__name__)


_TRANSIENT_REASON = re.compile(
    r"ConnectionError|ConnectionReset|ConnectionRefused|ConnectionAborted|BrokenPipe|TimeoutError|timed? ?out|"
    r"UnavailableError|OverloadedError|\b50[234]\b|connection reset|temporarily unavailable|service unavailable|"
    r"UNAVAILABLE|DEADLINE_EXCEEDED", re.IGNORECASE)


# httpx's transport errors, matched by name so that this module does not import httpx
_TRANSIENT_NAMES = frozenset({"ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout",
                              "TimeoutException", "RemoteProtocolError", "ReadError", "WriteError"})


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or an error it was raised from) says a service is away for now, not
    that the row is bad: a refused or lost connection, a timeout, an overloaded service
    (:class:`~embedder.errors.OverloadedError`, HTTP 429 or any 5xx from ``qvl serve``, a
    :class:`~embedder.errors.RemoteError` that could not connect), an unavailable database.

    The one rule for every retry and back-off: ``qvl ingest``'s retries and the Postgres
    sync worker's outage handling both use it.

    Example:
        >>> is_transient(ConnectionRefusedError(111, "Connection refused"))
        True
        >>> is_transient(InputError("cannot open image x.png"))
        False
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, InputError):
            return False
        if isinstance(e, (UnavailableError, OverloadedError, ConnectionError, TimeoutError)):
            return True
        if isinstance(e, RemoteError) and ((e.status is not None and (e.status >= 500 or e.status == 429))
                                           or e.code in ("timeout", "unavailable")):
            return True
        if type(e).__name__ in _TRANSIENT_NAMES:
            return True
        if not isinstance(e, QVLError) and type(e).__module__.split(".")[0] in (
                "pymilvus", "grpc", "httpx", "psycopg", "weaviate") and \
                _TRANSIENT_REASON.search(f"{type(e).__name__}: {e}"):
            return True
        e = e.__cause__ or e.__context__
    return False


def transient_reason(reason: str) -> bool:
    """True when a failure reason from an :class:`~connectors.core.UpsertReport` looks transient."""
    return bool(_TRANSIENT_REASON.search(reason))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures.

    Attributes:
        attempts: tries in all (1 = no retry).
        backoff: first wait in seconds; doubled after each failed try.
        max_backoff: longest wait.
    """

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        return min(self.max_backoff, self.backoff * (2 ** attempt))


def _retrying(what: str, fn: Callable[[], Any], policy: RetryPolicy, sleep: Callable[[float], None]) -> Any:
    for attempt in range(max(1, policy.attempts)):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - re-raised unless transient
            if not is_transient(exc) or attempt + 1 >= policy.attempts:
                raise
            wait = policy.delay(attempt)
            log.warning("%s failed (%s: %s); retry %d/%d in %.1f s", what, type(exc).__name__, exc,
                        attempt + 1, policy.attempts - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


"""What every model route shares: the API key dependency, the request pipeline, errors and JSON.

A model route is ``async def route(request) -> Response: return await handle(request,
protocol, parse, run)``. :func:`handle` admits the request or refuses it at once
(:mod:`embedder.service.admission`), streams the body under its size cap and deadline,
decodes and validates it on the parse pool, off the event loop (``parse`` checks the
body against the protocol's pydantic model and turns it into a protocol-neutral
request), runs ``run`` under the service's timeout, cancels the work when the client
hangs up, answers every failure in the protocol's error shape and counts the request
in the metrics.

The bodies are read here rather than by FastAPI's body parameters on purpose: FastAPI
would read a whole body before any check (no admission, no size cap while streaming, no
deadline) and decode and validate it on the event loop.

Routes are grouped in one :class:`fastapi.APIRouter` per protocol family; each router
has its protocol as its tag, which is how the exception handlers (:func:`install_error_handlers`)
choose the error shape for a failure raised before :func:`handle` runs (the API key,
FastAPI's own validation).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import time
import uuid
from typing import Any, Awaitable, Callable

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from ...errors import InputError, MissingDependencyError, OverloadedError
from .. import protocols as P
from ..admission import BodyError, ClientDisconnected, cancel_on_disconnect, read_body
from ..batcher import BatchError
from ..core import HTTPFailure, Service, request_deadline

log = logging.getLogger(__name__)

Parse = Callable[[Any, "Call"], Any]
Run = Callable[[Any, "Call"], Awaitable[tuple[Any, int]]]


class Call:
    """One request on its way through :func:`handle`.

    Attributes:
        service: the app's :class:`~embedder.service.core.Service`.
        protocol: whose error shape failures take; a parser may switch it (a route
            shared by two protocols, e.g. ``/rerank``) once it has seen the body.
        data: what the parser leaves for ``run`` (e.g. OpenAI's ``model`` echo).
    """

    __slots__ = ("service", "protocol", "data")

    def __init__(self, service: Service, protocol: str) -> None:
        self.service = service
        self.protocol = protocol
        self.data: dict[str, Any] = {}

    @property
    def limits(self) -> P.Limits:
        return self.service.limits


# ---------------------------------------------------------------------------- dependencies
def service_of(request: Request) -> Service:
    """The app's service (a FastAPI dependency)."""
    return request.app.state.service


def start_clock(request: Request) -> None:
    """Note when the request arrived (the first dependency of a metered router), for its latency."""
    request.state.started = time.perf_counter()


def require_key(request: Request) -> None:
    """The API key check (a FastAPI dependency): ``Authorization: Bearer <key>`` when a key is set.

    Raises:
        HTTPFailure: 401 with ``WWW-Authenticate: Bearer``; the app's handler answers it in
            the route's protocol shape. The key is compared in constant time and never logged.
    """
    key = request.app.state.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
        raise HTTPFailure(401, "unauthorized", "missing or invalid API key (send 'Authorization: Bearer <key>')",
                          headers={"WWW-Authenticate": "Bearer"})


# ---------------------------------------------------------------------------- JSON
def dumps(obj: Any) -> bytes:
    try:
        import orjson
    except ImportError:
        return json.dumps(obj, default=_json_default, separators=(",", ":")).encode()
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def loads(data: bytes | bytearray) -> Any:
    """A request body as JSON; an empty or malformed body is an :class:`InputError`."""
    if not data:
        raise InputError("empty request body; send JSON")
    try:
        import orjson
    except ImportError:
        orjson = None  # type: ignore[assignment]
    try:
        return orjson.loads(data) if orjson is not None else json.loads(data)
    except ValueError as exc:
        raise InputError(f"the request body is not valid JSON: {exc}") from exc


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content=dumps(body), status_code=status, media_type="application/json", headers=headers)


# ---------------------------------------------------------------------------- errors
def as_failure(exc: BaseException) -> HTTPFailure:
    """Any exception of a request as its HTTP status, code and message."""
    if isinstance(exc, HTTPFailure):
        return exc
    if isinstance(exc, P.TooLarge):
        return HTTPFailure(413, exc.code, str(exc), index=exc.index, reason=exc.reason)
    if isinstance(exc, BodyError):
        return HTTPFailure(exc.status, exc.code, exc.message)
    if isinstance(exc, ClientDisconnected):
        return HTTPFailure(499, "client_closed", "the client closed the connection; its work was cancelled")
    if isinstance(exc, InputError):
        return HTTPFailure(400, "invalid_input", str(exc), index=exc.index, reason=exc.reason)
    if isinstance(exc, OverloadedError):
        return HTTPFailure(503, "overloaded", str(exc),
                           headers={"Retry-After": str(max(1, math.ceil(exc.retry_after)))})
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return HTTPFailure(504, "timeout", "the request took longer than the service's timeout")
    if isinstance(exc, MissingDependencyError):
        return HTTPFailure(501, "missing_dependency", str(exc))
    if isinstance(exc, BatchError):
        return HTTPFailure(500, "model_error", f"item {exc.position}: {exc}", index=exc.position)
    log.error("internal error: %s: %s", type(exc).__name__, exc)
    return HTTPFailure(500, "internal", f"internal error: {type(exc).__name__}")


def failure_response(protocol: str, fail: HTTPFailure, request_id: str = "") -> Response:
    body = P.error_body(protocol, status=fail.status, code=fail.code, message=fail.message, index=fail.index,
                        reason=fail.reason, request_id=request_id or str(uuid.uuid4()))
    return json_response(body, fail.status, fail.headers)


def route_label(request: Request) -> str:
    """The route as the metrics name it: its path template (``/vectors/`` counts as ``/vectors``)."""
    route = request.scope.get("route")
    path = getattr(route, "path", None) or request.url.path
    return path.rstrip("/") or "/"


def _protocol_of(request: Request) -> str:
    tags = getattr(request.scope.get("route"), "tags", None) or ["native"]
    return str(tags[0])


def install_error_handlers(app: FastAPI) -> None:
    """Failures raised before :func:`handle` (the key check, FastAPI's validation) in the route's protocol shape.

    A metered route (one whose router starts the clock) counts them in the metrics too.
    """
    async def on_failure(request: Request, exc: Exception) -> Response:
        if isinstance(exc, RequestValidationError):
            errors = exc.errors()
            first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
            where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
            fail = as_failure(InputError(f"{where!r}: {first.get('msg')}" if where else str(first.get("msg"))))
        else:
            fail = as_failure(exc)
        response = failure_response(_protocol_of(request), fail)
        started = getattr(request.state, "started", None)
        if started is not None:
            service_of(request).metrics.observe_request(route_label(request), response.status_code,
                                                        time.perf_counter() - started, 0)
        return response

    app.add_exception_handler(HTTPFailure, on_failure)
    app.add_exception_handler(RequestValidationError, on_failure)


# ---------------------------------------------------------------------------- the pipeline
async def handle(request: Request, protocol: str, parse: Parse, run: Run) -> Response:
    """Admission, body, parsing off the loop, timeout, disconnects, errors and metrics around one request.

    ``parse(body, call)`` turns the decoded JSON into a request object; it runs on the
    parse pool and may set ``call.protocol`` so that errors take that protocol's shape.
    ``run(request, call)`` returns ``(response body, items)``. The API key was checked by
    the router's dependency before this runs.
    """
    service: Service = request.app.state.service
    settings = service.settings
    start = getattr(request.state, "started", None) or time.perf_counter()
    request_id = str(uuid.uuid4())
    call = Call(service, protocol)
    items = 0
    try:
        if not service.ready:
            raise OverloadedError("the service is starting or stopping", retry_after=settings.retry_after)
        async with service.admission.request() as slot:
            held = [await read_body(request, slot, limit=settings.max_body_bytes, timeout=settings.body_timeout)]

            def parse_body() -> Any:
                data, held[0] = held[0], None  # the raw body is freed as soon as it is decoded
                return parse(loads(data), call)

            async def work() -> tuple[Any, int]:
                request_deadline.set(time.monotonic() + settings.timeout)
                req = await service.parse(parse_body)
                return await run(req, call)

            payload, items = await cancel_on_disconnect(request, asyncio.wait_for(work(), settings.timeout),
                                                        service.metrics.observe_disconnect)
        if isinstance(payload, dict) and call.protocol == "dashscope":
            payload["request_id"] = request_id
        response = json_response(payload)
    except Exception as exc:  # noqa: BLE001 - every failure gets the protocol's error shape
        response = failure_response(call.protocol, as_failure(exc), request_id)
    service.metrics.observe_request(route_label(request), response.status_code, time.perf_counter() - start, items)
    return response


async def embed_items(call: Call, req: P.EmbedRequest, route: str, *,
                      on_error: str = "raise") -> tuple[Any, int]:
    """Embed a parsed request at its dimension (or ``route``'s default): ``(EmbedOutcome, dim)``."""
    dim = call.service.resolve_dim(req.dim, route)
    return await call.service.embed(req.items, dim=dim, instruction=req.instruction, on_error=on_error), dim

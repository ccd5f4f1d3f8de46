"""The FastAPI application: routes for every protocol over one batched model.

Pipeline per request: authenticate, read the body (bounded), parse it with
:mod:`embedder.service.protocols`, preprocess each item on a thread pool (a bad item
fails its own request, naming its index, before anything is queued), queue the
prepared items on the :class:`~embedder.service.batcher.DynamicBatcher`, truncate the
returned full-size vectors to the requested MRL dimension and answer in the
protocol's shape. Errors map to HTTP statuses:

=====  =========================================================
400    bad request or bad item (the body names the item index)
401    missing or wrong bearer key (when ``--api-key`` is set)
413    body larger than ``max_body_bytes`` or more than ``max_items`` items
501    no reranker loaded, or an optional dependency is missing
503    queue full or shutting down (with ``Retry-After``)
504    the request took longer than ``timeout``
=====  =========================================================

Request bodies and keys are never logged.
"""
# No "from __future__ import annotations" here: FastAPI resolves the route handlers'
# annotations (``request: Request``, imported inside create_app) at definition time.

import asyncio
import copy
import dataclasses
import hmac
import json
import logging
import math
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Awaitable, Callable, Sequence

import numpy as np

from ..embedder import DEFAULT_QUERY_INSTRUCTION, MIN_DIM, mrl
from ..errors import InputError, MissingDependencyError, OverloadedError
from ..model import as_input_error
from ..prompts import DEFAULT_RERANK_INSTRUCTION, IMAGE_PAD_ID
from . import ServiceSettings
from . import protocols as P
from .batcher import BatchError, BatchStats, DynamicBatcher

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


# ---------------------------------------------------------------------------- errors
class HTTPFailure(Exception):
    """An error with its HTTP status and machine-readable code."""

    def __init__(self, status: int, code: str, message: str, *, index: int | None = None,
                 reason: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.reason = reason
        self.headers = headers or {}
        super().__init__(message)


def _as_failure(exc: BaseException) -> HTTPFailure:
    if isinstance(exc, HTTPFailure):
        return exc
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


# ---------------------------------------------------------------------------- metrics
class _Histogram:
    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, cum = [], 0
        for b, c in zip(self.buckets, self.counts):
            cum += c
            out.append(f'{name}_bucket{{{labels}{sep}le="{b:g}"}} {cum}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        lab = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{lab} {self.total:.6g}")
        out.append(f"{name}_count{lab} {self.n}")
        return out


class Metrics:
    """Prometheus text-format counters and histograms, kept by hand (no extra dependency)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = {}
        self.items: dict[str, int] = {}
        self.latency: dict[str, _Histogram] = {}
        self.batch_size: dict[str, _Histogram] = {}
        self.batch_seconds: dict[str, _Histogram] = {}
        self.batch_tokens: dict[str, int] = {}

    def observe_request(self, route: str, status: int, seconds: float, items: int) -> None:
        with self._lock:
            self.requests[(route, status)] = self.requests.get((route, status), 0) + 1
            if items:
                self.items[route] = self.items.get(route, 0) + items
            self.latency.setdefault(route, _Histogram(LATENCY_BUCKETS)).observe(seconds)

    def observe_batch(self, stats: BatchStats) -> None:
        with self._lock:
            self.batch_size.setdefault(stats.name, _Histogram(BATCH_BUCKETS)).observe(stats.items)
            self.batch_seconds.setdefault(stats.name, _Histogram(LATENCY_BUCKETS)).observe(stats.seconds)
            self.batch_tokens[stats.name] = self.batch_tokens.get(stats.name, 0) + stats.padded_tokens

    def render(self, queues: dict[str, tuple[int, int]]) -> str:
        """The exposition text; ``queues`` maps model name -> (depth, capacity)."""
        with self._lock:
            out = ["# HELP qvl_requests_total HTTP requests by route and status.",
                   "# TYPE qvl_requests_total counter"]
            out += [f'qvl_requests_total{{route="{r}",status="{s}"}} {n}' for (r, s), n in sorted(self.requests.items())]
            out += ["# HELP qvl_items_total Items (inputs or documents) received, by route.",
                    "# TYPE qvl_items_total counter"]
            out += [f'qvl_items_total{{route="{r}"}} {n}' for r, n in sorted(self.items.items())]
            out += ["# HELP qvl_request_seconds Request latency, by route.", "# TYPE qvl_request_seconds histogram"]
            for r, h in sorted(self.latency.items()):
                out += h.lines("qvl_request_seconds", f'route="{r}"')
            out += ["# HELP qvl_batch_size Items per forward pass.", "# TYPE qvl_batch_size histogram"]
            for m, h in sorted(self.batch_size.items()):
                out += h.lines("qvl_batch_size", f'model="{m}"')
            out += ["# HELP qvl_batch_seconds Time per forward pass.", "# TYPE qvl_batch_seconds histogram"]
            for m, h in sorted(self.batch_seconds.items()):
                out += h.lines("qvl_batch_seconds", f'model="{m}"')
            out += ["# HELP qvl_batch_padded_tokens_total Padded tokens run through the model.",
                    "# TYPE qvl_batch_padded_tokens_total counter"]
            out += [f'qvl_batch_padded_tokens_total{{model="{m}"}} {n}' for m, n in sorted(self.batch_tokens.items())]
        out += ["# HELP qvl_queue_depth Items waiting for the model.", "# TYPE qvl_queue_depth gauge"]
        out += [f'qvl_queue_depth{{model="{m}"}} {d}' for m, (d, _) in sorted(queues.items())]
        out += ["# HELP qvl_queue_capacity Queue limit (items).", "# TYPE qvl_queue_capacity gauge"]
        out += [f'qvl_queue_capacity{{model="{m}"}} {c}' for m, (_, c) in sorted(queues.items())]
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------- JSON
def _dumps(obj: Any) -> bytes:
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


def _loads(data: bytes) -> Any:
    try:
        import orjson
    except ImportError:
        return json.loads(data)
    return orjson.loads(data)


# ---------------------------------------------------------------------------- service core
@dataclasses.dataclass(frozen=True)
class EmbedOutcome:
    """Vectors of the good items (at the requested dim), their indices, errors and token counts."""

    vectors: np.ndarray
    indices: list[int]
    errors: list[tuple[int, str]]
    tokens: int
    image_tokens: int


@dataclasses.dataclass(frozen=True)
class ScoreOutcome:
    """One score per document (NaN for a failed one) and the failures."""

    scores: np.ndarray
    errors: list[tuple[int, str]]


def _with_load_options(model: Any, settings: ServiceSettings) -> Any:
    """A shallow view of ``model`` whose media loading follows the operator's flags.

    The view shares weights, tokenizer and lock with ``model``; only ``load_options``
    differ, so a caller's Embedder built with ``allow_paths=True`` is not widened
    or mutated by the service.
    """
    wanted = dataclasses.replace(model.load_options, allow_urls=settings.allow_urls,
                                 allow_private_urls=settings.allow_private_urls, allow_paths=settings.allow_paths)
    if model.load_options == wanted:
        return model
    view = copy.copy(model)
    view.load_options = wanted
    return view


class Service:
    """Models, batchers and the protocol-independent operations behind the routes."""

    def __init__(self, settings: ServiceSettings, embedder: Any = None, reranker: Any = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.embedder: Any = None
        self.reranker: Any = None
        self._given = (embedder, reranker)
        self._owned: list[Any] = []
        self._pool: ThreadPoolExecutor | None = None
        self._batchers: dict[str, DynamicBatcher] = {}
        self.ready = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load models if not given, start the preprocessing pool and the model workers."""
        s = self.settings
        embedder, reranker = self._given
        if embedder is None:
            if not s.model:
                raise ValueError("ServiceSettings.model is required when no embedder is given")
            from ..embedder import Embedder

            embedder = Embedder.from_pretrained(s.model, device=s.device, max_batch_tokens=s.max_batch_tokens,
                                                allow_urls=s.allow_urls, allow_paths=s.allow_paths)
            self._owned.append(embedder)
        if reranker is None and s.reranker:
            from ..reranker import Reranker

            reranker = Reranker.from_pretrained(s.reranker, device=s.device, max_batch_tokens=s.max_batch_tokens,
                                                allow_urls=s.allow_urls, allow_paths=s.allow_paths)
            self._owned.append(reranker)
        self.embedder = _with_load_options(embedder, s)
        self.reranker = _with_load_options(reranker, s) if reranker is not None else None
        self._pool = ThreadPoolExecutor(max_workers=s.preprocess_workers, thread_name_prefix="qvl-serve-prep")
        common = dict(max_batch_items=s.max_batch_items,
                      max_wait_s=s.max_wait_ms / 1000.0, max_queue=s.max_queue, retry_after=s.retry_after,
                      on_batch=self.metrics.observe_batch)
        self._batchers["embed"] = DynamicBatcher(self.embedder.forward, name="embed",
                                                 min_fill=getattr(self.embedder, "min_fill", 0.75),
                                                 max_batch_tokens=self._budget(self.embedder), **common).start()
        if self.reranker is not None:
            self._batchers["rerank"] = DynamicBatcher(self.reranker.forward, name="rerank",
                                                      min_fill=getattr(self.reranker, "min_fill", 0.75),
                                                      max_batch_tokens=self._budget(self.reranker), **common).start()
        self.ready = True
        log.info("serving %s (dim %d)%s", getattr(self.embedder, "name", "embedder"), self.embedder.dim,
                 f" and reranker {self.reranker.name}" if self.reranker is not None else "")

    def stop(self) -> None:
        """Stop the workers, fail queued requests, close what the service loaded. Idempotent."""
        self.ready = False
        for b in self._batchers.values():
            b.stop()
        self._batchers.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        for model in self._owned:
            model.close()
        self._owned.clear()

    @property
    def is_ready(self) -> bool:
        return self.ready and all(b.alive for b in self._batchers.values())

    @property
    def model_name(self) -> str:
        return str(getattr(self.embedder, "name", "") or self.settings.model or "qwen3-vl-embedding")

    def queues(self) -> dict[str, tuple[int, int]]:
        return {n: (b.queue_depth, b.max_queue) for n, b in self._batchers.items()}

    def meta(self) -> dict:
        return {"model": {"name": self.model_name, "dim": self.embedder.dim, "min_dim": MIN_DIM,
                          "type": "qwen3-vl-embedding"},
                "dim": self.embedder.dim,
                "reranker": ({"name": str(getattr(self.reranker, "name", ""))} if self.reranker is not None else None),
                "limits": {"max_items": self.settings.max_items, "max_body_bytes": self.settings.max_body_bytes,
                           "max_queue": self.settings.max_queue, "timeout": self.settings.timeout},
                "default_dim": self.settings.default_dim,
                "route_dims": dict(self.settings.route_dims),
                "allow_urls": self.settings.allow_urls, "allow_paths": self.settings.allow_paths}

    # ------------------------------------------------------------------ operations
    def _budget(self, model: Any) -> int:
        """Padded tokens per batch: the setting, else the model's own (its device's) default."""
        if self.settings.max_batch_tokens is not None:
            return int(self.settings.max_batch_tokens)
        return int(getattr(model, "max_batch_tokens", None) or 16384)

    def resolve_dim(self, dim: int | None, route: str) -> int:
        full = int(self.embedder.dim)
        if dim is None:
            dim = self.settings.dim_for(route) or full
            return min(int(dim), full)
        if not MIN_DIM <= dim <= full:
            raise InputError(f"dimension must be an integer from {MIN_DIM} to {full}, got {dim}")
        return int(dim)

    def _check_count(self, n: int, what: str) -> None:
        if n > self.settings.max_items:
            raise HTTPFailure(413, "too_many_items",
                              f"{n} {what} in one request; the limit is {self.settings.max_items}")

    async def _map(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> list[Any]:
        """Run ``fn(*args)`` for each call on the preprocessing pool; exceptions are returned, not raised."""
        loop = asyncio.get_running_loop()
        if self._pool is None:
            raise OverloadedError("the service is not running", retry_after=self.settings.retry_after)
        futures = [loop.run_in_executor(self._pool, fn, *args) for args in calls]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    async def embed(self, items: Sequence[Any], *, dim: int, instruction: str | None,
                    on_error: str = "raise") -> EmbedOutcome:
        """Prepare each item, batch them with other requests, return vectors at ``dim``."""
        self._check_count(len(items), "items")
        emb = self.embedder

        def prepare(item: Any, index: int) -> Any:
            return emb.prepare(item, instruction=instruction, index=index)

        results = await self._map(prepare, [(item, i) for i, item in enumerate(items)])
        good: list[tuple[int, Any]] = []
        errors: list[tuple[int, str]] = []
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                if isinstance(r, MissingDependencyError):
                    raise r
                if not isinstance(r, Exception):
                    raise r
                err = as_input_error(r, i)
                if on_error == "raise":
                    raise err
                errors.append((i, err.reason))
            else:
                good.append((i, r))
        if not good:
            return EmbedOutcome(np.zeros((0, dim), np.float32), [], errors, 0, 0)
        prepared = [p for _, p in good]
        try:
            full = await self._batchers["embed"].submit(prepared)
        except BatchError as exc:
            raise BatchError(str(exc), position=good[exc.position][0]) from exc
        tokens = sum(p.n_tokens for p in prepared)
        image_tokens = sum(p.input_ids.count(IMAGE_PAD_ID) for p in prepared)
        return EmbedOutcome(mrl(full, dim), [i for i, _ in good], errors, tokens, image_tokens)

    async def score(self, query: Any, documents: Sequence[Any], *, instruction: str | None,
                    on_error: str = "raise") -> ScoreOutcome:
        """Relevance of each document to the query, batched with other requests."""
        if self.reranker is None:
            raise HTTPFailure(501, "no_reranker", "no reranker is loaded; start the service with --reranker")
        self._check_count(len(documents), "documents")
        rr = self.reranker
        instr = instruction.strip() if instruction and instruction.strip() else DEFAULT_RERANK_INSTRUCTION
        (q,) = await self._map(rr.prepare_side, [(query,)])
        if isinstance(q, BaseException):
            if not isinstance(q, Exception) or isinstance(q, MissingDependencyError):
                raise q
            raise InputError(f"query: {as_input_error(q, 0).reason}") from q

        def prepare(doc: Any, index: int) -> Any:
            return rr.prepare_pair(q, rr.prepare_side(doc, index), instr)

        results = await self._map(prepare, [(d, i) for i, d in enumerate(documents)])
        good: list[tuple[int, Any]] = []
        errors: list[tuple[int, str]] = []
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                if not isinstance(r, Exception) or isinstance(r, MissingDependencyError):
                    raise r
                err = as_input_error(r, i)
                if on_error == "raise":
                    bad = InputError(f"document {i}: {err.reason}")
                    bad.index, bad.reason = i, err.reason
                    raise bad from r
                errors.append((i, err.reason))
            else:
                good.append((i, r))
        scores = np.full(len(documents), np.nan, dtype=np.float32)
        if good:
            try:
                got = await self._batchers["rerank"].submit([p for _, p in good])
            except BatchError as exc:
                raise BatchError(str(exc), position=good[exc.position][0]) from exc
            scores[[i for i, _ in good]] = np.asarray(got, dtype=np.float32).reshape(-1)
        return ScoreOutcome(scores, errors)


# ---------------------------------------------------------------------------- the app
def create_app(settings: ServiceSettings, embedder: Any = None, reranker: Any = None) -> Any:
    """Build the FastAPI application.

    Args:
        settings: limits, security flags and (when no models are given) checkpoints.
        embedder: an already loaded :class:`~embedder.Embedder` (or anything with its
            ``prepare`` / ``forward`` / ``dim``); loaded from ``settings.model`` when None.
        reranker: an already loaded :class:`~embedder.Reranker`, optional.

    Returns:
        A ``fastapi.FastAPI`` app; models and workers start with the app's lifespan.

    Raises:
        MissingDependencyError: FastAPI is not installed (extra ``server``).

    Example:
        >>> app = create_app(ServiceSettings(model="Qwen/Qwen3-VL-Embedding-2B", reranker="Qwen/Qwen3-VL-Reranker-2B"))  # doctest: +SKIP
        >>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8080)   # doctest: +SKIP
    """
    try:
        from contextlib import asynccontextmanager

        from fastapi import FastAPI, Request
        from fastapi.responses import PlainTextResponse, Response
    except ImportError as exc:
        raise MissingDependencyError("fastapi", "server", "The embedding service") from exc

    service = Service(settings, embedder, reranker)
    key = settings.api_key.encode() if settings.api_key else None

    @asynccontextmanager
    async def lifespan(app: Any):
        await asyncio.get_running_loop().run_in_executor(None, service.start)
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="qvl serve", description="Qwen3-VL embedding and reranking service",
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Any:
        return Response(content=_dumps(body), status_code=status, media_type="application/json", headers=headers)

    def check_auth(request: Any) -> None:
        if key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key):
            raise HTTPFailure(401, "unauthorized", "missing or invalid API key (send 'Authorization: Bearer <key>')",
                              headers={"WWW-Authenticate": "Bearer"})

    async def read_json(request: Any) -> Any:
        limit = settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise HTTPFailure(413, "body_too_large", f"request body of {declared} bytes exceeds the limit of {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPFailure(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            raise InputError("empty request body; send JSON")
        try:
            return _loads(data)
        except ValueError as exc:
            raise InputError(f"the request body is not valid JSON: {exc}") from exc

    async def handle(request: Any, route: str, protocol: str,
                     work: Callable[[Any, dict], Awaitable[tuple[Any, int]]]) -> Any:
        """Auth, body, timeout, errors and metrics around ``work(body, ctx) -> (response body, n items)``.

        ``work`` may set ``ctx["protocol"]`` once it has seen the body (routes shared by
        two protocols), so that errors take that protocol's shape.
        """
        start = time.perf_counter()
        request_id = str(uuid.uuid4())
        ctx = {"protocol": protocol}
        items = 0
        try:
            check_auth(request)
            if not service.ready:
                raise OverloadedError("the service is starting or stopping", retry_after=settings.retry_after)
            body = await read_json(request)
            payload, items = await asyncio.wait_for(work(body, ctx), settings.timeout)
            if isinstance(payload, dict) and ctx["protocol"] == "dashscope":
                payload["request_id"] = request_id
            response = json_response(payload)
        except Exception as exc:  # noqa: BLE001 - every failure gets the protocol's error shape
            fail = _as_failure(exc)
            response = json_response(P.error_body(ctx["protocol"], status=fail.status, code=fail.code,
                                                  message=fail.message, index=fail.index, reason=fail.reason,
                                                  request_id=request_id),
                                     fail.status, fail.headers)
        service.metrics.observe_request(route, response.status_code, time.perf_counter() - start, items)
        return response

    # ---------------------------------------------------------------- native (+ DashScope shape)
    async def dashscope_work(body: Any, ctx: dict) -> tuple[Any, int]:
        req = P.parse_dashscope(body)
        dim = service.resolve_dim(req.dim, "dashscope")
        out = await service.embed(req.items, dim=dim, instruction=req.instruction)
        return P.dashscope_response(out.vectors, req.kinds, tokens=out.tokens, image_tokens=out.image_tokens,
                                    request_id=""), len(req.items)

    async def native_embed_work(body: Any, ctx: dict) -> tuple[Any, int]:
        req = P.parse_native_embed(body)
        dim = service.resolve_dim(req.dim, "native")
        out = await service.embed(req.items, dim=dim, instruction=req.instruction, on_error=req.on_error)
        return P.native_embed_response(out.vectors, out.indices, len(req.items), dim=dim, model=service.model_name,
                                       encoding=req.encoding, errors=out.errors), len(req.items)

    @app.post("/v1/embed")
    async def v1_embed(request: Request) -> Any:
        """Native embedding; a body with ``input.contents`` is answered in DashScope's shape."""
        async def work(body: Any, ctx: dict) -> tuple[Any, int]:
            if P.is_dashscope(body):
                ctx["protocol"] = "dashscope"
                return await dashscope_work(body, ctx)
            return await native_embed_work(body, ctx)

        return await handle(request, "/v1/embed", "native", work)

    @app.post("/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding")
    async def dashscope(request: Request) -> Any:
        """Alibaba Cloud DashScope's multimodal-embedding path and shape."""
        return await handle(request, "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding",
                            "dashscope", dashscope_work)

    @app.post("/v1/rerank")
    async def v1_rerank(request: Request) -> Any:
        """Native reranking: ``{"query", "documents", "top_k"}`` -> results best first."""
        async def work(body: Any, ctx: dict) -> tuple[Any, int]:
            req = P.parse_native_rerank(body)
            out = await service.score(req.query, req.documents, instruction=req.instruction, on_error=req.on_error)
            return P.native_rerank_response(out.scores, top_k=req.top_k, model=str(service.reranker.name),
                                            errors=out.errors), len(req.documents)

        return await handle(request, "/v1/rerank", "native", work)

    # ---------------------------------------------------------------- OpenAI
    @app.post("/v1/embeddings")
    async def openai_embeddings(request: Request) -> Any:
        """OpenAI-compatible embeddings (``dimensions``, ``encoding_format`` float|base64)."""
        async def work(body: Any, ctx: dict) -> tuple[Any, int]:
            req = P.parse_openai(body)
            dim = service.resolve_dim(req.dim, "openai")
            out = await service.embed(req.items, dim=dim, instruction=req.instruction)
            return P.openai_response(out.vectors, model=str(body.get("model") or service.model_name),
                                     encoding=req.encoding, tokens=out.tokens), len(req.items)

        return await handle(request, "/v1/embeddings", "openai", work)

    # ---------------------------------------------------------------- TEI
    @app.post("/embed")
    async def tei_embed(request: Request) -> Any:
        """Hugging Face TEI ``/embed``: ``{"inputs"}`` -> ``[[...], ...]``."""
        async def work(body: Any, ctx: dict) -> tuple[Any, int]:
            req = P.parse_tei_embed(body)
            dim = service.resolve_dim(req.dim, "tei")
            out = await service.embed(req.items, dim=dim, instruction=req.instruction)
            return out.vectors, len(req.items)

        return await handle(request, "/embed", "tei", work)

    @app.post("/rerank")
    async def rerank(request: Request) -> Any:
        """TEI rerank (body has ``texts``) or Weaviate reranker-transformers (body has ``documents``)."""
        async def work(body: Any, ctx: dict) -> tuple[Any, int]:
            if isinstance(body, dict) and "documents" in body and "texts" not in body:
                ctx["protocol"] = "weaviate"
                req = P.parse_weaviate_rerank(body)
                if not req.documents:
                    return {"query": req.query, "scores": []}, 0
                out = await service.score(req.query, req.documents, instruction=None)
                return P.weaviate_rerank_response(out.scores, req), len(req.documents)
            req = P.parse_tei_rerank(body)
            out = await service.score(req.query, req.documents, instruction=req.instruction)
            return P.tei_rerank_response(out.scores, req), len(req.documents)

        return await handle(request, "/rerank", "tei", work)

    # ---------------------------------------------------------------- Weaviate modules
    @app.post("/vectorize")
    async def clip_vectorize(request: Request) -> Any:
        """Weaviate multi2vec-clip: ``{"texts", "images"}`` -> ``{"textVectors", "imageVectors"}``."""
        async def work(body: Any, ctx: dict) -> tuple[Any, int]:
            req = P.parse_clip(body)
            dim = service.resolve_dim(None, "clip")
            items = list(req.texts) + [{"image": img} for img in req.images]
            if not items:
                return {"textVectors": [], "imageVectors": []}, 0
            out = await service.embed(items, dim=dim, instruction=None)
            n = len(req.texts)
            return {"textVectors": out.vectors[:n], "imageVectors": out.vectors[n:]}, len(items)

        return await handle(request, "/vectorize", "weaviate", work)

    @app.post("/vectors")
    @app.post("/vectors/")
    async def transformers_vectors(request: Request) -> Any:
        """Weaviate text2vec-transformers: ``{"text", "config": {"task_type", "dimensions"}}``."""
        async def work(body: Any, ctx: dict) -> tuple[Any, int]:
            req = P.parse_vectors(body)
            dim = service.resolve_dim(req.dim, "transformers")
            instruction = DEFAULT_QUERY_INSTRUCTION if req.task_type == "query" else None
            if not req.texts:
                return {"vectors": [], "dims": dim}, 0
            out = await service.embed(list(req.texts), dim=dim, instruction=instruction)
            if req.single:
                return {"text": req.texts[0], "vector": out.vectors[0], "dims": dim, "dim": dim}, 1
            return {"vectors": out.vectors, "dims": dim}, len(req.texts)

        return await handle(request, "/vectors", "weaviate", work)

    @app.get("/meta")
    async def meta() -> Any:
        """Model information (Weaviate modules read this at startup)."""
        if service.embedder is None:
            return json_response({"error": "the model is not loaded yet"}, 503)
        return json_response(service.meta())

    # ---------------------------------------------------------------- health and metrics
    def ready_response(empty: bool) -> Any:
        if service.is_ready:
            return Response(status_code=204) if empty else json_response({"status": "ready"})
        return json_response({"status": "not ready"}, 503, {"Retry-After": "1"})

    @app.get("/.well-known/live")
    async def live() -> Any:
        """Liveness for Weaviate modules: 204."""
        return Response(status_code=204)

    @app.get("/.well-known/ready")
    async def well_known_ready() -> Any:
        """Readiness for Weaviate modules: 204 when the model workers run, else 503."""
        return ready_response(True)

    @app.get("/health")
    async def health() -> Any:
        """Liveness: the process answers."""
        return json_response({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Any:
        """Readiness: models loaded and model workers running."""
        return ready_response(False)

    @app.get("/metrics")
    async def metrics(request: Request) -> Any:
        """Prometheus text format: requests, items, batch sizes, queue depth, latency."""
        try:
            check_auth(request)
        except HTTPFailure as fail:
            return json_response(P.error_body("native", status=401, code=fail.code, message=fail.message),
                                 401, fail.headers)
        return PlainTextResponse(service.metrics.render(service.queues()),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    return app

"""The FastAPI application: routes for every protocol over one batched model.

Pipeline per request: authenticate, admit it or refuse it at once
(:mod:`embedder.service.admission`: requests in flight, body bytes, preprocessing queue),
stream the body under a size cap and a deadline, parse it off the event loop with
:mod:`embedder.service.protocols` (limits checked before any medium is decoded),
preprocess each item on a thread pool (a bad item fails its own request, naming its
index, before anything is queued), queue the prepared items on the
:class:`~embedder.service.batcher.DynamicBatcher`, truncate the returned full-size
vectors to the requested MRL dimension and answer in the protocol's shape. A client
that hangs up has its queued work cancelled. Errors map to HTTP statuses:

=====  =========================================================
400    bad request or bad item (the body names the item index)
401    missing or wrong bearer key (when ``--api-key`` is set)
408    the body did not arrive within ``body_timeout``
413    body larger than ``max_body_bytes``, more than ``max_items`` items, a text
       longer than ``max_text_chars``, a frame list longer than ``max_frames``
501    no reranker loaded, or an optional dependency is missing
503    too many requests in flight, body bytes or a queue full, or shutting down
       (at once, with ``Retry-After``)
504    the request took longer than ``timeout``
=====  =========================================================

Request bodies and keys are never logged.
"""
# No "from __future__ import annotations" here: FastAPI resolves the route handlers'
# annotations (``request: Request``, imported inside create_app) at definition time.

import asyncio
import hmac
import json
import logging
import math
import time
import uuid
from typing import Any, Awaitable, Callable

import numpy as np

from ..embedder import DEFAULT_QUERY_INSTRUCTION
from ..errors import InputError, MissingDependencyError, OverloadedError
from . import ServiceSettings
from . import protocols as P
from .admission import BodyError, ClientDisconnected, cancel_on_disconnect, read_body
from .batcher import BatchError
from .core import EmbedOutcome, HTTPFailure, ScoreOutcome, Service, load_option_values, request_deadline

__all__ = ["create_app", "Service", "EmbedOutcome", "ScoreOutcome", "HTTPFailure", "load_option_values"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- errors
def _as_failure(exc: BaseException) -> HTTPFailure:
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
    limits = service.limits

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

    def decode_json(data: Any) -> Any:
        if not data:
            raise InputError("empty request body; send JSON")
        try:
            return _loads(data)
        except ValueError as exc:
            raise InputError(f"the request body is not valid JSON: {exc}") from exc

    async def handle(request: Any, route: str, protocol: str, parse: Callable[[Any, dict], Any],
                     run: Callable[[Any, dict], Awaitable[tuple[Any, int]]]) -> Any:
        """Auth, admission, body, parsing, timeout, disconnects, errors and metrics around one request.

        ``parse(body, ctx)`` turns the decoded JSON into a request object; it runs on the
        parse pool, off the event loop, and may set ``ctx["protocol"]`` (routes shared by
        two protocols) so that errors take that protocol's shape. ``run(request, ctx)``
        returns ``(response body, items)``.
        """
        start = time.perf_counter()
        request_id = str(uuid.uuid4())
        ctx: dict[str, Any] = {"protocol": protocol}
        items = 0
        try:
            check_auth(request)
            if not service.ready:
                raise OverloadedError("the service is starting or stopping", retry_after=settings.retry_after)
            async with service.admission.request() as slot:
                held = [await read_body(request, slot, limit=settings.max_body_bytes, timeout=settings.body_timeout)]

                def parse_body() -> Any:
                    data, held[0] = held[0], None  # the raw body is freed as soon as it is decoded
                    return parse(decode_json(data), ctx)

                async def work() -> tuple[Any, int]:
                    request_deadline.set(time.monotonic() + settings.timeout)
                    req = await service.parse(parse_body)
                    return await run(req, ctx)

                payload, items = await cancel_on_disconnect(request, asyncio.wait_for(work(), settings.timeout),
                                                            service.metrics.observe_disconnect)
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

    # ---------------------------------------------------------------- shared operations
    async def embed_items(req: P.EmbedRequest, route: str, *, on_error: str = "raise") -> tuple[Any, int]:
        dim = service.resolve_dim(req.dim, route)
        return await service.embed(req.items, dim=dim, instruction=req.instruction, on_error=on_error), dim

    async def tei_embed_run(req: P.EmbedRequest, ctx: dict) -> tuple[Any, int]:
        out, _ = await embed_items(req, "tei")
        return P.encode_vectors(out.vectors, req.encoding), len(req.items)

    async def tei_rerank_run(req: P.RerankRequest, ctx: dict) -> tuple[Any, int]:
        out = await service.score(req.query, req.documents, instruction=req.instruction)
        return P.tei_rerank_response(out.scores, req), len(req.documents)

    async def similarity_run(req: P.RerankRequest, ctx: dict) -> tuple[Any, int]:
        """Hugging Face sentence similarity: reranker scores when one is loaded, else cosine of embeddings."""
        if service.reranker is not None:
            out = await service.score(req.query, req.documents, instruction=None)
            return [float(s) for s in out.scores], len(req.documents)
        dim = service.resolve_dim(None, "tei")
        emb = await service.embed([req.query, *req.documents], dim=dim, instruction=None)
        return [float(v) for v in emb.vectors[1:] @ emb.vectors[0]], len(req.documents) + 1

    # ---------------------------------------------------------------- native (+ DashScope shape)
    async def dashscope_run(req: P.EmbedRequest, ctx: dict) -> tuple[Any, int]:
        out, _ = await embed_items(req, "dashscope")
        return P.dashscope_response(out.vectors, req.kinds, tokens=out.tokens, image_tokens=out.image_tokens,
                                    request_id=""), len(req.items)

    def parse_v1_embed(body: Any, ctx: dict) -> Any:
        if P.is_dashscope(body):
            ctx["protocol"] = "dashscope"
            return P.parse_dashscope(body, limits)
        return P.parse_native_embed(body, limits)

    async def run_v1_embed(req: P.EmbedRequest, ctx: dict) -> tuple[Any, int]:
        if ctx["protocol"] == "dashscope":
            return await dashscope_run(req, ctx)
        out, dim = await embed_items(req, "native", on_error=req.on_error)
        return P.native_embed_response(out.vectors, out.indices, len(req.items), dim=dim, model=service.model_name,
                                       encoding=req.encoding, errors=out.errors), len(req.items)

    @app.post("/v1/embed")
    async def v1_embed(request: Request) -> Any:
        """Native embedding; a body with ``input.contents`` is answered in DashScope's shape."""
        return await handle(request, "/v1/embed", "native", parse_v1_embed, run_v1_embed)

    @app.post("/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding")
    async def dashscope(request: Request) -> Any:
        """Alibaba Cloud DashScope's multimodal-embedding path and shape."""
        return await handle(request, "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding",
                            "dashscope", lambda body, ctx: P.parse_dashscope(body, limits), dashscope_run)

    @app.post("/v1/rerank")
    async def v1_rerank(request: Request) -> Any:
        """Native reranking: ``{"query", "documents", "top_k"}`` -> results best first."""
        async def run(req: P.RerankRequest, ctx: dict) -> tuple[Any, int]:
            out = await service.score(req.query, req.documents, instruction=req.instruction, on_error=req.on_error)
            return P.native_rerank_response(out.scores, top_k=req.top_k, model=str(service.reranker.name),
                                            errors=out.errors), len(req.documents)

        return await handle(request, "/v1/rerank", "native", lambda body, ctx: P.parse_native_rerank(body, limits),
                            run)

    # ---------------------------------------------------------------- OpenAI
    @app.post("/v1/embeddings")
    async def openai_embeddings(request: Request) -> Any:
        """OpenAI-compatible embeddings (``dimensions``, ``encoding_format`` float|base64)."""
        def parse(body: Any, ctx: dict) -> Any:
            ctx["model"] = body.get("model") if isinstance(body, dict) else None
            return P.parse_openai(body, limits)

        async def run(req: P.EmbedRequest, ctx: dict) -> tuple[Any, int]:
            out, _ = await embed_items(req, "openai")
            return P.openai_response(out.vectors, model=str(ctx.get("model") or service.model_name),
                                     encoding=req.encoding, tokens=out.tokens), len(req.items)

        return await handle(request, "/v1/embeddings", "openai", parse, run)

    # ---------------------------------------------------------------- TEI
    @app.post("/embed")
    async def tei_embed(request: Request) -> Any:
        """Hugging Face TEI ``/embed``: ``{"inputs"}`` -> ``[[...], ...]``."""
        return await handle(request, "/embed", "tei", lambda body, ctx: P.parse_tei_embed(body, limits),
                            tei_embed_run)

    def parse_rerank(body: Any, ctx: dict) -> Any:
        if isinstance(body, dict) and "documents" in body and "texts" not in body:
            ctx["protocol"] = "weaviate"
            return P.parse_weaviate_rerank(body, limits)
        return P.parse_tei_rerank(body, limits)

    async def run_rerank(req: P.RerankRequest, ctx: dict) -> tuple[Any, int]:
        if ctx["protocol"] == "weaviate":
            if not req.documents:
                return {"query": req.query, "scores": []}, 0
            out = await service.score(req.query, req.documents, instruction=None)
            return P.weaviate_rerank_response(out.scores, req), len(req.documents)
        return await tei_rerank_run(req, ctx)

    @app.post("/rerank")
    async def rerank(request: Request) -> Any:
        """TEI rerank (body has ``texts``) or Weaviate reranker-transformers (body has ``documents``)."""
        return await handle(request, "/rerank", "tei", parse_rerank, run_rerank)

    def parse_predict(body: Any, ctx: dict) -> Any:
        if P.is_similarity(body):
            ctx["kind"] = "similarity"
            return P.parse_similarity(body, limits)
        if isinstance(body, dict) and "query" in body and "texts" in body:
            ctx["kind"] = "rerank"
            return P.parse_tei_rerank(body, limits)
        ctx["kind"] = "embed"
        return P.parse_tei_embed(body, limits)

    async def run_predict(req: Any, ctx: dict) -> tuple[Any, int]:
        run = {"similarity": similarity_run, "rerank": tei_rerank_run, "embed": tei_embed_run}[ctx["kind"]]
        return await run(req, ctx)

    @app.post("/")
    @app.post("/invocations")
    async def tei_predict(request: Request) -> Any:
        """TEI's predict route (and SageMaker's ``/invocations``), where Hugging Face's InferenceClient posts.

        ``{"inputs": str | [str]}`` embeds (``feature_extraction``), ``{"query", "texts"}``
        reranks as TEI's ``/rerank``, and ``{"inputs": {"source_sentence", "sentences"}}``
        (``sentence_similarity``) scores each sentence against the source: with the
        reranker when one is loaded, else by the cosine of their embeddings.
        """
        return await handle(request, request.url.path, "tei", parse_predict, run_predict)

    # ---------------------------------------------------------------- Weaviate modules
    @app.post("/vectorize")
    async def clip_vectorize(request: Request) -> Any:
        """Weaviate multi2vec-clip: ``{"texts", "images"}`` -> ``{"textVectors", "imageVectors"}``."""
        async def run(req: P.ClipRequest, ctx: dict) -> tuple[Any, int]:
            dim = service.resolve_dim(None, "clip")
            items = list(req.texts) + [{"image": img} for img in req.images]
            if not items:
                return {"textVectors": [], "imageVectors": []}, 0
            out = await service.embed(items, dim=dim, instruction=None)
            n = len(req.texts)
            return {"textVectors": out.vectors[:n], "imageVectors": out.vectors[n:]}, len(items)

        return await handle(request, "/vectorize", "weaviate", lambda body, ctx: P.parse_clip(body, limits), run)

    @app.post("/vectors")
    @app.post("/vectors/")
    async def transformers_vectors(request: Request) -> Any:
        """Weaviate text2vec-transformers: ``{"text", "config": {"task_type", "dimensions"}}``."""
        async def run(req: P.VectorsRequest, ctx: dict) -> tuple[Any, int]:
            dim = service.resolve_dim(req.dim, "transformers")
            instruction = DEFAULT_QUERY_INSTRUCTION if req.task_type == "query" else None
            if not req.texts:
                return {"vectors": [], "dims": dim}, 0
            out = await service.embed(list(req.texts), dim=dim, instruction=instruction)
            if req.single:
                return {"text": req.texts[0], "vector": out.vectors[0], "dims": dim, "dim": dim}, 1
            return {"vectors": out.vectors, "dims": dim}, len(req.texts)

        return await handle(request, "/vectors", "weaviate", lambda body, ctx: P.parse_vectors(body, limits), run)

    def auth_failure(request: Any) -> Any:
        """None when the request may proceed, else the 401 response."""
        try:
            check_auth(request)
        except HTTPFailure as fail:
            return json_response(P.error_body("native", status=401, code=fail.code, message=fail.message),
                                 401, fail.headers)
        return None

    @app.get("/meta")
    async def meta(request: Request) -> Any:
        """Model information and limits (Weaviate modules read this at startup); needs the key when one is set."""
        denied = auth_failure(request)
        if denied is not None:
            return denied
        if service.embedder is None:
            return json_response({"error": "the model is not loaded yet"}, 503)
        return json_response(service.meta())

    # ---------------------------------------------------------------- health and metrics (no key: probes)
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
    @app.get("/")
    async def health() -> Any:
        """Liveness: the process answers (``GET /`` is TEI's health route)."""
        return json_response({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Any:
        """Readiness: models loaded and model workers running."""
        return ready_response(False)

    @app.get("/metrics")
    async def metrics(request: Request) -> Any:
        """Prometheus text format: requests, items, batch sizes, queues, admission, dropped work, latency."""
        denied = auth_failure(request)
        if denied is not None:
            return denied
        return PlainTextResponse(service.metrics.render(service.queues(), service.gauges()),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    return app

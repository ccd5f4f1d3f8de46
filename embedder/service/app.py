"""The FastAPI application: every protocol's router over one batched model.

Pipeline per request (:func:`embedder.service.routes.common.handle`): authenticate (a
FastAPI dependency), admit it or refuse it at once (:mod:`embedder.service.admission`:
requests in flight, body bytes, preprocessing queue), stream the body under a size cap
and a deadline, decode it and check it against the protocol's pydantic model off the
event loop (limits checked before any medium is decoded), preprocess each item on a
thread pool (a bad item fails its own request, naming its index, before anything is
queued), queue the prepared items on the :class:`~embedder.service.batcher.DynamicBatcher`,
truncate the returned full-size vectors to the requested MRL dimension and answer in the
protocol's shape. A client that hangs up has its queued work cancelled. Errors map to
HTTP statuses, in each protocol's own error shape:

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

The routes are in :mod:`embedder.service.routes` (one module per protocol family), the
protocol-independent work in :class:`~embedder.service.core.Service`, the metrics in
:mod:`embedder.service.metrics`. Request bodies and keys are never logged.
"""
from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from ..errors import MissingDependencyError
from . import ServiceSettings
from .core import EmbedOutcome, HTTPFailure, ScoreOutcome, Service, load_option_values

__all__ = ["create_app", "Service", "EmbedOutcome", "ScoreOutcome", "HTTPFailure", "load_option_values"]


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
        from fastapi import FastAPI

        from .routes import include_routes
    except ImportError as exc:
        raise MissingDependencyError("fastapi", "server", "The embedding service") from exc

    service = Service(settings, embedder, reranker)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(None, service.start)
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(title="qvl serve", description="Qwen3-VL embedding and reranking service",
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.state.api_key = settings.api_key.encode() if settings.api_key else None
    include_routes(app)
    return app

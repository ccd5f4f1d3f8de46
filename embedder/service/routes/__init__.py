"""The service's HTTP routes: one :class:`fastapi.APIRouter` per protocol family.

==============================  ==============================================================
module                          routes
==============================  ==============================================================
:mod:`.native`                  ``POST /v1/embed`` (also DashScope's shape), ``POST /v1/rerank``
:mod:`.dashscope`               ``POST /api/v1/services/embeddings/multimodal-embedding/multimodal-embedding``
:mod:`.openai`                  ``POST /v1/embeddings``
:mod:`.tei`                     ``POST /embed``, ``POST /rerank`` (also Weaviate's reranker),
                                ``POST /`` and ``POST /invocations``
:mod:`.weaviate`                ``POST /vectorize``, ``POST /vectors``
:mod:`.ops`                     ``GET /health``, ``/``, ``/ready``, ``/.well-known/live``,
                                ``/.well-known/ready``, ``/meta``, ``/metrics``
==============================  ==============================================================

Each protocol module holds its pydantic request models, its routes and its response
shapes; :mod:`.common` holds what they share (the API key dependency, the request
pipeline with admission control, and the protocol-shaped error handlers).
"""
from __future__ import annotations

from fastapi import FastAPI

from . import dashscope, native, openai, ops, tei, weaviate
from .common import install_error_handlers

ROUTERS = (native.router, dashscope.router, openai.router, tei.router, weaviate.router, ops.router)

__all__ = ["ROUTERS", "include_routes"]


def include_routes(app: FastAPI) -> None:
    """Add every protocol's router and the protocol-shaped error handlers to ``app``."""
    for router in ROUTERS:
        app.include_router(router)
    install_error_handlers(app)

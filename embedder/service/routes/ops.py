"""Probes, model information and metrics.

The probes never need the API key (orchestrators and Weaviate call them): ``GET /health``
and ``GET /`` (TEI's health route) answer while the process runs, ``GET /ready`` and
``GET /.well-known/ready`` once the model workers run (503 with ``Retry-After`` before),
``GET /.well-known/live`` always (204). ``GET /meta`` (model, limits, flags and, when the
embedder has one, its fingerprint) and ``GET /metrics`` (Prometheus text) need the key
when one is set: they show the model path and the operator's flags. Their 401 is in the
native error shape.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from ..metrics import CONTENT_TYPE
from .common import json_response, require_key, service_of

router = APIRouter(tags=["native"])


def _ready(request: Request, empty: bool) -> Response:
    if service_of(request).is_ready:
        return Response(status_code=204) if empty else json_response({"status": "ready"})
    return json_response({"status": "not ready"}, 503, {"Retry-After": "1"})


@router.get("/health")
@router.get("/")
async def health() -> Response:
    """Liveness: the process answers (``GET /`` is TEI's health route)."""
    return json_response({"status": "ok"})


@router.get("/ready")
async def ready(request: Request) -> Response:
    """Readiness: models loaded and model workers running."""
    return _ready(request, False)


@router.get("/.well-known/live")
async def live() -> Response:
    """Liveness for Weaviate modules: 204."""
    return Response(status_code=204)


@router.get("/.well-known/ready")
async def well_known_ready(request: Request) -> Response:
    """Readiness for Weaviate modules: 204 when the model workers run, else 503."""
    return _ready(request, True)


@router.get("/meta", dependencies=[Depends(require_key)])
def meta(request: Request) -> Response:
    """Model information and limits (Weaviate modules read this at startup).

    A plain function: FastAPI runs it on its thread pool, since the embedder's
    fingerprint (computed once) may read the weight files.
    """
    service = service_of(request)
    if service.embedder is None:
        return json_response({"error": "the model is not loaded yet"}, 503)
    return json_response(service.meta())


@router.get("/metrics", dependencies=[Depends(require_key)])
async def metrics(request: Request) -> Response:
    """Prometheus text format: requests, items, batch sizes, queues, admission, dropped work, latency."""
    return Response(content=service_of(request).metrics.render(), media_type=CONTENT_TYPE)

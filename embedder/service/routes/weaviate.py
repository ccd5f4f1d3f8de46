"""Weaviate's module protocols, so that Weaviate can use the service as its vectorizer or reranker.

* multi2vec-clip ``POST /vectorize``: ``{"texts", "images"}`` -> ``{"textVectors", "imageVectors"}``
  (images as raw base64, as ``modules/multi2vec-clip/clients/vectorizer.go`` sends them);
* text2vec-transformers ``POST /vectors``: ``{"text", "config": {"task_type", "dimensions"}}``
  (or the batch ``{"texts", ...}``);
* reranker-transformers ``POST /rerank`` with ``documents``: served by the TEI router's
  ``/rerank`` (one path, two protocols), with :func:`parse_rerank` and :func:`run_rerank`.

``GET /meta`` and ``/.well-known/*`` are in :mod:`embedder.service.routes.ops`. Errors:
``{"error": "message"}`` (Weaviate's Go clients read a string).
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Optional

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import AfterValidator, model_validator

from .. import protocols as P
from .common import Call, handle, require_key, start_clock

router = APIRouter(tags=["weaviate"], dependencies=[Depends(start_clock), Depends(require_key)])


# ---------------------------------------------------------------------------- request bodies
class ClipBody(P.Body):
    """multi2vec-clip ``{"texts": [str] | null, "images": [base64] | null}``."""

    texts: Optional[list[P.Text]] = None
    images: Optional[list[Any]] = None

    @model_validator(mode="after")
    def _count(self, info: Any) -> "ClipBody":
        P.check_count(len(self.texts or ()) + len(self.images or ()), "texts and images", P.limits_of(info))
        return self

    def request(self) -> P.ClipRequest:
        texts = tuple(self.texts or ())
        decoded = []
        for i, img in enumerate(self.images or ()):
            try:
                decoded.append(P.decode_media(img, "image"))
            except P.InputError as exc:
                raise exc.at(len(texts) + i) from exc
        return P.ClipRequest(texts=texts, images=tuple(decoded))


def _task_type(value: Any) -> str:
    if value in (None, ""):
        return "passage"
    if value not in ("query", "passage"):
        raise P.InputError(f"config.task_type must be 'query' or 'passage', got {value!r}")
    return value


class VectorsConfig(P.Body):
    task_type: Annotated[Any, AfterValidator(_task_type)] = "passage"
    dimensions: P.Dim = None


class VectorsBody(P.Body):
    """text2vec-transformers ``{"text", "config"}`` or the batch ``{"texts", "config"}``."""

    config: Optional[VectorsConfig] = None
    texts: Optional[P.Texts] = None
    text: Optional[P.Text] = None

    def request(self) -> P.VectorsRequest:
        config = self.config or VectorsConfig()
        if self.texts is not None:
            return P.VectorsRequest(texts=tuple(self.texts), single=False, task_type=config.task_type,
                                    dim=config.dimensions)
        if self.text is None:
            raise P.InputError("'text' must be a string (or send 'texts', a list of strings)")
        return P.VectorsRequest(texts=(self.text,), single=True, task_type=config.task_type, dim=config.dimensions)


class RerankBody(P.Body):
    """reranker-transformers ``{"query": str, "documents": [str], "property": ""}``."""

    missing: ClassVar[dict[str, str]] = {"query": "'query' must be a string",
                                         "documents": "'documents' must be a list of strings"}

    query: P.Text
    documents: P.Texts


# ---------------------------------------------------------------------------- responses
def rerank_response(scores: np.ndarray, request: P.RerankRequest) -> dict:
    """``{"query", "scores": [{"document", "score"}]}`` in the documents' order."""
    return {"query": request.query,
            "scores": [{"document": d, "score": float(s)} for d, s in zip(request.documents, scores)]}


# ---------------------------------------------------------------------------- routes
def parse_rerank(body: Any, call: Call) -> P.RerankRequest:
    model = P.validate(RerankBody, body, call.limits)
    return P.RerankRequest(query=model.query, documents=tuple(model.documents))


async def run_rerank(req: P.RerankRequest, call: Call) -> tuple[Any, int]:
    if not req.documents:
        return {"query": req.query, "scores": []}, 0
    out = await call.service.score(req.query, req.documents, instruction=None)
    return rerank_response(out.scores, req), len(req.documents)


async def _run_vectorize(req: P.ClipRequest, call: Call) -> tuple[Any, int]:
    service = call.service
    dim = service.resolve_dim(None, "clip")
    items = list(req.texts) + [{"image": img} for img in req.images]
    if not items:
        return {"textVectors": [], "imageVectors": []}, 0
    out = await service.embed(items, dim=dim, instruction=None)
    n = len(req.texts)
    return {"textVectors": out.vectors[:n], "imageVectors": out.vectors[n:]}, len(items)


@router.post("/vectorize")
async def vectorize(request: Request) -> Response:
    """multi2vec-clip: texts and images vectorised separately, at the ``clip`` route's dimension."""
    return await handle(request, "weaviate", lambda body, call: P.validate(ClipBody, body, call.limits).request(),
                        _run_vectorize)


async def _run_vectors(req: P.VectorsRequest, call: Call) -> tuple[Any, int]:
    service = call.service
    dim = service.resolve_dim(req.dim, "transformers")
    instruction = service.query_instruction if req.task_type == "query" else None
    if not req.texts:
        return {"vectors": [], "dims": dim}, 0
    out = await service.embed(list(req.texts), dim=dim, instruction=instruction)
    if req.single:
        return {"text": req.texts[0], "vector": out.vectors[0], "dims": dim, "dim": dim}, 1
    return {"vectors": out.vectors, "dims": dim}, len(req.texts)


@router.post("/vectors")
@router.post("/vectors/")
async def vectors(request: Request) -> Response:
    """text2vec-transformers: ``task_type`` query embeds with the query instruction, passage without."""
    return await handle(request, "weaviate", lambda body, call: P.validate(VectorsBody, body, call.limits).request(),
                        _run_vectors)

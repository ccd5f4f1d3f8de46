"""The native protocol: ``POST /v1/embed`` and ``POST /v1/rerank`` (what RemoteEmbedder / RemoteReranker call).

``/v1/embed`` also answers DashScope's body shape (``input.contents``) in DashScope's
shape, so that DashScope clients pointed at ``/v1`` work. Errors:
``{"error": {"code", "message", "index", "reason"}}``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import AliasChoices, Field

from .. import protocols as P
from . import dashscope
from .common import Call, embed_items, handle, require_key, start_clock

router = APIRouter(tags=["native"], dependencies=[Depends(start_clock), Depends(require_key)])


# ---------------------------------------------------------------------------- request bodies
class EmbedBody(P.Body):
    """``{"inputs": [item, ...], "dimension": N, "instruction": "...", "encoding_format", "on_error"}``."""

    missing: ClassVar[dict[str, str]] = {
        "inputs": "missing 'inputs' (a list of items: strings or objects with text/image/video)"}

    instruction: P.Instruction = None
    inputs: P.Items
    dimension: P.Dim = Field(None, validation_alias=AliasChoices("dimension", "dimensions"))
    encoding_format: P.Encoding = "float"
    on_error: P.OnError = "raise"

    def request(self, limits: P.Limits) -> P.EmbedRequest:
        return P.EmbedRequest(items=P.decode_items(self.inputs, limits), dim=self.dimension,
                              instruction=self.instruction, encoding=self.encoding_format, on_error=self.on_error)


class RerankBody(P.Body):
    """``{"query": item, "documents": [item, ...], "top_k": n, "instruction", "on_error"}``."""

    missing: ClassVar[dict[str, str]] = dict.fromkeys(
        ("query", "documents"), "a rerank request needs 'query' (an item) and 'documents' (a list of items)")

    query: Any
    documents: P.ItemList
    instruction: P.Instruction = None
    top_k: P.TopK = Field(None, validation_alias=AliasChoices("top_k", "top_n"))
    on_error: P.OnError = "raise"

    def request(self, limits: P.Limits) -> P.RerankRequest:
        try:
            query = P.decode_item(self.query, 0, limits)
        except P.TooLarge as exc:
            raise P.TooLarge(f"query: {exc.reason}", code=exc.code) from exc
        except P.InputError as exc:
            raise P.InputError(f"query: {exc.reason}") from exc
        return P.RerankRequest(query=query, documents=P.decode_items(self.documents, limits), top_k=self.top_k,
                               instruction=self.instruction, on_error=self.on_error)


# ---------------------------------------------------------------------------- responses
def embed_response(vectors: np.ndarray, indices: Sequence[int], n: int, *, dim: int, model: str,
                   encoding: str, errors: Sequence[tuple[int, str]] = ()) -> dict:
    """``{"embeddings": [...], "dimension": N, "model": name}``; failed items (on_error=skip) are null."""
    rows = P.encode_vectors(vectors, encoding)
    if len(indices) == n and not errors:
        embeddings: Any = rows
    else:
        embeddings = [None] * n
        for row, i in zip(rows, indices):
            embeddings[i] = row
    body: dict = {"embeddings": embeddings, "dimension": dim, "model": model}
    if errors:
        body["errors"] = [{"index": i, "message": m} for i, m in errors]
    return body


def rerank_response(scores: np.ndarray, *, top_k: int | None, model: str,
                    errors: Sequence[tuple[int, str]] = ()) -> dict:
    """``{"results": [{"index", "score"}], "model"}``, best first; failed documents listed in ``errors``."""
    body: dict = {"results": [{"index": i, "score": float(scores[i])} for i in P.ranked(scores, top_k)],
                  "model": model}
    if errors:
        body["errors"] = [{"index": i, "message": m} for i, m in errors]
    return body


# ---------------------------------------------------------------------------- routes
def _parse_embed(body: Any, call: Call) -> P.EmbedRequest:
    if dashscope.is_dashscope(body):
        call.protocol = "dashscope"
        return dashscope.parse(body, call)
    return P.validate(EmbedBody, body, call.limits).request(call.limits)


async def _run_embed(req: P.EmbedRequest, call: Call) -> tuple[Any, int]:
    if call.protocol == "dashscope":
        return await dashscope.run(req, call)
    out, dim = await embed_items(call, req, "native", on_error=req.on_error)
    return embed_response(out.vectors, out.indices, len(req.items), dim=dim, model=call.service.model_name,
                          encoding=req.encoding, errors=out.errors), len(req.items)


@router.post("/v1/embed")
async def embed(request: Request) -> Response:
    """Native embedding; a body with ``input.contents`` is answered in DashScope's shape."""
    return await handle(request, "native", _parse_embed, _run_embed)


def _parse_rerank(body: Any, call: Call) -> P.RerankRequest:
    return P.validate(RerankBody, body, call.limits).request(call.limits)


async def _run_rerank(req: P.RerankRequest, call: Call) -> tuple[Any, int]:
    service = call.service
    out = await service.score(req.query, req.documents, instruction=req.instruction, on_error=req.on_error)
    return rerank_response(out.scores, top_k=req.top_k, model=str(service.reranker.name),
                           errors=out.errors), len(req.documents)


@router.post("/v1/rerank")
async def rerank(request: Request) -> Response:
    """Native reranking: ``{"query", "documents", "top_k"}`` -> results best first."""
    return await handle(request, "native", _parse_rerank, _run_rerank)

"""Hugging Face Text Embeddings Inference (TEI): ``/embed``, ``/rerank`` and the predict route.

* ``POST /embed``: ``{"inputs": str | [str], "dimensions", "prompt_name"}`` -> ``[[...], ...]``;
* ``POST /rerank``: ``{"query", "texts", "raw_scores", "return_text"}`` -> ``[{"index", "score"}]``
  best first; a body with ``documents`` (and no ``texts``) is Weaviate's reranker-transformers
  and is answered in its shape (:mod:`embedder.service.routes.weaviate`);
* ``POST /`` and ``POST /invocations`` (SageMaker): TEI's predict route, where Hugging
  Face's ``InferenceClient(base_url=...)`` posts: ``{"inputs"}`` embeds
  (``feature_extraction``), ``{"query", "texts"}`` reranks and ``{"inputs":
  {"source_sentence", "sentences"}}`` (``sentence_similarity``) scores each sentence
  against the source: with the reranker when one is loaded, else by the cosine of their
  embeddings.

Errors: ``{"error", "error_type"}`` with TEI's types (``Validation``, ``Unauthorized``,
``Overloaded``, ``Backend``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any, ClassVar, Literal, Optional

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import AliasChoices, Field

from ...embedder import DEFAULT_QUERY_INSTRUCTION
from .. import protocols as P
from . import weaviate
from .common import Call, embed_items, handle, require_key, start_clock

router = APIRouter(tags=["tei"], dependencies=[Depends(start_clock), Depends(require_key)])

# Hugging Face's InferenceClient.feature_extraction sends ``prompt_name``; these are the
# names that map onto the embedder's instructions.
PROMPTS = {"query": "query", "document": None, "passage": None}


# ---------------------------------------------------------------------------- request bodies
class EmbedBody(P.Body):
    """``{"inputs": str | [str], "normalize", "truncate", "dimensions", "prompt_name", "instruction"}``.

    Vectors are always normalised; ``prompt_name`` ``query`` embeds with the query
    instruction (``document`` / ``passage``: the default one).
    """

    missing: ClassVar[dict[str, str]] = {"inputs": "missing 'inputs' (a string or a list of strings)"}

    inputs: P.Items
    instruction: P.Instruction = None
    prompt_name: Optional[Literal["query", "document", "passage"]] = None
    dimensions: P.Dim = None
    encoding_format: P.Encoding = "float"

    def request(self, limits: P.Limits) -> P.EmbedRequest:
        instruction = self.instruction
        if instruction is None and self.prompt_name is not None and PROMPTS[self.prompt_name] == "query":
            instruction = DEFAULT_QUERY_INSTRUCTION
        return P.EmbedRequest(items=P.decode_items(self.inputs, limits), dim=self.dimensions,
                              instruction=instruction, encoding=self.encoding_format)


class RerankBody(P.Body):
    """``{"query": str, "texts": [str], "top_k", "raw_scores", "return_text", "truncate", "instruction"}``."""

    missing: ClassVar[dict[str, str]] = {"query": "'query' must be a string",
                                         "texts": "'texts' must be a list of strings"}

    query: P.Text
    texts: Annotated[P.Texts, Field(min_length=1)]
    instruction: P.Instruction = None
    top_k: P.TopK = Field(None, validation_alias=AliasChoices("top_k", "top_n"))
    raw_scores: P.Flag = False
    return_text: P.Flag = False

    def request(self) -> P.RerankRequest:
        return P.RerankRequest(query=self.query, documents=tuple(self.texts), top_k=self.top_k,
                               instruction=self.instruction, raw_scores=self.raw_scores,
                               return_text=self.return_text)


class Sentences(P.Body):
    source_sentence: P.Text
    sentences: Annotated[P.Texts, Field(min_length=1)]


class SimilarityBody(P.Body):
    """``InferenceClient.sentence_similarity``: ``{"inputs": {"source_sentence": str, "sentences": [str]}}``."""

    inputs: Sentences

    def request(self) -> P.RerankRequest:
        return P.RerankRequest(query=self.inputs.source_sentence, documents=tuple(self.inputs.sentences))


def is_similarity(body: Any) -> bool:
    """True for Hugging Face's sentence-similarity shape ``{"inputs": {"source_sentence", "sentences"}}``."""
    return isinstance(body, dict) and isinstance(body.get("inputs"), dict) and "source_sentence" in body["inputs"]


# ---------------------------------------------------------------------------- responses
def rerank_response(scores: np.ndarray, request: P.RerankRequest) -> list:
    """``[{"index", "score", "text"?}]``, best first; ``raw_scores`` gives logits."""
    out = []
    for i in P.ranked(scores, request.top_k):
        s = float(scores[i])
        if request.raw_scores:
            s = min(max(s, 1e-12), 1 - 1e-12)
            s = math.log(s / (1 - s))
        entry: dict = {"index": i, "score": s}
        if request.return_text:
            entry["text"] = request.documents[i]
        out.append(entry)
    return out


# ---------------------------------------------------------------------------- routes
def _parse_embed(body: Any, call: Call) -> P.EmbedRequest:
    req = P.validate(EmbedBody, body, call.limits).request(call.limits)
    if req.instruction is DEFAULT_QUERY_INSTRUCTION:  # prompt_name "query": the served model's own default
        req = dataclasses.replace(req, instruction=call.service.query_instruction)
    return req


async def _run_embed(req: P.EmbedRequest, call: Call) -> tuple[Any, int]:
    out, _ = await embed_items(call, req, "tei")
    return P.encode_vectors(out.vectors, req.encoding), len(req.items)


def _parse_tei_rerank(body: Any, call: Call) -> P.RerankRequest:
    return P.validate(RerankBody, body, call.limits).request()


async def _run_tei_rerank(req: P.RerankRequest, call: Call) -> tuple[Any, int]:
    out = await call.service.score(req.query, req.documents, instruction=req.instruction)
    return rerank_response(out.scores, req), len(req.documents)


async def _run_similarity(req: P.RerankRequest, call: Call) -> tuple[Any, int]:
    """Reranker scores when one is loaded, else the cosine of the embeddings."""
    service = call.service
    if service.reranker is not None:
        out = await service.score(req.query, req.documents, instruction=None)
        return [float(s) for s in out.scores], len(req.documents)
    dim = service.resolve_dim(None, "tei")
    emb = await service.embed([req.query, *req.documents], dim=dim, instruction=None)
    return [float(v) for v in emb.vectors[1:] @ emb.vectors[0]], len(req.documents) + 1


@router.post("/embed")
async def embed(request: Request) -> Response:
    """TEI ``/embed``: ``{"inputs"}`` -> ``[[...], ...]``."""
    return await handle(request, "tei", _parse_embed, _run_embed)


def _parse_rerank(body: Any, call: Call) -> P.RerankRequest:
    if isinstance(body, dict) and "documents" in body and "texts" not in body:
        call.protocol = "weaviate"
        return weaviate.parse_rerank(body, call)
    return _parse_tei_rerank(body, call)


async def _run_rerank(req: P.RerankRequest, call: Call) -> tuple[Any, int]:
    if call.protocol == "weaviate":
        return await weaviate.run_rerank(req, call)
    return await _run_tei_rerank(req, call)


@router.post("/rerank")
async def rerank(request: Request) -> Response:
    """TEI rerank (body has ``texts``) or Weaviate reranker-transformers (body has ``documents``)."""
    return await handle(request, "tei", _parse_rerank, _run_rerank)


_PREDICT = {"similarity": _run_similarity, "rerank": _run_tei_rerank, "embed": _run_embed}


def _parse_predict(body: Any, call: Call) -> Any:
    if is_similarity(body):
        call.data["kind"] = "similarity"
        return P.validate(SimilarityBody, body, call.limits).request()
    if isinstance(body, dict) and "query" in body and "texts" in body:
        call.data["kind"] = "rerank"
        return _parse_tei_rerank(body, call)
    call.data["kind"] = "embed"
    return _parse_embed(body, call)


async def _run_predict(req: Any, call: Call) -> tuple[Any, int]:
    return await _PREDICT[call.data["kind"]](req, call)


@router.post("/")
@router.post("/invocations")
async def predict(request: Request) -> Response:
    """TEI's predict route (and SageMaker's ``/invocations``), where Hugging Face's InferenceClient posts."""
    return await handle(request, "tei", _parse_predict, _run_predict)

"""OpenAI's embeddings API: ``POST /v1/embeddings`` (what ``openai.OpenAI(base_url=".../v1")`` posts to).

``dimensions`` picks the MRL size and ``encoding_format`` ``float`` or ``base64``
(little-endian float32, the SDK's default). Errors: ``{"error": {"message", "type",
"param", "code"}}`` with OpenAI's types (``invalid_request_error``, ...).
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import AfterValidator, ValidationInfo

from .. import protocols as P
from .common import Call, embed_items, handle, require_key, start_clock

router = APIRouter(tags=["openai"], dependencies=[Depends(start_clock), Depends(require_key)])


def _texts_not_tokens(value: Any, info: ValidationInfo) -> list:
    if isinstance(value, list) and value and all(isinstance(t, int) for t in value):
        raise P.InputError("token-id input is not supported; send text")
    limits = P.limits_of(info)
    values = P.list_of_items(value, "input", limits)
    for i, v in enumerate(values):
        if isinstance(v, list):
            raise P.InputError("token-id input is not supported; send text", index=i)
    P.check_items(values, limits)
    return values


class EmbeddingsBody(P.Body):
    """``{"input": str | [str], "model", "dimensions", "encoding_format", "instruction"}``."""

    missing: ClassVar[dict[str, str]] = {"input": "missing 'input' (a string or a list of strings)"}

    input: Annotated[Any, AfterValidator(_texts_not_tokens)]
    model: Any = None
    instruction: P.Instruction = None
    dimensions: P.Dim = None
    encoding_format: P.Encoding = "float"

    def request(self, limits: P.Limits) -> P.EmbedRequest:
        return P.EmbedRequest(items=P.decode_items(self.input, limits), dim=self.dimensions,
                              instruction=self.instruction, encoding=self.encoding_format)


def embeddings_response(vectors: np.ndarray, *, model: str, encoding: str, tokens: int) -> dict:
    """``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}``."""
    rows = P.encode_vectors(vectors, encoding)
    return {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
            "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _parse(body: Any, call: Call) -> P.EmbedRequest:
    model = P.validate(EmbeddingsBody, body, call.limits)
    call.data["model"] = model.model
    return model.request(call.limits)


async def _run(req: P.EmbedRequest, call: Call) -> tuple[Any, int]:
    out, _ = await embed_items(call, req, "openai")
    return embeddings_response(out.vectors, model=str(call.data.get("model") or call.service.model_name),
                               encoding=req.encoding, tokens=out.tokens), len(req.items)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    """OpenAI-compatible embeddings (``dimensions``, ``encoding_format`` float|base64)."""
    return await handle(request, "openai", _parse, _run)

"""What every protocol shares: the parsed requests, the pydantic base of request bodies, errors.

Each protocol family has its own module under :mod:`embedder.service.routes` with its
pydantic request models, its routes and its response shapes:

==================  =============================================  ===========================================
protocol            request                                        response
==================  =============================================  ===========================================
native              ``{"inputs", "dimension", "instruction"}``     ``{"embeddings", "dimension", "model"}``
dashscope           ``{"input": {"contents"}, "parameters"}``      ``{"output": {"embeddings"}, "usage"}``
openai              ``{"input", "dimensions", "encoding_format"}``  ``{"object": "list", "data", "usage"}``
tei                 ``{"inputs"}`` / ``{"query", "texts"}``        ``[[...]]`` / ``[{"index", "score"}]``
weaviate clip       ``{"texts", "images"}``                        ``{"textVectors", "imageVectors"}``
weaviate t2v        ``{"text"|"texts", "config"}``                 ``{"text", "vector", "dims"}`` / ``{"vectors"}``
weaviate reranker   ``{"query", "documents"}``                     ``{"query", "scores": [{"document", "score"}]}``
==================  =============================================  ===========================================

Every body model derives from :class:`Body` and is checked by :func:`validate`, which
passes the service's :class:`~embedder.service.wire.Limits` to the validators: too many
items, a text longer than ``max_text_chars`` or a frame list longer than ``max_frames``
raise :class:`~embedder.service.wire.TooLarge` (HTTP 413) while the body is walked,
before any medium is decoded (media are decoded afterwards, when the model turns into
one of the protocol-neutral requests below: :class:`EmbedRequest`, :class:`RerankRequest`,
:class:`ClipRequest`, :class:`VectorsRequest`). Validation errors become
:class:`~embedder.errors.InputError` (with the item index when the error is inside a
list), which each protocol answers in its own error shape (:func:`error_body`), never
FastAPI's default 422 body.

Media on the wire: ``data:`` URIs, or plain base64 (what Weaviate sends for blob
properties; recognised for strings of at least 64 base64 characters, by a linear-time
check). URLs and server paths are passed on to the embedder, which refuses them unless
the operator enabled them.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Optional, TypeVar

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, \
    ValidationError, ValidationInfo

from ..errors import InputError
from .wire import (  # noqa: F401 - re-exported: the service and its tests use them from here
    DEFAULT_MAX_FRAMES, DEFAULT_MAX_ITEMS, DEFAULT_MAX_TEXT_CHARS, NO_LIMITS, Limits, TooLarge, UnknownParameter,
    check_count, check_items, check_text, decode_item, decode_items, decode_media, list_of_items,
)

PROTOCOLS = ("native", "dashscope", "openai", "tei", "weaviate")
ENCODINGS = ("float", "base64")
ON_ERROR = ("raise", "skip")

@dataclass(frozen=True)
class EmbedRequest:
    """A parsed embedding request, whatever protocol it came in.

    Attributes:
        items: embedder items (str or dict of text/image/video/instruction), media decoded.
        dim: requested MRL dimension, or None for the route's default.
        instruction: task instruction for items that carry none.
        encoding: ``float`` or ``base64`` (little-endian float32).
        on_error: ``raise`` (fail the request on the first bad item) or ``skip``.
        kinds: DashScope's type of each item (``text``, ``image``, ``video``,
            ``multi_images`` or ``vl``), for the DashScope response.
    """

    items: tuple[Any, ...]
    dim: int | None = None
    instruction: str | None = None
    encoding: str = "float"
    on_error: str = "raise"
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class RerankRequest:
    """A parsed rerank request.

    Attributes:
        query: the query item.
        documents: document items.
        top_k: most results returned (None: all).
        instruction: reranker instruction (None: the release's default).
        on_error: ``raise`` or ``skip`` (failed documents are left out and listed).
        raw_scores: TEI: return logits instead of probabilities.
        return_text: TEI: echo each document's text.
    """

    query: Any
    documents: tuple[Any, ...]
    top_k: int | None = None
    instruction: str | None = None
    on_error: str = "raise"
    raw_scores: bool = False
    return_text: bool = False


@dataclass(frozen=True)
class ClipRequest:
    """Weaviate multi2vec-clip ``/vectorize``: texts and images vectorised separately."""

    texts: tuple[str, ...]
    images: tuple[Any, ...]


@dataclass(frozen=True)
class VectorsRequest:
    """Weaviate text2vec-transformers ``/vectors``: one text (``single``) or a batch.

    Attributes:
        texts: the text(s).
        single: the request used ``text`` (answer ``{"text", "vector", "dims"}``), not ``texts``.
        task_type: ``query`` or ``passage`` (picks the instruction).
        dim: ``config.dimensions``, if given.
    """

    texts: tuple[str, ...]
    single: bool
    task_type: str = "passage"
    dim: int | None = None


# ---------------------------------------------------------------------------- request bodies
B = TypeVar("B", bound="Body")


class Body(BaseModel):
    """Base of every protocol's request body.

    Keys a model does not declare are ignored (clients send their own extras: ``model``,
    ``user``, ``truncate``, ...). ``missing`` maps a required field to the message sent
    when it is absent.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)
    missing: ClassVar[dict[str, str]] = {}


def limits_of(info: ValidationInfo) -> Limits:
    """The service's limits, passed to the validators by :func:`validate`."""
    return (info.context or {}).get("limits", NO_LIMITS)


def validate(model: type[B], body: Any, limits: Limits = NO_LIMITS) -> B:
    """Check a decoded JSON body against ``model`` and the service's ``limits``.

    Raises:
        TooLarge: a limit is passed (HTTP 413).
        InputError: anything else wrong with the body; the first error (in the model's
            field order) is reported, with the item index when it lies inside a list.
    """
    if not isinstance(body, dict):
        raise InputError(f"the request body must be a JSON object, got {type(body).__name__}")
    try:
        return model.model_validate(body, context={"limits": limits})
    except ValidationError as exc:
        raise input_error(exc, model) from None


def input_error(exc: ValidationError, model: type[Body] = Body) -> InputError:
    """The first error of a pydantic validation as an :class:`InputError` (our own errors pass through)."""
    first = exc.errors()[0]
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, InputError):
        return cause
    loc = [str(p) for p in first["loc"] if not isinstance(p, int)]
    where = ".".join(loc)
    if first["type"] == "missing" and where in model.missing:
        return InputError(model.missing[where])
    index = next((p for p in first["loc"] if isinstance(p, int)), None)
    got = repr(first.get("input"))
    got = got if len(got) <= 80 else got[:77] + "..."
    message = f"{where!r}: {first['msg']}" if where else first["msg"]
    if first["type"] != "missing":
        message += f", got {got}"
    return InputError(message, index=index)


def _within_text_limit(value: Optional[str], info: ValidationInfo) -> Optional[str]:
    if value is not None:
        check_text(value, repr(info.field_name), limits_of(info))
    return value


def _items_within_limits(value: Any, info: ValidationInfo) -> list:
    values = list_of_items(value, info.field_name or "inputs", limits_of(info))
    check_items(values, limits_of(info))
    return values


def _list_within_limits(value: Any, info: ValidationInfo) -> list:
    return list_of_items(value, info.field_name or "documents", limits_of(info), allow_single=False)


def _texts_within_limits(value: Optional[list], info: ValidationInfo) -> Optional[list]:
    if value is not None:
        limits = limits_of(info)
        check_count(len(value), info.field_name or "texts", limits)
        for i, text in enumerate(value):
            check_text(text, "the text", limits, i)
    return value


# Field types shared by the protocols' models.
Text = Annotated[StrictStr, AfterValidator(_within_text_limit)]
Instruction = Annotated[Optional[StrictStr], AfterValidator(_within_text_limit)]
Items = Annotated[Any, AfterValidator(_items_within_limits)]
"""One item or a non-empty list of items, counted and size-checked (decode with :func:`decode_items`)."""
ItemList = Annotated[Any, AfterValidator(_list_within_limits)]
"""A non-empty list of items, counted (check and decode with :func:`decode_items`)."""
Texts = Annotated[list[StrictStr], AfterValidator(_texts_within_limits)]
"""A list of strings (may be empty), counted and size-checked."""
Dim = Optional[Annotated[StrictInt, Field(ge=1)]]
TopK = Optional[Annotated[StrictInt, Field(ge=1)]]
Flag = Annotated[Optional[StrictBool], AfterValidator(bool)]
Encoding = Annotated[Optional[Literal["float", "base64"]], AfterValidator(lambda v: v or "float")]
OnError = Annotated[Optional[Literal["raise", "skip"]], AfterValidator(lambda v: v or "raise")]


# ---------------------------------------------------------------------------- responses
def encode_vectors(vectors: np.ndarray, encoding: str) -> Any:
    """Rows as float lists (an array, serialised by the JSON encoder) or base64 float32 strings."""
    if encoding == "base64":
        data = np.ascontiguousarray(vectors, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
    return vectors


def ranked(scores: np.ndarray, top_k: int | None) -> list[int]:
    """Indices of non-NaN scores, best first (stable), at most ``top_k``."""
    order = [int(i) for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
             if not math.isnan(float(scores[i]))]
    return order if top_k is None else order[:top_k]


def error_body(protocol: str, *, status: int, code: str, message: str, index: int | None = None,
               reason: str | None = None, request_id: str = "") -> Any:
    """The error shape each protocol's clients read.

    * native: ``{"error": {"code", "message", "index", "reason"}}`` (index and reason
      for a bad item: the reason is the message without its ``item N:`` prefix)
    * openai: ``{"error": {"message", "type", "param", "code"}}``
    * dashscope: ``{"code", "message", "request_id"}``
    * tei: ``{"error", "error_type"}``
    * weaviate: ``{"error": "message"}`` (its Go clients read a string)
    """
    if protocol == "openai":
        kind = "invalid_request_error" if status < 500 else ("server_error" if status != 503 else "overloaded")
        return {"error": {"message": message, "type": kind, "param": None, "code": code}}
    if protocol == "dashscope":
        ds_code = {401: "InvalidApiKey", 400: "InvalidParameter", 413: "InvalidParameter",
                   503: "Throttling", 504: "RequestTimeOut"}.get(status, "InternalError")
        return {"code": ds_code, "message": message, "request_id": request_id}
    if protocol == "tei":
        kind = {400: "Validation", 413: "Validation", 401: "Unauthorized", 503: "Overloaded"}.get(status, "Backend")
        return {"error": message, "error_type": kind}
    if protocol == "weaviate":
        return {"error": message}
    err: dict = {"code": code, "message": message}
    if index is not None:
        err["index"] = index
    if reason is not None:
        err["reason"] = reason
    return {"error": err}

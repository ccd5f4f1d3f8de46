"""Request and response shapes of every wire protocol the service speaks.

Each ``parse_*`` function turns a decoded JSON body into a frozen request object, or
raises :class:`~embedder.errors.InputError` naming the bad field or item index. Each
``*_response`` function turns results into the JSON-able shape that protocol's
clients expect, and :func:`error_body` gives each protocol's error shape:

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

Media on the wire: ``data:`` URIs, or plain base64 (what Weaviate sends for blob
properties; recognised for strings of at least 64 base64 characters). URLs and server
paths are passed on to the embedder, which refuses them unless the operator enabled them.
"""
from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InputError

PROTOCOLS = ("native", "dashscope", "openai", "tei", "weaviate")
ENCODINGS = ("float", "base64")
ON_ERROR = ("raise", "skip")
_B64_RE = re.compile(r"[A-Za-z0-9+/\s]+={0,2}\s*")
_MIN_RAW_B64 = 64
_ITEM_KEYS = ("text", "image", "video", "instruction", "fps", "max_frames")
_DASHSCOPE_KEYS = ("text", "image", "video", "multi_images")


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


# ---------------------------------------------------------------------------- helpers
def _need_dict(body: Any) -> dict:
    if not isinstance(body, dict):
        raise InputError(f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def _opt_int(value: Any, name: str, *, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name!r} must be an integer >= {minimum}, got {value!r}")
    return value


def _opt_str(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{name!r} must be a string, got {type(value).__name__}")
    return value


def _choice(value: Any, name: str, allowed: Sequence[str], default: str) -> str:
    if value is None:
        return default
    if value not in allowed:
        raise InputError(f"{name!r} must be one of {list(allowed)}, got {value!r}")
    return value


def _opt_bool(value: Any, name: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InputError(f"{name!r} must be true or false, got {value!r}")
    return value


def _list_of_items(value: Any, name: str, *, allow_single: bool = True) -> list:
    if isinstance(value, (str, dict)) and allow_single:
        return [value]
    if not isinstance(value, list):
        raise InputError(f"{name!r} must be a list of items, got {type(value).__name__}")
    if not value:
        raise InputError(f"{name!r} is empty")
    return value


def decode_media(value: Any, what: str) -> Any:
    """One image/video source from the wire: plain base64 becomes bytes; anything else stays.

    ``data:`` URIs, URLs and paths are left to the embedder (which refuses URLs and
    paths unless the operator enabled them).
    """
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string (data: URI or base64), got {type(value).__name__}")
    if len(value) >= _MIN_RAW_B64 and not value.startswith("data:") and _B64_RE.fullmatch(value[:4096]) \
            and _B64_RE.fullmatch(value):
        try:
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            return value
    return value


def _decode_sources(value: Any, what: str) -> Any:
    if isinstance(value, list):
        return [decode_media(v, f"{what}[{j}]") for j, v in enumerate(value)]
    return decode_media(value, what)


def decode_item(obj: Any, index: int) -> Any:
    """A native wire item (string or dict of text/image/video/instruction) -> an embedder item."""
    if isinstance(obj, str):
        return obj
    if not isinstance(obj, dict):
        raise InputError(f"an item must be a string or an object with {list(_ITEM_KEYS)}, "
                         f"got {type(obj).__name__}", index=index)
    unknown = set(obj) - set(_ITEM_KEYS)
    if unknown:
        raise InputError(f"unknown key(s) {sorted(unknown)}; an item takes {list(_ITEM_KEYS)}", index=index)
    item = dict(obj)
    try:
        if item.get("image") is not None:
            item["image"] = _decode_sources(item["image"], "image")
        if item.get("video") is not None:
            item["video"] = _decode_sources(item["video"], "video")
    except InputError as exc:
        raise exc.at(index) from exc
    return item


def _decode_items(values: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(decode_item(v, i) for i, v in enumerate(values))


# ---------------------------------------------------------------------------- requests
def is_dashscope(body: Any) -> bool:
    """True for DashScope's multimodal-embedding shape (``input.contents``)."""
    return isinstance(body, dict) and isinstance(body.get("input"), dict) and "contents" in body["input"]


def parse_native_embed(body: Any) -> EmbedRequest:
    """``{"inputs": [item, ...], "dimension": N, "instruction": "...", "encoding_format", "on_error"}``."""
    body = _need_dict(body)
    if "inputs" not in body:
        raise InputError("missing 'inputs' (a list of items: strings or objects with text/image/video)")
    return EmbedRequest(items=_decode_items(_list_of_items(body["inputs"], "inputs")),
                        dim=_opt_int(body.get("dimension", body.get("dimensions")), "dimension"),
                        instruction=_opt_str(body.get("instruction"), "instruction"),
                        encoding=_choice(body.get("encoding_format"), "encoding_format", ENCODINGS, "float"),
                        on_error=_choice(body.get("on_error"), "on_error", ON_ERROR, "raise"))


def parse_dashscope(body: Any) -> EmbedRequest:
    """DashScope multimodal-embedding: ``{"input": {"contents": [...]}, "parameters": {...}}``."""
    body = _need_dict(body)
    contents = body["input"].get("contents")
    contents = _list_of_items(contents, "input.contents")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise InputError(f"'parameters' must be an object, got {type(params).__name__}")
    output_type = params.get("output_type", "dense")
    if output_type != "dense":
        raise InputError(f"parameters.output_type {output_type!r} is not supported; only 'dense' is")
    fps = params.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 <= fps <= 1):
        raise InputError(f"parameters.fps must be a number in [0, 1], got {fps!r}")
    items, kinds = [], []
    for i, element in enumerate(contents):
        if isinstance(element, str):
            items.append(element)
            kinds.append("text")
            continue
        if not isinstance(element, dict):
            raise InputError(f"an element must be a string or an object with {list(_DASHSCOPE_KEYS)}, "
                             f"got {type(element).__name__}", index=i)
        unknown = set(element) - set(_DASHSCOPE_KEYS)
        if unknown:
            raise InputError(f"unknown key(s) {sorted(unknown)}; an element takes {list(_DASHSCOPE_KEYS)}",
                             index=i)
        present = [k for k in _DASHSCOPE_KEYS if element.get(k) is not None]
        item: dict[str, Any] = {}
        images: list[Any] = []
        if element.get("text") is not None:
            item["text"] = element["text"]
        if element.get("image") is not None:
            images.append(element["image"])
        if element.get("multi_images") is not None:
            if not isinstance(element["multi_images"], list):
                raise InputError("'multi_images' must be a list of images", index=i)
            images.extend(element["multi_images"])
        if images:
            item["image"] = images if len(images) > 1 else images[0]
        if element.get("video") is not None:
            item["video"] = element["video"]
            if fps:  # DashScope's sampling rate for video files, in (0, 1]
                item["fps"] = fps
        items.append(decode_item(item, i))
        kinds.append(present[0] if len(present) == 1 else ("vl" if present else "text"))
    return EmbedRequest(items=tuple(items), dim=_opt_int(params.get("dimension"), "parameters.dimension"),
                        instruction=_opt_str(params.get("instruct"), "parameters.instruct"),
                        kinds=tuple(kinds))


def parse_openai(body: Any) -> EmbedRequest:
    """OpenAI ``{"input": str | [str], "model", "dimensions", "encoding_format"}``."""
    body = _need_dict(body)
    if "input" not in body:
        raise InputError("missing 'input' (a string or a list of strings)")
    raw = body["input"]
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        raise InputError("token-id input is not supported; send text")
    values = _list_of_items(raw, "input")
    for i, v in enumerate(values):
        if isinstance(v, list):
            raise InputError("token-id input is not supported; send text", index=i)
    return EmbedRequest(items=_decode_items(values), dim=_opt_int(body.get("dimensions"), "dimensions"),
                        instruction=_opt_str(body.get("instruction"), "instruction"),
                        encoding=_choice(body.get("encoding_format"), "encoding_format", ENCODINGS, "float"))


def parse_tei_embed(body: Any) -> EmbedRequest:
    """TEI ``{"inputs": str | [str], "normalize", "truncate", "dimensions"}`` (vectors are always normalised)."""
    body = _need_dict(body)
    if "inputs" not in body:
        raise InputError("missing 'inputs' (a string or a list of strings)")
    return EmbedRequest(items=_decode_items(_list_of_items(body["inputs"], "inputs")),
                        dim=_opt_int(body.get("dimensions"), "dimensions"),
                        instruction=_opt_str(body.get("instruction"), "instruction"))


def parse_native_rerank(body: Any) -> RerankRequest:
    """``{"query": item, "documents": [item, ...], "top_k": n, "instruction", "on_error"}``."""
    body = _need_dict(body)
    if "query" not in body or "documents" not in body:
        raise InputError("a rerank request needs 'query' (an item) and 'documents' (a list of items)")
    try:
        query = decode_item(body["query"], 0)
    except InputError as exc:
        raise InputError(f"query: {exc.reason}") from exc
    return RerankRequest(query=query,
                         documents=_decode_items(_list_of_items(body["documents"], "documents",
                                                                allow_single=False)),
                         top_k=_opt_int(body.get("top_k", body.get("top_n")), "top_k"),
                         instruction=_opt_str(body.get("instruction"), "instruction"),
                         on_error=_choice(body.get("on_error"), "on_error", ON_ERROR, "raise"))


def parse_tei_rerank(body: Any) -> RerankRequest:
    """TEI ``{"query": str, "texts": [str], "raw_scores", "return_text", "truncate"}``."""
    body = _need_dict(body)
    query = body.get("query")
    if not isinstance(query, str):
        raise InputError("'query' must be a string")
    texts = _list_of_items(body.get("texts"), "texts", allow_single=False)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"a text must be a string, got {type(t).__name__}", index=i)
    return RerankRequest(query=query, documents=tuple(texts),
                         top_k=_opt_int(body.get("top_k", body.get("top_n")), "top_k"),
                         instruction=_opt_str(body.get("instruction"), "instruction"),
                         raw_scores=_opt_bool(body.get("raw_scores"), "raw_scores"),
                         return_text=_opt_bool(body.get("return_text"), "return_text"))


def parse_weaviate_rerank(body: Any) -> RerankRequest:
    """Weaviate reranker-transformers ``{"query": str, "documents": [str], "property": ""}``."""
    body = _need_dict(body)
    query = body.get("query")
    if not isinstance(query, str):
        raise InputError("'query' must be a string")
    docs = body.get("documents")
    if not isinstance(docs, list):
        raise InputError("'documents' must be a list of strings")
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise InputError(f"a document must be a string, got {type(d).__name__}", index=i)
    return RerankRequest(query=query, documents=tuple(docs))


def parse_clip(body: Any) -> ClipRequest:
    """Weaviate multi2vec-clip ``{"texts": [str] | null, "images": [base64] | null}``."""
    body = _need_dict(body)
    texts = body.get("texts") or []
    images = body.get("images") or []
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InputError("'texts' must be a list of strings")
    if not isinstance(images, list):
        raise InputError("'images' must be a list of base64 strings")
    decoded = []
    for i, img in enumerate(images):
        try:
            decoded.append(decode_media(img, "image"))
        except InputError as exc:
            raise exc.at(len(texts) + i) from exc
    return ClipRequest(texts=tuple(texts), images=tuple(decoded))


def parse_vectors(body: Any) -> VectorsRequest:
    """Weaviate text2vec-transformers: ``{"text", "config"}`` or the batch ``{"texts", "config"}``."""
    body = _need_dict(body)
    config = body.get("config") or {}
    if not isinstance(config, dict):
        raise InputError(f"'config' must be an object, got {type(config).__name__}")
    task = config.get("task_type") or "passage"
    if task not in ("query", "passage"):
        raise InputError(f"config.task_type must be 'query' or 'passage', got {task!r}")
    dim = _opt_int(config.get("dimensions"), "config.dimensions")
    if body.get("texts") is not None:
        texts = body["texts"]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise InputError("'texts' must be a list of strings")
        return VectorsRequest(texts=tuple(texts), single=False, task_type=task, dim=dim)
    text = body.get("text")
    if not isinstance(text, str):
        raise InputError("'text' must be a string (or send 'texts', a list of strings)")
    return VectorsRequest(texts=(text,), single=True, task_type=task, dim=dim)


# ---------------------------------------------------------------------------- responses
def encode_vectors(vectors: np.ndarray, encoding: str) -> Any:
    """Rows as float lists (an array, serialised by the JSON encoder) or base64 float32 strings."""
    if encoding == "base64":
        data = np.ascontiguousarray(vectors, dtype="<f4")
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in data]
    return vectors


def native_embed_response(vectors: np.ndarray, indices: Sequence[int], n: int, *, dim: int, model: str,
                          encoding: str, errors: Sequence[tuple[int, str]] = ()) -> dict:
    """``{"embeddings": [...], "dimension": N, "model": name}``; failed items (on_error=skip) are null."""
    rows = encode_vectors(vectors, encoding)
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


def dashscope_response(vectors: np.ndarray, kinds: Sequence[str], *, tokens: int, image_tokens: int,
                       request_id: str) -> dict:
    """DashScope ``{"output": {"embeddings": [{"index", "embedding", "type"}]}, "usage", "request_id"}``."""
    return {"output": {"embeddings": [{"index": i, "embedding": row, "type": kind}
                                      for i, (row, kind) in enumerate(zip(vectors, kinds))]},
            "usage": {"input_tokens": tokens, "image_tokens": image_tokens},
            "request_id": request_id}


def openai_response(vectors: np.ndarray, *, model: str, encoding: str, tokens: int) -> dict:
    """OpenAI ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "usage"}``."""
    rows = encode_vectors(vectors, encoding)
    return {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": row} for i, row in enumerate(rows)],
            "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def ranked(scores: np.ndarray, top_k: int | None) -> list[int]:
    """Indices of non-NaN scores, best first (stable), at most ``top_k``."""
    order = [int(i) for i in np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
             if not math.isnan(float(scores[i]))]
    return order if top_k is None else order[:top_k]


def native_rerank_response(scores: np.ndarray, *, top_k: int | None, model: str,
                           errors: Sequence[tuple[int, str]] = ()) -> dict:
    """``{"results": [{"index", "score"}], "model"}``, best first; failed documents listed in ``errors``."""
    body: dict = {"results": [{"index": i, "score": float(scores[i])} for i in ranked(scores, top_k)],
                  "model": model}
    if errors:
        body["errors"] = [{"index": i, "message": m} for i, m in errors]
    return body


def tei_rerank_response(scores: np.ndarray, request: RerankRequest) -> list:
    """TEI ``[{"index", "score", "text"?}]``, best first; ``raw_scores`` gives logits."""
    out = []
    for i in ranked(scores, request.top_k):
        s = float(scores[i])
        if request.raw_scores:
            s = min(max(s, 1e-12), 1 - 1e-12)
            s = math.log(s / (1 - s))
        entry: dict = {"index": i, "score": s}
        if request.return_text:
            entry["text"] = request.documents[i]
        out.append(entry)
    return out


def weaviate_rerank_response(scores: np.ndarray, request: RerankRequest) -> dict:
    """Weaviate ``{"query", "scores": [{"document", "score"}]}`` in the documents' order."""
    return {"query": request.query,
            "scores": [{"document": d, "score": float(s)} for d, s in zip(request.documents, scores)]}


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

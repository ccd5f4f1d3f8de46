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
properties; recognised for strings of at least 64 base64 characters, by a linear-time
check). URLs and server paths are passed on to the embedder, which refuses them unless
the operator enabled them.

Every parser takes the service's :class:`Limits` and checks them while it walks the
body, before any medium is decoded or any text tokenised: too many items, a text longer
than ``max_text_chars`` or a frame list longer than ``max_frames`` raise
:class:`TooLarge` (HTTP 413), and a video item on a service started with ``--no-video``
raises :class:`~embedder.errors.InputError`.
"""
from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import InputError
from .wire import (  # noqa: F401 - re-exported: the service and its tests use them from here
    DEFAULT_MAX_FRAMES, DEFAULT_MAX_ITEMS, DEFAULT_MAX_TEXT_CHARS, NO_LIMITS, Limits, TooLarge, UnknownParameter,
    _choice, _decode_items, _list_of_items, _need_dict, _opt_bool, _opt_int, _opt_str, check_count, check_text,
    decode_item, decode_media,
)

PROTOCOLS = ("native", "dashscope", "openai", "tei", "weaviate")
ENCODINGS = ("float", "base64")
ON_ERROR = ("raise", "skip")
_DASHSCOPE_KEYS = ("text", "image", "video", "multi_images", "factor")
# DashScope's documented parameters of MultiModalEmbedding.call (dashscope 2.x).
DASHSCOPE_PARAMETERS = ("dimension", "output_type", "fps", "instruct", "enable_fusion", "max_video_frames",
                        "auto_truncation", "res_level")


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


# ---------------------------------------------------------------------------- requests
def is_dashscope(body: Any) -> bool:
    """True for DashScope's multimodal-embedding shape (``input.contents``)."""
    return isinstance(body, dict) and isinstance(body.get("input"), dict) and "contents" in body["input"]


def parse_native_embed(body: Any, limits: Limits = NO_LIMITS) -> EmbedRequest:
    """``{"inputs": [item, ...], "dimension": N, "instruction": "...", "encoding_format", "on_error"}``."""
    body = _need_dict(body)
    if "inputs" not in body:
        raise InputError("missing 'inputs' (a list of items: strings or objects with text/image/video)")
    instruction = _opt_str(body.get("instruction"), "instruction")
    if instruction is not None:
        check_text(instruction, "'instruction'", limits)
    return EmbedRequest(items=_decode_items(_list_of_items(body["inputs"], "inputs", limits), limits),
                        dim=_opt_int(body.get("dimension", body.get("dimensions")), "dimension"),
                        instruction=instruction,
                        encoding=_choice(body.get("encoding_format"), "encoding_format", ENCODINGS, "float"),
                        on_error=_choice(body.get("on_error"), "on_error", ON_ERROR, "raise"))


def dashscope_parameters(body: dict) -> dict:
    """DashScope's parameters, wherever its SDK put them, checked against the documented ones.

    ``MultiModalEmbedding.call(..., dimension=64)`` sends ``"parameters": {"dimension": 64}``;
    ``call(..., parameters={"dimension": 64})`` sends ``"parameters": {"parameters":
    {"dimension": 64}}`` (the SDK files unknown keyword arguments under ``parameters``).
    Both are read; the same parameter given twice with different values, or any
    parameter DashScope does not document, raises :class:`UnknownParameter`.
    """
    params = body.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InputError(f"'parameters' must be an object, got {type(params).__name__}")
    params = dict(params)
    nested = params.pop("parameters", None)
    if nested is not None:
        if not isinstance(nested, dict):
            raise InputError(f"'parameters.parameters' must be an object, got {type(nested).__name__}")
        for key, value in nested.items():
            if key in params and params[key] != value:
                raise InputError(f"parameter {key!r} is given twice with different values "
                                 f"({params[key]!r} and {value!r})")
            params[key] = value
    unknown = sorted(set(params) - set(DASHSCOPE_PARAMETERS))
    if unknown:
        raise UnknownParameter(f"unknown parameter(s) {unknown}; this service takes {list(DASHSCOPE_PARAMETERS)}")
    return params


def parse_dashscope(body: Any, limits: Limits = NO_LIMITS) -> EmbedRequest:
    """DashScope multimodal-embedding: ``{"input": {"contents": [...]}, "parameters": {...}}``.

    Parameters (top level of ``parameters`` or nested one level deeper, as the SDK sends
    them): ``dimension``, ``output_type`` (``dense`` only), ``fps`` (0 to 1, video files),
    ``instruct``, ``enable_fusion`` (every content into ONE vector), ``max_video_frames``
    (4 to 64), ``auto_truncation`` (texts are always cut at the model's length) and
    ``res_level`` (refused: it names tiers of Alibaba's snapshot models).
    """
    body = _need_dict(body)
    contents = body["input"].get("contents")
    contents = _list_of_items(contents, "input.contents", limits)
    params = dashscope_parameters(body)
    output_type = params.get("output_type", "dense")
    if output_type != "dense":
        raise InputError(f"parameters.output_type {output_type!r} is not supported; only 'dense' is")
    fps = params.get("fps")
    if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 <= fps <= 1):
        raise InputError(f"parameters.fps must be a number in [0, 1], got {fps!r}")
    fusion = _opt_bool(params.get("enable_fusion"), "parameters.enable_fusion")
    _opt_bool(params.get("auto_truncation"), "parameters.auto_truncation")
    max_frames = params.get("max_video_frames")
    if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                   or not 4 <= max_frames <= 64):
        raise InputError(f"parameters.max_video_frames must be an integer from 4 to 64, got {max_frames!r}")
    if params.get("res_level") is not None:
        raise InputError("parameters.res_level is not supported by this service (it selects resolution tiers "
                         "of Alibaba Cloud's snapshot models); images are sized as the open release sizes them")
    instruction = _opt_str(params.get("instruct"), "parameters.instruct")
    if instruction is not None:
        check_text(instruction, "parameters.instruct", limits)
    elements: list[dict] = []
    for i, element in enumerate(contents):
        if isinstance(element, str):
            element = {"text": element}
        if not isinstance(element, dict):
            raise InputError(f"an element must be a string or an object with {list(_DASHSCOPE_KEYS)}, "
                             f"got {type(element).__name__}", index=i)
        unknown = set(element) - set(_DASHSCOPE_KEYS)
        if unknown:
            raise InputError(f"unknown key(s) {sorted(unknown)}; an element takes {list(_DASHSCOPE_KEYS)}",
                             index=i)
        factor = element.get("factor")
        if factor is not None and (isinstance(factor, bool) or factor != 1):
            raise InputError(f"'factor' {factor!r} is not supported (weights are for one-peace models); "
                             "leave it out or use 1", index=i)
        if element.get("multi_images") is not None and not isinstance(element["multi_images"], list):
            raise InputError("'multi_images' must be a list of images", index=i)
        elements.append(element)
    groups = [list(range(len(elements)))] if fusion else [[i] for i in range(len(elements))]
    items, kinds = [], []
    for group in groups:
        texts: list[Any] = []
        images: list[Any] = []
        videos: list[Any] = []
        present: list[str] = []
        for i in group:
            element = elements[i]
            present += [k for k in ("text", "image", "video", "multi_images")
                        if element.get(k) is not None and k not in present]
            if element.get("text") is not None:
                texts.append(element["text"])
            if element.get("image") is not None:
                images.append(element["image"])
            images.extend(element.get("multi_images") or ())
            if element.get("video") is not None:
                videos.append(element["video"])
        index = group[0] if len(group) == 1 else 0
        if len(videos) > 1:
            raise InputError(f"{len(videos)} videos cannot be fused into one vector; send one video per vector",
                             index=index)
        item: dict[str, Any] = {}
        if texts:
            item["text"] = texts[0] if len(texts) == 1 else texts
        if images:
            item["image"] = images if len(images) > 1 else images[0]
        if videos:
            item["video"] = videos[0]
            if fps:  # DashScope's sampling rate for video files, in (0, 1]
                item["fps"] = fps
            if max_frames is not None and not isinstance(videos[0], list):
                item["max_frames"] = max_frames
        items.append(item)
        kinds.append(present[0] if len(present) == 1 else ("vl" if present else "text"))
    return EmbedRequest(items=_decode_items(items, limits),
                        dim=_opt_int(params.get("dimension"), "parameters.dimension"),
                        instruction=instruction, kinds=tuple(kinds))


def parse_openai(body: Any, limits: Limits = NO_LIMITS) -> EmbedRequest:
    """OpenAI ``{"input": str | [str], "model", "dimensions", "encoding_format"}``."""
    body = _need_dict(body)
    if "input" not in body:
        raise InputError("missing 'input' (a string or a list of strings)")
    raw = body["input"]
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        raise InputError("token-id input is not supported; send text")
    values = _list_of_items(raw, "input", limits)
    for i, v in enumerate(values):
        if isinstance(v, list):
            raise InputError("token-id input is not supported; send text", index=i)
    instruction = _opt_str(body.get("instruction"), "instruction")
    if instruction is not None:
        check_text(instruction, "'instruction'", limits)
    return EmbedRequest(items=_decode_items(values, limits), dim=_opt_int(body.get("dimensions"), "dimensions"),
                        instruction=instruction,
                        encoding=_choice(body.get("encoding_format"), "encoding_format", ENCODINGS, "float"))


# Hugging Face's InferenceClient.feature_extraction sends ``prompt_name``; these are the
# names that map onto the embedder's instructions.
TEI_PROMPTS = {"query": "query", "document": None, "passage": None}


def parse_tei_embed(body: Any, limits: Limits = NO_LIMITS) -> EmbedRequest:
    """TEI ``{"inputs": str | [str], "normalize", "truncate", "dimensions", "prompt_name"}``.

    Vectors are always normalised; ``prompt_name`` ``query`` embeds with the query
    instruction (``document`` / ``passage``: the default one).
    """
    from ..embedder import DEFAULT_QUERY_INSTRUCTION

    body = _need_dict(body)
    if "inputs" not in body:
        raise InputError("missing 'inputs' (a string or a list of strings)")
    instruction = _opt_str(body.get("instruction"), "instruction")
    prompt = _opt_str(body.get("prompt_name"), "prompt_name")
    if prompt is not None:
        if prompt not in TEI_PROMPTS:
            raise InputError(f"'prompt_name' must be one of {list(TEI_PROMPTS)}, got {prompt!r}")
        if instruction is None and TEI_PROMPTS[prompt] == "query":
            instruction = DEFAULT_QUERY_INSTRUCTION
    if instruction is not None:
        check_text(instruction, "'instruction'", limits)
    return EmbedRequest(items=_decode_items(_list_of_items(body["inputs"], "inputs", limits), limits),
                        dim=_opt_int(body.get("dimensions"), "dimensions"),
                        instruction=instruction,
                        encoding=_choice(body.get("encoding_format"), "encoding_format", ENCODINGS, "float"))


def is_similarity(body: Any) -> bool:
    """True for Hugging Face's sentence-similarity shape ``{"inputs": {"source_sentence", "sentences"}}``."""
    return isinstance(body, dict) and isinstance(body.get("inputs"), dict) and "source_sentence" in body["inputs"]


def parse_similarity(body: Any, limits: Limits = NO_LIMITS) -> RerankRequest:
    """``InferenceClient.sentence_similarity``: ``{"inputs": {"source_sentence": str, "sentences": [str]}}``."""
    body = _need_dict(body)
    inputs = body["inputs"]
    query = inputs.get("source_sentence")
    if not isinstance(query, str):
        raise InputError("'inputs.source_sentence' must be a string")
    check_text(query, "'inputs.source_sentence'", limits)
    sentences = _list_of_items(inputs.get("sentences"), "inputs.sentences", limits, allow_single=False)
    for i, t in enumerate(sentences):
        if not isinstance(t, str):
            raise InputError(f"a sentence must be a string, got {type(t).__name__}", index=i)
        check_text(t, "the sentence", limits, i)
    return RerankRequest(query=query, documents=tuple(sentences))


def parse_native_rerank(body: Any, limits: Limits = NO_LIMITS) -> RerankRequest:
    """``{"query": item, "documents": [item, ...], "top_k": n, "instruction", "on_error"}``."""
    body = _need_dict(body)
    if "query" not in body or "documents" not in body:
        raise InputError("a rerank request needs 'query' (an item) and 'documents' (a list of items)")
    documents = _list_of_items(body["documents"], "documents", limits, allow_single=False)
    instruction = _opt_str(body.get("instruction"), "instruction")
    if instruction is not None:
        check_text(instruction, "'instruction'", limits)
    try:
        query = decode_item(body["query"], 0, limits)
    except TooLarge as exc:
        raise TooLarge(f"query: {exc.reason}", code=exc.code) from exc
    except InputError as exc:
        raise InputError(f"query: {exc.reason}") from exc
    return RerankRequest(query=query, documents=_decode_items(documents, limits),
                         top_k=_opt_int(body.get("top_k", body.get("top_n")), "top_k"),
                         instruction=instruction,
                         on_error=_choice(body.get("on_error"), "on_error", ON_ERROR, "raise"))


def parse_tei_rerank(body: Any, limits: Limits = NO_LIMITS) -> RerankRequest:
    """TEI ``{"query": str, "texts": [str], "raw_scores", "return_text", "truncate"}``."""
    body = _need_dict(body)
    query = body.get("query")
    if not isinstance(query, str):
        raise InputError("'query' must be a string")
    check_text(query, "'query'", limits)
    texts = _list_of_items(body.get("texts"), "texts", limits, allow_single=False)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"a text must be a string, got {type(t).__name__}", index=i)
        check_text(t, "the text", limits, i)
    instruction = _opt_str(body.get("instruction"), "instruction")
    if instruction is not None:
        check_text(instruction, "'instruction'", limits)
    return RerankRequest(query=query, documents=tuple(texts),
                         top_k=_opt_int(body.get("top_k", body.get("top_n")), "top_k"),
                         instruction=instruction,
                         raw_scores=_opt_bool(body.get("raw_scores"), "raw_scores"),
                         return_text=_opt_bool(body.get("return_text"), "return_text"))


def parse_weaviate_rerank(body: Any, limits: Limits = NO_LIMITS) -> RerankRequest:
    """Weaviate reranker-transformers ``{"query": str, "documents": [str], "property": ""}``."""
    body = _need_dict(body)
    query = body.get("query")
    if not isinstance(query, str):
        raise InputError("'query' must be a string")
    check_text(query, "'query'", limits)
    docs = body.get("documents")
    if not isinstance(docs, list):
        raise InputError("'documents' must be a list of strings")
    check_count(len(docs), "documents", limits)
    for i, d in enumerate(docs):
        if not isinstance(d, str):
            raise InputError(f"a document must be a string, got {type(d).__name__}", index=i)
        check_text(d, "the document", limits, i)
    return RerankRequest(query=query, documents=tuple(docs))


def parse_clip(body: Any, limits: Limits = NO_LIMITS) -> ClipRequest:
    """Weaviate multi2vec-clip ``{"texts": [str] | null, "images": [base64] | null}``."""
    body = _need_dict(body)
    texts = body.get("texts") or []
    images = body.get("images") or []
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InputError("'texts' must be a list of strings")
    if not isinstance(images, list):
        raise InputError("'images' must be a list of base64 strings")
    check_count(len(texts) + len(images), "texts and images", limits)
    for i, t in enumerate(texts):
        check_text(t, "the text", limits, i)
    decoded = []
    for i, img in enumerate(images):
        try:
            decoded.append(decode_media(img, "image"))
        except InputError as exc:
            raise exc.at(len(texts) + i) from exc
    return ClipRequest(texts=tuple(texts), images=tuple(decoded))


def parse_vectors(body: Any, limits: Limits = NO_LIMITS) -> VectorsRequest:
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
        check_count(len(texts), "texts", limits)
        for i, t in enumerate(texts):
            check_text(t, "the text", limits, i)
        return VectorsRequest(texts=tuple(texts), single=False, task_type=task, dim=dim)
    text = body.get("text")
    if not isinstance(text, str):
        raise InputError("'text' must be a string (or send 'texts', a list of strings)")
    check_text(text, "'text'", limits)
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

"""Alibaba Cloud DashScope's multimodal-embedding shape, at DashScope's own path.

``POST /api/v1/services/embeddings/multimodal-embedding/multimodal-embedding`` (what
``dashscope.MultiModalEmbedding.call(base_address=...)`` posts to); the native
``/v1/embed`` answers the same body shape through :func:`parse` and :func:`run`.
Errors: ``{"code", "message", "request_id"}`` with DashScope's codes
(``InvalidParameter``, ``InvalidApiKey``, ``Throttling``, ...).
"""
from __future__ import annotations

from typing import Annotated, Any, ClassVar, Optional, Sequence

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import AfterValidator, BeforeValidator, ValidationInfo, model_validator

from .. import protocols as P
from .common import Call, embed_items, handle, require_key, start_clock

PATH = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"
ELEMENT_KEYS = ("text", "image", "video", "multi_images", "factor")
# DashScope's documented parameters of MultiModalEmbedding.call (dashscope 2.x).
PARAMETERS = ("dimension", "output_type", "fps", "instruct", "enable_fusion", "max_video_frames",
              "auto_truncation", "res_level")

router = APIRouter(tags=["dashscope"], dependencies=[Depends(start_clock), Depends(require_key)])


# ---------------------------------------------------------------------------- request bodies
def _fps(value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1):
        raise P.InputError(f"parameters.fps must be a number in [0, 1], got {value!r}")
    return value


def _max_frames(value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 4 <= value <= 64):
        raise P.InputError(f"parameters.max_video_frames must be an integer from 4 to 64, got {value!r}")
    return value


def _dense(value: Any) -> str:
    if value is not None and value != "dense":
        raise P.InputError(f"parameters.output_type {value!r} is not supported; only 'dense' is")
    return "dense"


def _no_res_level(value: Any) -> None:
    if value is not None:
        raise P.InputError("parameters.res_level is not supported by this service (it selects resolution tiers "
                           "of Alibaba Cloud's snapshot models); images are sized as the open release sizes them")
    return None


class Parameters(P.Body):
    """DashScope's ``parameters``, at the top level or nested once more (as the SDK files keyword arguments).

    ``MultiModalEmbedding.call(..., dimension=64)`` sends ``"parameters": {"dimension": 64}``;
    ``call(..., parameters={"dimension": 64})`` sends ``"parameters": {"parameters":
    {"dimension": 64}}``. Both are read; the same parameter given twice with different
    values, or any parameter DashScope does not document, is refused
    (:class:`~embedder.service.wire.UnknownParameter`). ``res_level`` is refused (it names
    tiers of Alibaba's snapshot models); ``auto_truncation`` is accepted (texts are always
    cut at the model's length).
    """

    dimension: P.Dim = None
    output_type: Annotated[Any, AfterValidator(_dense)] = "dense"
    fps: Annotated[Any, AfterValidator(_fps)] = None
    instruct: P.Instruction = None
    enable_fusion: P.Flag = False
    max_video_frames: Annotated[Any, AfterValidator(_max_frames)] = None
    auto_truncation: P.Flag = False
    res_level: Annotated[Any, AfterValidator(_no_res_level)] = None

    @model_validator(mode="before")
    @classmethod
    def _flatten(cls, params: Any) -> Any:
        if not isinstance(params, dict):
            raise P.InputError(f"'parameters' must be an object, got {type(params).__name__}")
        params = dict(params)
        nested = params.pop("parameters", None)
        if nested is not None:
            if not isinstance(nested, dict):
                raise P.InputError(f"'parameters.parameters' must be an object, got {type(nested).__name__}")
            for key, value in nested.items():
                if key in params and params[key] != value:
                    raise P.InputError(f"parameter {key!r} is given twice with different values "
                                       f"({params[key]!r} and {value!r})")
                params[key] = value
        unknown = sorted(set(params) - set(PARAMETERS))
        if unknown:
            raise P.UnknownParameter(f"unknown parameter(s) {unknown}; this service takes {list(PARAMETERS)}")
        return params


def _contents(value: Any, info: ValidationInfo) -> list:
    return P.list_of_items(value, "input.contents", P.limits_of(info))


def _need_object(value: Any) -> Any:
    if value is not None and not isinstance(value, dict):
        raise P.InputError(f"'parameters' must be an object, got {type(value).__name__}")
    return value


class Input(P.Body):
    contents: Annotated[Any, AfterValidator(_contents)]


class Body(P.Body):
    """``{"model", "input": {"contents": [element, ...]}, "parameters": {...}}``.

    An element is a string or an object with ``text``, ``image``, ``video`` and
    ``multi_images`` (and ``factor``, 1 only); with ``enable_fusion`` every element goes
    into ONE vector.
    """

    missing: ClassVar[dict[str, str]] = {
        "input": "missing 'input' (an object with 'contents', a list of elements)",
        "input.contents": "missing 'input.contents' (a list of elements)"}

    input: Input
    parameters: Annotated[Optional[Parameters], BeforeValidator(_need_object)] = None

    def request(self, limits: P.Limits) -> P.EmbedRequest:
        params = self.parameters or Parameters()
        elements = [_element(e, i) for i, e in enumerate(self.input.contents)]
        groups = [list(range(len(elements)))] if params.enable_fusion else [[i] for i in range(len(elements))]
        items, kinds = [], []
        for group in groups:
            item, kind = _fuse([elements[i] for i in group], group[0] if len(group) == 1 else 0, params)
            items.append(item)
            kinds.append(kind)
        return P.EmbedRequest(items=P.decode_items(items, limits), dim=params.dimension,
                              instruction=params.instruct, kinds=tuple(kinds))


def _element(element: Any, i: int) -> dict:
    if isinstance(element, str):
        element = {"text": element}
    if not isinstance(element, dict):
        raise P.InputError(f"an element must be a string or an object with {list(ELEMENT_KEYS)}, "
                           f"got {type(element).__name__}", index=i)
    unknown = set(element) - set(ELEMENT_KEYS)
    if unknown:
        raise P.InputError(f"unknown key(s) {sorted(unknown)}; an element takes {list(ELEMENT_KEYS)}", index=i)
    factor = element.get("factor")
    if factor is not None and (isinstance(factor, bool) or factor != 1):
        raise P.InputError(f"'factor' {factor!r} is not supported (weights are for one-peace models); "
                           "leave it out or use 1", index=i)
    if element.get("multi_images") is not None and not isinstance(element["multi_images"], list):
        raise P.InputError("'multi_images' must be a list of images", index=i)
    return element


def _fuse(elements: Sequence[dict], index: int, params: Parameters) -> tuple[dict, str]:
    """Elements -> one embedder item and its DashScope type (``text``, ``image``, ..., ``vl`` when mixed)."""
    texts: list[Any] = []
    images: list[Any] = []
    videos: list[Any] = []
    present: list[str] = []
    for element in elements:
        present += [k for k in ("text", "image", "video", "multi_images")
                    if element.get(k) is not None and k not in present]
        if element.get("text") is not None:
            texts.append(element["text"])
        if element.get("image") is not None:
            images.append(element["image"])
        images.extend(element.get("multi_images") or ())
        if element.get("video") is not None:
            videos.append(element["video"])
    if len(videos) > 1:
        raise P.InputError(f"{len(videos)} videos cannot be fused into one vector; send one video per vector",
                           index=index)
    item: dict[str, Any] = {}
    if texts:
        item["text"] = texts[0] if len(texts) == 1 else texts
    if images:
        item["image"] = images if len(images) > 1 else images[0]
    if videos:
        item["video"] = videos[0]
        if params.fps:  # DashScope's sampling rate for video files, in (0, 1]
            item["fps"] = params.fps
        if params.max_video_frames is not None and not isinstance(videos[0], list):
            item["max_frames"] = params.max_video_frames
    return item, present[0] if len(present) == 1 else ("vl" if present else "text")


def is_dashscope(body: Any) -> bool:
    """True for DashScope's multimodal-embedding shape (``input.contents``)."""
    return isinstance(body, dict) and isinstance(body.get("input"), dict) and "contents" in body["input"]


# ---------------------------------------------------------------------------- responses
def response(vectors: np.ndarray, kinds: Sequence[str], *, tokens: int, image_tokens: int,
             request_id: str) -> dict:
    """``{"output": {"embeddings": [{"index", "embedding", "type"}]}, "usage", "request_id"}``."""
    return {"output": {"embeddings": [{"index": i, "embedding": row, "type": kind}
                                      for i, (row, kind) in enumerate(zip(vectors, kinds))]},
            "usage": {"input_tokens": tokens, "image_tokens": image_tokens},
            "request_id": request_id}


# ---------------------------------------------------------------------------- routes
def parse(body: Any, call: Call) -> P.EmbedRequest:
    return P.validate(Body, body, call.limits).request(call.limits)


async def run(req: P.EmbedRequest, call: Call) -> tuple[Any, int]:
    out, _ = await embed_items(call, req, "dashscope")
    return response(out.vectors, req.kinds, tokens=out.tokens, image_tokens=out.image_tokens,
                    request_id=""), len(req.items)


@router.post(PATH)
async def multimodal_embedding(request: Request) -> Response:
    """DashScope's multimodal-embedding path and shape (the request id is set by the pipeline)."""
    return await handle(request, "dashscope", parse, run)

"""Items on the wire: request limits, and media decoding that never costs more than the limits allow.

:class:`Limits` is what one request may ask for; the checks here run while a body is
walked, before any medium is decoded or any text tokenised, and raise :class:`TooLarge`
(HTTP 413) with the limit, the value and the item index. :func:`decode_media` turns plain
base64 into bytes with a linear-time check, and :func:`decode_item` a native wire item
into an embedder item.
"""
from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import InputError, LimitError

# Applied to a string whose whitespace is already removed: the two parts share no
# character, so the match is linear (a class with \s on both sides of "=" backtracked
# quadratically: 60 KB took 15 s).
_B64_STRICT = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_MIN_RAW_B64 = 64
_ITEM_KEYS = ("text", "image", "video", "instruction", "fps", "max_frames")
DEFAULT_MAX_ITEMS = 256
DEFAULT_MAX_TEXT_CHARS = 327_680  # as the library's LoadOptions: 32 characters per token of 10,240
DEFAULT_MAX_FRAMES = 768


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; checked while parsing, before decoding or tokenising.

    Attributes:
        max_items: items (or documents) per request.
        max_text_chars: characters of text in one item (its texts and instruction together).
        max_frames: frames in one video given as a frame list.
        allow_video: accept video items at all (``--no-video`` turns them off).
    """

    max_items: int = DEFAULT_MAX_ITEMS
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_frames: int = DEFAULT_MAX_FRAMES
    allow_video: bool = True


NO_LIMITS = Limits(max_items=1 << 62, max_text_chars=1 << 62, max_frames=1 << 62)


class TooLarge(LimitError):
    """The request asks for more work than the service's limits allow (HTTP 413)."""

    def __init__(self, reason: str, *, index: int | None = None, code: str = "too_large") -> None:
        self.code = code
        super().__init__(reason, index=index)

    def at(self, index: int) -> "TooLarge":
        return TooLarge(self.reason, index=index, code=self.code)


class UnknownParameter(InputError):
    """A protocol parameter this service does not know (DashScope answers these with ``InvalidParameter``)."""


# ---------------------------------------------------------------------------- checks
def list_of_items(value: Any, name: str, limits: Limits, *, allow_single: bool = True) -> list:
    """A non-empty list of at most ``limits.max_items`` entries (one string or object is a list of one)."""
    if isinstance(value, (str, dict)) and allow_single:
        return [value]
    if not isinstance(value, list):
        raise InputError(f"{name!r} must be a list of items, got {type(value).__name__}")
    if not value:
        raise InputError(f"{name!r} is empty")
    check_count(len(value), name, limits)
    return value


def check_count(n: int, what: str, limits: Limits) -> None:
    """Refuse more than ``limits.max_items`` items (or documents) in one request."""
    if n > limits.max_items:
        raise TooLarge(f"{n} entries in {what!r} in one request; the limit is {limits.max_items} "
                       "(send several requests)", code="too_many_items")


def check_text(text: str, what: str, limits: Limits, index: int | None = None) -> str:
    """Refuse a text longer than ``limits.max_text_chars`` characters (before it is tokenised)."""
    if len(text) > limits.max_text_chars:
        raise TooLarge(f"{what} has {len(text)} characters; the limit is {limits.max_text_chars} per item "
                       "(cut it: the models read at most 8,192 tokens, 10,240 for the reranker)", index=index, code="text_too_long")
    return text


def _check_item_text(obj: dict, limits: Limits, index: int) -> None:
    texts = obj.get("text")
    total = 0
    if isinstance(texts, str):
        total = len(texts)
    elif isinstance(texts, list):
        total = sum(len(t) for t in texts if isinstance(t, str))
    if isinstance(obj.get("instruction"), str):
        total += len(obj["instruction"])
    if total > limits.max_text_chars:
        raise TooLarge(f"the item's text has {total} characters; the limit is {limits.max_text_chars} per item "
                       "(cut it: the models read at most 8,192 tokens, 10,240 for the reranker)", index=index, code="text_too_long")


def _check_video(video: Any, limits: Limits, index: int) -> None:
    if not limits.allow_video:
        raise InputError("video items are disabled on this service (started with --no-video)", index=index)
    if isinstance(video, list) and len(video) > limits.max_frames:
        raise TooLarge(f"the video frame list has {len(video)} frames; the limit is {limits.max_frames}",
                       index=index, code="too_many_frames")


def decode_media(value: Any, what: str) -> Any:
    """One image/video source from the wire: plain base64 becomes bytes; anything else stays.

    ``data:`` URIs, URLs and paths are left to the embedder (which refuses URLs and
    paths unless the operator enabled them).
    """
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string (data: URI or base64), got {type(value).__name__}")
    if len(value) < _MIN_RAW_B64 or value.startswith("data:"):
        return value
    compact = "".join(value.split())
    if len(compact) < _MIN_RAW_B64 or len(compact) % 4 or not _B64_STRICT.fullmatch(compact):
        return value
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return value


def _decode_sources(value: Any, what: str) -> Any:
    if isinstance(value, list):
        return [decode_media(v, f"{what}[{j}]") for j, v in enumerate(value)]
    return decode_media(value, what)


def decode_item(obj: Any, index: int, limits: Limits = NO_LIMITS) -> Any:
    """A native wire item (string or dict of text/image/video/instruction) -> an embedder item.

    Raises:
        TooLarge: the item's text or frame list is beyond ``limits`` (checked before decoding).
        InputError: the item is malformed, or a video on a service without video.
    """
    if isinstance(obj, str):
        return check_text(obj, "the text", limits, index)
    if not isinstance(obj, dict):
        raise InputError(f"an item must be a string or an object with {list(_ITEM_KEYS)}, "
                         f"got {type(obj).__name__}", index=index)
    unknown = set(obj) - set(_ITEM_KEYS)
    if unknown:
        raise InputError(f"unknown key(s) {sorted(unknown)}; an item takes {list(_ITEM_KEYS)}", index=index)
    _check_item_text(obj, limits, index)
    if obj.get("video") is not None:
        _check_video(obj["video"], limits, index)
    if isinstance(obj.get("image"), list) and len(obj["image"]) > limits.max_frames:
        raise TooLarge(f"the item has {len(obj['image'])} images; the limit is {limits.max_frames}",
                       index=index, code="too_many_images")
    item = dict(obj)
    try:
        if item.get("image") is not None:
            item["image"] = _decode_sources(item["image"], "image")
        if item.get("video") is not None:
            item["video"] = _decode_sources(item["video"], "video")
    except InputError as exc:
        raise exc.at(index) from exc
    return item


def check_items(values: Sequence[Any], limits: Limits) -> None:
    """Check every item's text length, frame count and kind against ``limits``, decoding nothing.

    Raises:
        TooLarge: an item's text or frame list is beyond ``limits``.
        InputError: a video item on a service without video.
    """
    for i, v in enumerate(values):
        if isinstance(v, str):
            check_text(v, "the text", limits, i)
        elif isinstance(v, dict):
            _check_item_text(v, limits, i)
            if v.get("video") is not None:
                _check_video(v["video"], limits, i)


def decode_items(values: Sequence[Any], limits: Limits) -> tuple[Any, ...]:
    """Wire items -> embedder items; every item's size is checked first, so that no medium is
    decoded for a request refused later."""
    check_items(values, limits)
    return tuple(decode_item(v, i, limits) for i, v in enumerate(values))


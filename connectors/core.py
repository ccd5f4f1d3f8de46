"""The values every connector shares: rows, hits, failures and reports, ids, the row and
vector checks, and the one rule for transient errors and retries.

The embed-then-write pipeline is :mod:`connectors.pipeline`, the search helpers are
:mod:`connectors.search`, and the store skeleton that composes them is :mod:`connectors.base`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import pathlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from embedder.contracts import EmbedderLike
from embedder.errors import (InputError, MissingDependencyError, OverloadedError, QVLError, RemoteError,
                             UnavailableError)

log = logging.getLogger(__name__)

CONTENT_KEYS = ("text", "image", "video")
ROW_KEYS = {"id", "text", "image", "video", "vector", "metadata", "instruction"}
NO_EMBEDDER = "the store has no embedder: give the row a precomputed 'vector' or open the store with one"
VECTOR_ROWS_PER_STEP = 4096  # rows per upsert step when they carry precomputed vectors
# Rows per streamed step (``write_stream``): each step ends with the client idle while the
# server stores the last megabytes it was sent, so fewer, longer steps go faster.
STREAM_ROWS_PER_STEP = 16384
NONFINITE_VECTOR = "vector contains NaN or infinity"
ZERO_VECTOR = "vector is all zeros (cosine similarity is undefined)"


# ---------------------------------------------------------------------------- types
@dataclass(slots=True)  # not frozen: a frozen init costs 2 us a row, a third of a bulk load's Python time
class Row:
    """One object to store: an id, the content to embed (or a precomputed vector), fields.

    Built by :func:`normalize_row` and read-only by convention.

    Attributes:
        id: the row's own id, or a stable hash of its content.
        text: text content (stored, and used to rerank).
        image: image source (path, bytes, data URI, PIL...), embedded.
        video: video source (path or frame list), embedded.
        media: the reference stored for the image/video (a path or URI), or None when the
            media was given as bytes/pixels and cannot be referred to.
        modality: ``text``, ``image``, ``video`` or ``vl`` (fused).
        vector: a precomputed vector at the store's dim (stored as is, not re-embedded).
        metadata: JSON-serialisable dict stored with the row.
        fields: the store's declared fields (other top-level keys go into ``metadata``, see
            :func:`normalize_row`).
    """

    id: str
    text: str | None = None
    image: Any = None
    video: Any = None
    media: str | None = None
    modality: str = "text"
    vector: np.ndarray | None = None
    metadata: dict = field(default_factory=dict)
    fields: dict = field(default_factory=dict)
    instruction: str | None = None

    def item(self) -> dict:
        """The embedder item for this row."""
        out: dict[str, Any] = {}
        if self.text is not None:
            out["text"] = self.text
        if self.image is not None:
            out["image"] = self.image
        if self.video is not None:
            out["video"] = self.video
        if self.instruction is not None:
            out["instruction"] = self.instruction
        return out


@dataclass(frozen=True)
class Hit:
    """A search result.

    Attributes:
        id: the row id.
        score: vector similarity (cosine / inner product; higher is better).
        rerank_score: the reranker's score in [0, 1], or None when not reranked.
        fields: stored fields (text, media, modality, metadata, user fields).
    """

    id: str
    score: float
    rerank_score: float | None = None
    fields: dict = field(default_factory=dict)


class Failure(tuple):
    """One row that did not land: a value, never an exception half-way through a batch.

    It is the pair ``(id, reason)`` (so ``for rid, reason in report.failed`` and comparisons
    with pairs work) with two more attributes:

    Attributes:
        id: the row's id, or ``"#index"`` when it had none and could not be read.
        reason: why, in words that name the cause (``file not found: ...``).
        stage: ``validate`` (the row itself is bad), ``embed`` or ``write``.
        transient: True when trying again later may succeed (the database or the embedding
            service was away, timed out or was overloaded), set from the error itself by
            :func:`is_transient` (and the store's error translator), never parsed from text.

    Example:
        >>> f = Failure("a", "vector is all zeros", stage="validate")
        >>> rid, reason = f
        >>> (rid, f.stage, f.transient, f == ("a", "vector is all zeros"))
        ('a', 'validate', False, True)
    """

    __slots__ = ()

    def __new__(cls, id: str, reason: str, stage: str = "write", transient: bool = False) -> "Failure":
        obj = super().__new__(cls, (id, reason, stage, bool(transient)))
        return obj

    # The tuple holds four values, but iterates, compares and prints as the (id, reason) pair.
    def __iter__(self) -> Iterator[Any]:
        return iter((tuple.__getitem__(self, 0), tuple.__getitem__(self, 1)))

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: Any) -> Any:
        return (tuple.__getitem__(self, 0), tuple.__getitem__(self, 1))[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Failure):
            return tuple.__eq__(self, other)
        if isinstance(other, tuple):
            return len(other) == 2 and (self.id, self.reason) == other
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return f"Failure({self.id!r}, {self.reason!r}, stage={self.stage!r}, transient={self.transient})"

    def __reduce__(self) -> Any:
        return (Failure, (self.id, self.reason, self.stage, self.transient))

    @property
    def id(self) -> str:
        return tuple.__getitem__(self, 0)

    @property
    def reason(self) -> str:
        return tuple.__getitem__(self, 1)

    @property
    def stage(self) -> str:
        return tuple.__getitem__(self, 2)

    @property
    def transient(self) -> bool:
        return tuple.__getitem__(self, 3)


def as_failures(pairs: Iterable[Any], *, stage: str, transient: bool = False) -> list[Failure]:
    """Failure values from ``(id, reason)`` pairs (Failures are kept as they are)."""
    return [p if isinstance(p, Failure) else Failure(str(p[0]), str(p[1]), stage, transient) for p in pairs]


@dataclass(frozen=True)
class UpsertReport:
    """What an upsert did.

    Attributes:
        written: ids that landed.
        failed: :class:`Failure` values (``(id or "#index", reason)`` pairs with ``stage`` and
            ``transient``) for rows that did not.
    """

    written: list[str] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def transient(self) -> list[Failure]:
        """The failures worth retrying later (the database or the embedder was away)."""
        return [f for f in self.failed if getattr(f, "transient", False)]

    @property
    def ok(self) -> bool:
        return not self.failed

    def __add__(self, other: "UpsertReport") -> "UpsertReport":
        return UpsertReport(self.written + other.written, self.failed + other.failed)


@runtime_checkable
class Store(Protocol):
    """The surface every connector offers (see DESIGN.md)."""

    dim: int

    def create(self, fields: Mapping[str, type] | None = None, *, exist_ok: bool = False) -> None: ...

    def upsert(self, rows: Iterable[Mapping[str, Any]], **kwargs: Any) -> UpsertReport: ...

    def search(self, query: Any, k: int = 10, **kwargs: Any) -> list[Hit]: ...

    def existing_ids(self, ids: Sequence[str]) -> set[str]: ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def count(self) -> int: ...

    def drop(self) -> None: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------- transient errors
_TRANSIENT_TEXT = re.compile(
    r"ConnectionError|ConnectionReset|ConnectionRefused|ConnectionAborted|BrokenPipe|TimeoutError|timed? ?out|"
    r"\b50[234]\b|connection reset|temporarily unavailable|service unavailable|UNAVAILABLE|DEADLINE_EXCEEDED",
    re.IGNORECASE)
# httpx's transport errors, matched by name so that this module does not import httpx
_TRANSIENT_NAMES = frozenset({"ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout",
                              "TimeoutException", "RemoteProtocolError", "ReadError", "WriteError"})


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` (or an error it was raised from) says a service is away for now, not
    that the row is bad: a refused or lost connection, a timeout, an overloaded service
    (:class:`~embedder.errors.OverloadedError`, HTTP 429 or any 5xx from ``qvl serve``, a
    :class:`~embedder.errors.RemoteError` that could not connect), an unavailable database
    (each store's error translator raises :class:`~embedder.errors.UnavailableError` for it).

    The one rule behind :attr:`Failure.transient` and every retry: ``Store.upsert``,
    ``qvl ingest`` and the Postgres sync worker all use it. A database driver's own error
    counts when the driver's text names a lost connection or a timeout (gRPC's
    ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``).

    Example:
        >>> is_transient(ConnectionRefusedError(111, "Connection refused"))
        True
        >>> is_transient(InputError("cannot open image x.png"))
        False
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, InputError):
            return False
        if isinstance(e, (UnavailableError, OverloadedError, ConnectionError, TimeoutError)):
            return True
        if isinstance(e, RemoteError) and ((e.status is not None and (e.status >= 500 or e.status == 429))
                                           or e.code in ("timeout", "unavailable")):
            return True
        if type(e).__name__ in _TRANSIENT_NAMES:
            return True
        if not isinstance(e, QVLError) and type(e).__module__.split(".")[0] in (
                "pymilvus", "grpc", "httpx", "psycopg", "weaviate") and \
                _TRANSIENT_TEXT.search(f"{type(e).__name__}: {e}"):
            return True
        e = e.__cause__ or e.__context__
    return False


@dataclass(frozen=True)
class RetryPolicy:
    """The one retry policy: exponential backoff for transient failures (see :func:`is_transient`).

    Used by ``qvl ingest``, the Postgres sync worker and ``migrate``; a layer that retries
    does so with this policy, and the layers under it do not retry again.

    Attributes:
        attempts: tries in all (1 = no retry).
        backoff: first wait in seconds; doubled after each failed try.
        max_backoff: longest wait.
    """

    attempts: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (0-based)."""
        return min(self.max_backoff, self.backoff * (2 ** attempt))


def retrying(what: str, fn: Callable[[], Any], policy: RetryPolicy = RetryPolicy(),
             sleep: Callable[[float], None] | None = None) -> Any:
    """``fn()``, tried again after a transient failure (:func:`is_transient`) as ``policy`` says.

    Raises:
        The last error, when it is not transient or the attempts are spent.
    """
    import time

    for attempt in range(max(1, policy.attempts)):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - re-raised unless transient
            if not is_transient(exc) or attempt + 1 >= policy.attempts:
                raise
            wait = policy.delay(attempt)
            log.warning("%s failed (%s: %s); retry %d/%d in %.1f s", what, type(exc).__name__, exc,
                        attempt + 1, policy.attempts - 1, wait)
            (sleep or time.sleep)(wait)
    raise AssertionError("unreachable")  # pragma: no cover


# ---------------------------------------------------------------------------- ids and rows
def content_id(row: Mapping[str, Any]) -> str:
    """A stable id from a row's content (text, image, video): re-running an ingest is idempotent."""
    h = hashlib.sha256()
    for key in CONTENT_KEYS:
        h.update(key.encode())
        h.update(b"\0")
        _hash_value(h, row.get(key))
        h.update(b"\1")
    return h.hexdigest()[:32]


def _hash_value(h: Any, value: Any) -> None:
    if value is None:
        h.update(b"~")
    elif isinstance(value, (bytes, bytearray)):
        h.update(b"b" + hashlib.sha256(value).digest())
    elif isinstance(value, (str, pathlib.Path)):
        h.update(b"s" + str(value).encode("utf-8", "surrogatepass"))  # undecodable file names hash too
    elif isinstance(value, (list, tuple)):
        h.update(b"l%d" % len(value))
        for v in value:
            _hash_value(h, v)
    elif type(value).__module__ == "numpy":
        h.update(b"n" + np.ascontiguousarray(value).tobytes())
    elif hasattr(value, "tobytes"):  # PIL image
        h.update(b"p" + str(getattr(value, "size", "")).encode() + hashlib.sha256(value.tobytes()).digest())
    else:
        h.update(b"r" + repr(value).encode())


@contextlib.contextmanager
def translating(translate: Callable[[Exception, str], BaseException], what: str) -> Iterator[None]:
    """Run driver calls, raising their errors as ours: ``translate(exc, what)`` gives our error
    (``raise ours from exc``), or the exception itself to let it through unchanged."""
    try:
        yield
    except Exception as exc:
        ours = translate(exc, what)
        if ours is exc:
            raise
        raise ours from exc


def import_optional(module: str, *, package: str, extra: str, purpose: str) -> Any:
    """Import a database's client library, or raise :class:`MissingDependencyError` naming the
    pip package and the extra that installs it (each connector imports its driver this way,
    when first used, so a Milvus user never needs the Weaviate client)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(package, extra, purpose) from exc


def row_uuid(row_id: str) -> str:
    """The UUID of a row id for stores whose ids are UUIDs (Weaviate objects, Qdrant points):
    ``uuid5(NAMESPACE_DNS, row_id)``, which equals ``weaviate.util.generate_uuid5(row_id)``, so
    other tools can find a row; the row id itself is kept with the row."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, str(row_id)))


def media_ref(value: Any) -> str | None:
    """A storable reference for a media source: paths and URIs; None for bytes/pixels/frames."""
    if isinstance(value, pathlib.Path):
        return str(value)
    if isinstance(value, str) and not value.startswith("data:"):
        return value
    return None


def utf8_storable(text: str) -> bool:
    """Whether a string can travel as UTF-8 (no lone surrogates, as from an undecodable file name).

    Databases store UTF-8; a row whose id or text is not is a bad row, and such an id is
    never looked up (it cannot be stored, so it is not there).
    """
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def check_dim(dim: Any, embedder: EmbedderLike | None = None) -> int:
    """Check a store's vector dimension before anything is created, and return it as an int.

    A dim is an integer of at least ``MIN_DIM`` (64, the smallest Matryoshka dimension
    the models were trained for; an attached embedder's own ``min_dim``: 32 for the
    text-only Qwen3-Embedding); with an embedder attached it is also at most the
    embedder's full dimension. Without an embedder (rows bring precomputed vectors)
    any larger dim is accepted.

    Raises:
        InputError: the dim is not an integer in that range; the message gives the range.
    """
    from embedder.embedder import MIN_DIM

    full = int(embedder.dim) if embedder is not None and getattr(embedder, "dim", None) else None
    minimum = int(getattr(embedder, "min_dim", MIN_DIM)) if full is not None else MIN_DIM
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < minimum or (
            full is not None and dim > full):
        allowed = f"from {minimum} to {full} (the model's full dim)" if full else f"of at least {MIN_DIM}"
        raise InputError(f"dim must be an integer {allowed}, got {dim!r}")
    return int(dim)


def vector_problems(vectors: np.ndarray) -> np.ndarray:
    """Which rows of a 2-D array cannot be stored or searched: a boolean mask, True where bad.

    A vector is bad when it holds NaN or infinity, or when it is all zeros (its cosine
    similarity to anything is undefined). One pass of ``max`` and one of ``min`` over the
    array, with no temporary of its size, so a bulk load pays little for it. Use
    :func:`bad_vector_reason` for the reason of one row.
    """
    if vectors.ndim != 2 or vectors.shape[0] == 0 or vectors.shape[1] == 0:
        return np.zeros(vectors.shape[0] if vectors.ndim else 0, dtype=bool)
    hi, lo = vectors.max(axis=1), vectors.min(axis=1)  # NaN propagates through both
    return ~(np.isfinite(hi) & np.isfinite(lo) & ((hi != 0) | (lo != 0)))


def bad_vector_reason(vector: np.ndarray) -> str | None:
    """Why one vector cannot be stored or searched (NaN/infinity, all zeros), or None if it can.

    Example:
        >>> bad_vector_reason(np.zeros(4, dtype=np.float32))
        'vector is all zeros (cosine similarity is undefined)'
    """
    vec = np.asarray(vector)
    if not np.isfinite(vec).all():
        return NONFINITE_VECTOR
    if not vec.any():
        return ZERO_VECTOR
    return None


def normalize_row(obj: Mapping[str, Any], index: int, *, dim: int | None = None,
                  declared_fields: Iterable[str] | None = None) -> Row:
    """Validate a caller's row dict; raise :class:`InputError` naming the index/id.

    ``declared_fields`` are the store's typed fields: they stay in ``Row.fields``, and every
    other top-level key goes into ``Row.metadata`` (an InputError when metadata already has
    that key). ``None`` (a caller that does not know the store) keeps every extra key in
    ``Row.fields`` as given.
    """
    if not isinstance(obj, (dict, Mapping)):
        raise InputError(f"row must be a dict, got {type(obj).__name__}", index=index)
    rid = obj.get("id")
    if rid is None or rid == "":
        rid = content_id(obj)
    elif not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise InputError(f"id must be a string or an integer, got {type(rid).__name__}", index=index)
    rid = str(rid)
    text = obj.get("text")
    if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
        text = "".join(text)
    if text is not None and not isinstance(text, str):
        raise InputError(f"text must be a string, got {type(text).__name__}", index=index, item_id=rid)
    image, video = obj.get("image"), obj.get("video")
    vector = obj.get("vector")
    if vector is not None:
        try:
            vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InputError(f"vector is not a list of numbers: {exc}", index=index, item_id=rid) from exc
        if dim is not None and vector.shape[0] != dim:
            raise InputError(f"vector has {vector.shape[0]} dims, the store has {dim}", index=index, item_id=rid)
        # Finiteness and zeros are checked per batch in embed_rows (one pass instead of one per row).
    elif text is None and image is None and video is None:
        raise InputError("row has no text, image, video or vector", index=index, item_id=rid)
    metadata = obj.get("metadata") or {}
    if not isinstance(metadata, dict) and not isinstance(metadata, Mapping):
        raise InputError(f"metadata must be a dict, got {type(metadata).__name__}", index=index, item_id=rid)
    if metadata:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise InputError(f"metadata is not JSON-serialisable: {exc}", index=index, item_id=rid) from exc
    extra = {} if obj.keys() <= ROW_KEYS else {k: v for k, v in obj.items() if k not in ROW_KEYS}
    metadata = dict(metadata)
    if extra and declared_fields is not None:
        # The field policy of every store: declared fields are typed columns/properties,
        # every other top-level key goes into metadata.
        declared = declared_fields if isinstance(declared_fields, (set, frozenset)) else set(declared_fields)
        undeclared = [k for k in extra if k not in declared]
        if undeclared:
            clash = sorted((str(k) for k in undeclared if k in metadata))
            if clash:
                raise InputError(f"undeclared field(s) {clash} go into metadata, which already has "
                                 f"{'this key' if len(clash) == 1 else 'these keys'}; declared fields are "
                                 f"{sorted(declared)}", index=index, item_id=rid)
            moved = {k: extra.pop(k) for k in undeclared}
            try:
                json.dumps(moved)
            except (TypeError, ValueError) as exc:
                raise InputError(f"undeclared field(s) {sorted(map(str, moved))} go into metadata and are not "
                                 f"JSON-serialisable: {exc}", index=index, item_id=rid) from exc
            metadata.update(moved)
    raw_text = obj.get("text")
    kinds = (raw_text is not None) + (image is not None) + (video is not None)
    modality = ("vl" if kinds > 1 else "text" if raw_text is not None else "image" if image is not None
                else "video" if video is not None else "vector")
    media = media_ref(video) if video is not None else media_ref(image) if image is not None else None
    return Row(id=rid, text=text, image=image, video=video, media=media, modality=modality, vector=vector,
               metadata=metadata, fields=extra, instruction=obj.get("instruction"))


def document_item(fields: Mapping[str, Any], *, text_field: str = "text", media_field: str = "media",
                  modality_field: str = "modality") -> dict:
    """Turn stored fields back into a document item for the reranker."""
    item: dict[str, Any] = {}
    text = fields.get(text_field)
    if text:
        item["text"] = text
    media = fields.get(media_field)
    if media:
        item["video" if fields.get(modality_field) == "video" or _is_video_ref(media) else "image"] = media
    return item


def _is_video_ref(media: Any) -> bool:
    """A stored reference to a video file, or to a window of one (``talk.mp4#t=25,55``): a
    captioned video is a fused (``vl``) row, and its media is still a video."""
    return isinstance(media, str) and media.split("#t=")[0].lower().endswith(
        (".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"))

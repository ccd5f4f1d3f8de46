"""The embedder contract: what every embedder and reranker offers, checked in one place.

:class:`EmbedderLike` and :class:`RerankerLike` are the protocols connectors type their
``embedder`` / ``rerank`` arguments with; :class:`~embedder.Embedder` and
:class:`~embedder.RemoteEmbedder` implement the first, :class:`~embedder.Reranker` and
:class:`~embedder.RemoteReranker` the second. Both pairs derive from the fronts here
(:class:`EmbedderFront`, :class:`RerankerFront`), which check the arguments, dispatch to
the backend's ``_embed`` / ``_score`` and shape the result, so a local and a remote
model refuse the same arguments with the same messages and name a bad item the same way.

Nothing here imports torch.

Example:
    >>> def index(emb: EmbedderLike, texts: list[str]) -> None:   # doctest: +SKIP
    ...     vectors = emb.embed_documents(texts, dim=512)           # numpy.ndarray
    ...     result = emb.embed_documents(texts, on_error="skip")    # EmbedResult
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, Sequence, overload, runtime_checkable

import numpy as np

from .errors import InputError

MIN_DIM = 64  # the smallest Matryoshka dimension
DEFAULT_QUERY_INSTRUCTION = "Retrieve images, videos or texts relevant to the user's query."
ON_ERROR = ("raise", "skip")
OnError = Literal["raise", "skip"]


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class EmbedResult:
    """Result of ``embed(..., on_error="skip")``.

    Attributes:
        vectors: float32 array (number of good items, dim), L2-normalised.
        indices: input index of each row of ``vectors``.
        errors: ``(index, reason)`` for each item that failed.
    """

    vectors: np.ndarray
    indices: list[int] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


@dataclass(frozen=True)
class ScoreResult:
    """Result of ``score(..., on_error="skip")``.

    Attributes:
        scores: float32 array with one score per document; NaN for a failed one.
        errors: ``(document index, reason)`` for each document that failed.
    """

    scores: np.ndarray
    errors: list[tuple[int, str]] = field(default_factory=list)


def ranked(scores: Any, *, top_k: int | None = None) -> list[tuple[int, float]]:
    """``(index, score)`` best first (stable for ties), failed (NaN) documents left out."""
    if isinstance(scores, ScoreResult):
        scores = scores.scores
    order = [i for i in np.argsort(-np.nan_to_num(scores, nan=-1.0), kind="stable") if not np.isnan(scores[i])]
    return [(int(i), float(scores[i])) for i in order[:top_k]]


# ---------------------------------------------------------------------------- argument checks
def check_on_error(on_error: Any) -> str:
    """``"raise"`` or ``"skip"``, else :class:`InputError` naming the value."""
    if on_error not in ON_ERROR:
        raise InputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    return on_error


def check_items(items: Any, what: str = "items") -> Sequence[Any]:
    """A sized sequence of items (a lone string or dict is refused: wrap it in a list)."""
    if isinstance(items, (str, bytes, dict)) or not hasattr(items, "__len__") or not hasattr(items, "__getitem__"):
        one = what[:-1] if what.endswith("s") else what
        raise InputError(f"{what} must be a list (wrap a single {one} in a list)")
    return items


def check_dim(dim: Any, full: int, minimum: int = MIN_DIM) -> int:
    """``dim`` as an int in ``minimum..full`` (None: ``full``); the minimum is the model's
    (64 for the VL models, 32 for the text ones)."""
    if dim is None:
        return int(full)
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not minimum <= dim <= full:
        raise InputError(f"dim must be an integer from {minimum} to {full}, got {dim!r}")
    return int(dim)


def check_instruction(instruction: Any) -> str | None:
    """A task instruction is a string or None."""
    if instruction is not None and not isinstance(instruction, str):
        raise InputError(f"instruction must be a string or None, got {type(instruction).__name__}")
    return instruction


def check_batch_size(batch_size: Any) -> int | None:
    """None (no cap) or a positive integer."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise InputError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return int(batch_size)


# ---------------------------------------------------------------------------- error attribution
def as_input_error(exc: BaseException, index: int) -> InputError:
    """Attribute any preprocessing failure to the caller's item index.

    An unexpected exception keeps its type and message; one without a message (a bare
    ``AssertionError``) is described by where it was raised, never as an empty reason.
    """
    if isinstance(exc, InputError):
        return exc.at(index)
    message = str(exc).strip()
    if not message:
        import traceback

        frames = traceback.extract_tb(exc.__traceback__)
        where = f"{os.path.basename(frames[-1].filename)}:{frames[-1].lineno} in {frames[-1].name}" if frames else "?"
        message = f"internal error while preparing the item (raised at {where}, no message)"
    return InputError(f"{type(exc).__name__}: {message}", index=index)


def document_error(index: int, reason: str) -> InputError:
    """A reranker's bad document: ``document 3: <reason>``, with ``index`` and ``reason`` set."""
    err = InputError(f"document {index}: {reason}")
    err.index, err.reason = index, reason
    return err


def query_error(reason: str) -> InputError:
    """A reranker's bad query: ``query: <reason>``."""
    return InputError(f"query: {reason}")


class _ModelDefault(str):
    """``embed_queries`` without an instruction: the model's own default query instruction
    (the VL models' :data:`DEFAULT_QUERY_INSTRUCTION`, the text models' own)."""


_QUERY_DEFAULT = _ModelDefault(DEFAULT_QUERY_INSTRUCTION)


# ---------------------------------------------------------------------------- calls
@dataclass(frozen=True)
class EmbedCall:
    """One checked ``embed`` call, as a backend's ``_embed`` receives it."""

    items: Sequence[Any]
    dim: int
    instruction: str | None
    batch_size: int | None
    on_error: str
    show_progress: bool


@dataclass(frozen=True)
class ScoreCall:
    """One checked ``score`` call, as a backend's ``_score`` receives it."""

    query: Any
    documents: Sequence[Any]
    instruction: str | None
    batch_size: int | None
    on_error: str
    show_progress: bool


class _Closing:
    """``with`` support over an idempotent ``close()``."""

    def close(self) -> None:  # pragma: no cover - every front defines its own
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class EmbedderFront(_Closing):
    """The public half of an embedder: checks, query/document helpers, result shape.

    A backend provides ``dim``, ``name``, ``close()``, ``fingerprint()`` and
    ``_embed(call) -> (vectors, ok, errors)``: a float32 array ``(len(items), call.dim)``
    of L2-normalised rows, a boolean mask of the rows that succeeded, and
    ``(index, reason)`` for the items that failed (with ``on_error="raise"`` it raises
    the first bad item's :class:`InputError` instead).
    """

    dim: Any
    name: Any

    def _embed(self, call: EmbedCall) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
        raise NotImplementedError

    @overload
    def embed(self, items: Sequence[Any], *, dim: int | None = ..., instruction: str | None = ...,
              batch_size: int | None = ..., show_progress: bool = ...,
              on_error: Literal["raise"] = ...) -> np.ndarray: ...

    @overload
    def embed(self, items: Sequence[Any], *, dim: int | None = ..., instruction: str | None = ...,
              batch_size: int | None = ..., show_progress: bool = ...,
              on_error: Literal["skip"]) -> EmbedResult: ...

    def embed(self, items: Sequence[Any], *, dim: int | None = None, instruction: str | None = None,
              batch_size: int | None = None, show_progress: bool = False,
              on_error: str = "raise") -> np.ndarray | EmbedResult:
        """Embed items; one L2-normalised float32 vector per item, in the caller's order.

        Args:
            items: texts, PIL images, or dicts of ``text`` / ``image`` / ``video`` /
                ``instruction`` (several parts give one fused vector).
            dim: Matryoshka dimension, ``self.min_dim`` (64; 32 for a text model)..``self.dim``
                (default: full).
            instruction: task instruction for items that carry none (default
                ``Represent the user's input.``).
            batch_size: optional cap on items per forward pass (remote: per HTTP request).
            show_progress: show a progress bar with rate and ETA.
            on_error: ``"raise"`` raises :class:`InputError` naming the first bad item's index;
                ``"skip"`` returns an :class:`EmbedResult` with the good vectors, their input
                indices and the errors.

        Returns:
            ``numpy.ndarray`` of shape ``(len(items), dim)``, or an :class:`EmbedResult`.

        Raises:
            InputError: a bad argument, or (``on_error="raise"``) a bad item.
            OverloadedError, RemoteError: (remote) the service failed.
        """
        on_error = check_on_error(on_error)
        items = check_items(items)
        call = EmbedCall(items=items, instruction=check_instruction(instruction),
                         batch_size=check_batch_size(batch_size), on_error=on_error,
                         show_progress=bool(show_progress),
                         dim=check_dim(dim, int(self.dim), int(getattr(self, "min_dim", MIN_DIM))))
        if isinstance(call.instruction, _ModelDefault):  # resolved after the checks (a remote model asks its service)
            call = replace(call, instruction=str(getattr(self, "default_query_instruction", call.instruction)))
        vectors, ok, errors = self._embed(call)
        if on_error == "skip":
            good = np.flatnonzero(ok)
            return EmbedResult(vectors=vectors[good], indices=good.tolist(), errors=sorted(errors))
        return vectors

    @overload
    def embed_queries(self, items: Sequence[Any], *, instruction: str | None = ..., dim: int | None = ...,
                      batch_size: int | None = ..., show_progress: bool = ...,
                      on_error: Literal["raise"] = ...) -> np.ndarray: ...

    @overload
    def embed_queries(self, items: Sequence[Any], *, instruction: str | None = ..., dim: int | None = ...,
                      batch_size: int | None = ..., show_progress: bool = ...,
                      on_error: Literal["skip"]) -> EmbedResult: ...

    def embed_queries(self, items: Sequence[Any], *, instruction: str | None = None, dim: int | None = None,
                      **kwargs: Any) -> np.ndarray | EmbedResult:
        """Embed search queries with a task instruction (default: the model's generic retrieval one)."""
        return self.embed(items, dim=dim, instruction=instruction or _QUERY_DEFAULT, **kwargs)

    @overload
    def embed_documents(self, items: Sequence[Any], *, dim: int | None = ..., instruction: str | None = ...,
                        batch_size: int | None = ..., show_progress: bool = ...,
                        on_error: Literal["raise"] = ...) -> np.ndarray: ...

    @overload
    def embed_documents(self, items: Sequence[Any], *, dim: int | None = ..., instruction: str | None = ...,
                        batch_size: int | None = ..., show_progress: bool = ...,
                        on_error: Literal["skip"]) -> EmbedResult: ...

    def embed_documents(self, items: Sequence[Any], *, dim: int | None = None,
                        **kwargs: Any) -> np.ndarray | EmbedResult:
        """Embed documents with the default instruction, as the release does."""
        return self.embed(items, dim=dim, **kwargs)


class RerankerFront(_Closing):
    """The public half of a reranker: checks, result shape and :meth:`rerank`.

    A backend provides ``name``, ``close()`` and ``_score(call) -> (scores, errors)``:
    float32 scores, NaN for a failed document, and ``(document index, reason)`` for each
    failure (with ``on_error="raise"`` it raises :func:`document_error` / :func:`query_error`).
    """

    name: Any

    def _score(self, call: ScoreCall) -> tuple[np.ndarray, list[tuple[int, str]]]:
        raise NotImplementedError

    @overload
    def score(self, query: Any, documents: Sequence[Any], *, instruction: str | None = ...,
              batch_size: int | None = ..., on_error: Literal["raise"] = ...,
              show_progress: bool = ...) -> np.ndarray: ...

    @overload
    def score(self, query: Any, documents: Sequence[Any], *, instruction: str | None = ...,
              batch_size: int | None = ..., on_error: Literal["skip"],
              show_progress: bool = ...) -> ScoreResult: ...

    def score(self, query: Any, documents: Sequence[Any], *, instruction: str | None = None,
              batch_size: int | None = None, on_error: str = "raise",
              show_progress: bool = False) -> np.ndarray | ScoreResult:
        """Relevance of each document to the query, in [0, 1].

        Args:
            query: an item (text, image, video or fused dict).
            documents: items.
            instruction: task instruction (default: the release's retrieval instruction).
            batch_size: optional cap on pairs per forward pass (remote: per HTTP request).
            on_error: ``"raise"``: :class:`InputError` naming the bad document index (the
                query is reported as ``query``); ``"skip"``: a :class:`ScoreResult` whose
                failed documents score NaN and are listed in ``errors``.
            show_progress: progress bar with rate and ETA.

        Returns:
            float32 array of scores, or a :class:`ScoreResult` for ``on_error="skip"``.
        """
        on_error = check_on_error(on_error)
        call = ScoreCall(query=query, documents=check_items(documents, "documents"),
                         instruction=check_instruction(instruction), batch_size=check_batch_size(batch_size),
                         on_error=on_error, show_progress=bool(show_progress))
        scores, errors = self._score(call)
        if on_error == "skip":
            return ScoreResult(scores=scores, errors=sorted(errors))
        return scores

    def rerank(self, query: Any, documents: Sequence[Any], *, top_k: int | None = None,
               instruction: str | None = None, **kwargs: Any) -> list[tuple[int, float]]:
        """``(document index, score)`` pairs, best first, at most ``top_k`` of them (failed ones left out)."""
        return ranked(self.score(query, documents, instruction=instruction, **kwargs), top_k=top_k)


# ---------------------------------------------------------------------------- protocols
class _StaticProtocolMeta(type(Protocol)):  # type: ignore[misc]
    """``isinstance`` looks members up statically (as Python 3.12 does), so it never runs a
    property: ``RemoteEmbedder.dim`` asks the service, and a check must not call it."""

    def __instancecheck__(cls, instance: Any) -> bool:
        members = _PROTOCOL_MEMBERS.get(cls)
        if members is None:
            return super().__instancecheck__(instance)
        missing = object()
        return all(inspect.getattr_static(instance, m, missing) is not missing for m in members)


@runtime_checkable
class EmbedderLike(Protocol, metaclass=_StaticProtocolMeta):
    """What connectors need of an embedder (local :class:`~embedder.Embedder` or
    :class:`~embedder.RemoteEmbedder`). ``isinstance(x, EmbedderLike)`` checks the members exist."""

    @property
    def dim(self) -> int:
        """The full embedding dimension."""

    @property
    def name(self) -> str:
        """The model's id or path, as given."""

    @overload
    def embed(self, items: Sequence[Any], *, dim: int | None = ..., instruction: str | None = ...,
              batch_size: int | None = ..., show_progress: bool = ...,
              on_error: Literal["raise"] = ...) -> np.ndarray: ...

    @overload
    def embed(self, items: Sequence[Any], *, dim: int | None = ..., instruction: str | None = ...,
              batch_size: int | None = ..., show_progress: bool = ...,
              on_error: Literal["skip"]) -> EmbedResult: ...

    @overload
    def embed_queries(self, items: Sequence[Any], *, instruction: str | None = ..., dim: int | None = ...,
                      batch_size: int | None = ..., show_progress: bool = ...,
                      on_error: Literal["raise"] = ...) -> np.ndarray: ...

    @overload
    def embed_queries(self, items: Sequence[Any], *, instruction: str | None = ..., dim: int | None = ...,
                      batch_size: int | None = ..., show_progress: bool = ...,
                      on_error: Literal["skip"]) -> EmbedResult: ...

    @overload
    def embed_documents(self, items: Sequence[Any], *, dim: int | None = ..., instruction: str | None = ...,
                        batch_size: int | None = ..., show_progress: bool = ...,
                        on_error: Literal["raise"] = ...) -> np.ndarray: ...

    @overload
    def embed_documents(self, items: Sequence[Any], *, dim: int | None = ..., instruction: str | None = ...,
                        batch_size: int | None = ..., show_progress: bool = ...,
                        on_error: Literal["skip"]) -> EmbedResult: ...

    def fingerprint(self) -> dict[str, Any]:
        """How this embedder makes vectors (:mod:`embedder.fingerprint`)."""

    def close(self) -> None:
        """Release threads / connections. Idempotent."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> None: ...


@runtime_checkable
class RerankerLike(Protocol, metaclass=_StaticProtocolMeta):
    """What connectors need of a reranker (local :class:`~embedder.Reranker` or
    :class:`~embedder.RemoteReranker`)."""

    @property
    def name(self) -> str:
        """The model's id or path, as given."""

    @overload
    def score(self, query: Any, documents: Sequence[Any], *, instruction: str | None = ...,
              batch_size: int | None = ..., on_error: Literal["raise"] = ...,
              show_progress: bool = ...) -> np.ndarray: ...

    @overload
    def score(self, query: Any, documents: Sequence[Any], *, instruction: str | None = ...,
              batch_size: int | None = ..., on_error: Literal["skip"],
              show_progress: bool = ...) -> ScoreResult: ...

    def rerank(self, query: Any, documents: Sequence[Any], *, top_k: int | None = None,
               instruction: str | None = None, **kwargs: Any) -> list[tuple[int, float]]:
        """``(document index, score)`` pairs, best first."""

    def close(self) -> None:
        """Release threads / connections. Idempotent."""

    def __enter__(self) -> Any: ...

    def __exit__(self, *exc: Any) -> None: ...


_PROTOCOL_MEMBERS: dict[type, tuple[str, ...]] = {
    EmbedderLike: ("dim", "name", "embed", "embed_queries", "embed_documents", "fingerprint", "close",
                   "__enter__", "__exit__"),
    RerankerLike: ("name", "score", "rerank", "close", "__enter__", "__exit__"),
}

"""The protocol-independent core of the service: models, batchers, preprocessing and limits.

:class:`Service` owns the loaded models (seen through the operator's
:class:`~embedder.items.LoadOptions`), the preprocessing and parse thread pools, one
:class:`~embedder.service.batcher.DynamicBatcher` per model and the
:class:`~embedder.service.admission.Admission` bounds; the routes in
:mod:`embedder.service.routes` only parse, call :meth:`Service.embed` / :meth:`Service.score`
and shape answers.
"""
from __future__ import annotations

import asyncio
import contextvars
import copy
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import numpy as np

from ..embedder import DEFAULT_QUERY_INSTRUCTION, MIN_DIM, mrl
from ..errors import InputError, LimitError, MissingDependencyError, OverloadedError
from ..model import as_input_error
from ..prompts import DEFAULT_RERANK_INSTRUCTION, IMAGE_PAD_ID
from . import ServiceSettings
from .wire import Limits, TooLarge
from .admission import Admission
from .batcher import BatchError, DynamicBatcher
from .metrics import Metrics

log = logging.getLogger(__name__)

# When the current request must be answered (``time.monotonic()``), set by the route
# handler: the batchers refuse at once (503) work that their queue cannot finish by then.
request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("qvl_request_deadline",
                                                                                default=None)


class HTTPFailure(Exception):
    """An error with its HTTP status and machine-readable code."""

    def __init__(self, status: int, code: str, message: str, *, index: int | None = None,
                 reason: str | None = None, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.index = index
        self.reason = reason
        self.headers = headers or {}
        super().__init__(message)


@dataclasses.dataclass(frozen=True)
class EmbedOutcome:
    """Vectors of the good items (at the requested dim), their indices, errors and token counts."""

    vectors: np.ndarray
    indices: list[int]
    errors: list[tuple[int, str]]
    tokens: int
    image_tokens: int


@dataclasses.dataclass(frozen=True)
class ScoreOutcome:
    """One score per document (NaN for a failed one) and the failures."""

    scores: np.ndarray
    errors: list[tuple[int, str]]


def load_option_values(settings: ServiceSettings, fields: Sequence[str]) -> dict[str, Any]:
    """The :class:`~embedder.items.LoadOptions` values the operator's flags set.

    Raises:
        ValueError: a flag sets a limit that this version's ``LoadOptions`` cannot enforce.
    """
    wanted: dict[str, Any] = {"allow_urls": settings.allow_urls, "allow_private_urls": settings.allow_private_urls,
                              "allow_paths": settings.allow_paths}
    optional = {"max_source_pixels": settings.max_image_pixels, "max_video_pixels": settings.max_video_pixels,
                "url_timeout": settings.url_timeout, "url_min_rate": settings.url_min_rate,
                "max_url_bytes": settings.max_url_bytes, "path_roots": settings.path_roots}
    for name, value in optional.items():
        if value is None:
            continue
        if name not in fields:
            raise ValueError(f"this version cannot enforce {name} (LoadOptions has no such field)")
        wanted[name] = value
    # Optional in LoadOptions: the service also enforces both while parsing.
    if "allow_video" in fields:
        wanted["allow_video"] = settings.allow_video
    if "max_text_chars" in fields:
        wanted["max_text_chars"] = settings.max_text_chars
    return wanted


def _with_load_options(model: Any, settings: ServiceSettings) -> Any:
    """A shallow view of ``model`` whose media loading follows the operator's flags.

    The view shares weights, tokenizer and lock with ``model``; only ``load_options``
    differ, so a caller's Embedder built with ``allow_paths=True`` is not widened
    or mutated by the service.
    """
    fields = [f.name for f in dataclasses.fields(model.load_options)]
    wanted = dataclasses.replace(model.load_options, **load_option_values(settings, fields))
    if model.load_options == wanted:
        return model
    view = copy.copy(model)
    view.load_options = wanted
    return view


def precision(model: Any) -> dict[str, Any]:
    """``dtype`` and ``dtype_reason`` of a local model for ``/meta`` (empty for others, e.g. a remote one)."""
    dtype = getattr(model, "dtype", None)
    return {"dtype": dtype, "dtype_reason": getattr(model, "dtype_reason", None)} if isinstance(dtype, str) else {}


def _over_limit(exc: BaseException) -> bool:
    """True when ``exc`` or what it was raised from is a :class:`~embedder.errors.LimitError`."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, LimitError):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _item_failure(exc: BaseException, index: int, *, document: bool = False) -> InputError:
    """A preprocessing failure as the error of item ``index``: 413 (TooLarge) when a limit refused it."""
    err = as_input_error(exc, index)
    message = f"document {index}: {err.reason}" if document else None
    if _over_limit(exc):
        bad: InputError = TooLarge(err.reason, index=index, code="over_limit")
    else:
        bad = InputError(err.reason, index=index)
    if message is not None:
        bad.args = (message,)
    return bad


class Service:
    """Models, batchers and the protocol-independent operations behind the routes."""

    def __init__(self, settings: ServiceSettings, embedder: Any = None, reranker: Any = None) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.embedder: Any = None
        self.reranker: Any = None
        self._given = (embedder, reranker)
        self._owned: list[Any] = []
        self._pool: ThreadPoolExecutor | None = None
        self._parse_pool: ThreadPoolExecutor | None = None
        self._batchers: dict[str, DynamicBatcher] = {}
        self.ready = False
        self.limits = Limits(max_items=settings.max_items, max_text_chars=settings.max_text_chars,
                               max_frames=settings.max_frames, allow_video=settings.allow_video)
        self.admission = Admission(max_inflight=settings.max_inflight, max_inflight_bytes=settings.max_inflight_bytes,
                                   max_preprocess_queue=settings.max_preprocess_queue,
                                   retry_after=settings.retry_after)
        self.metrics.watch(self.queues, self.gauges)
        self._fingerprint: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Load models if not given, start the preprocessing pool and the model workers."""
        s = self.settings
        embedder, reranker = self._given
        if embedder is None:
            if not s.model:
                raise ValueError("ServiceSettings.model is required when no embedder is given")
            from ..embedder import Embedder

            embedder = Embedder.from_pretrained(s.model, device=s.device, max_batch_tokens=s.max_batch_tokens,
                                                allow_urls=s.allow_urls, allow_paths=s.allow_paths)
            self._owned.append(embedder)
        if reranker is None and s.reranker:
            from ..reranker import Reranker

            reranker = Reranker.from_pretrained(s.reranker, device=s.device, max_batch_tokens=s.max_batch_tokens,
                                                allow_urls=s.allow_urls, allow_paths=s.allow_paths)
            self._owned.append(reranker)
        self.embedder = _with_load_options(embedder, s)
        self.reranker = _with_load_options(reranker, s) if reranker is not None else None
        self._pool = ThreadPoolExecutor(max_workers=s.preprocess_workers, thread_name_prefix="qvl-serve-prep")
        # Bodies are decoded and parsed here, never on the event loop (a slow parse must not stall /health).
        self._parse_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="qvl-serve-parse")
        common = dict(max_batch_items=s.max_batch_items,
                      max_wait_s=s.max_wait_ms / 1000.0, max_queue=s.max_queue, retry_after=s.retry_after,
                      on_batch=self.metrics.observe_batch,
                      on_drop=lambda n: self.metrics.observe_dropped("model", n))
        self._batchers["embed"] = DynamicBatcher(self.embedder.forward, name="embed",
                                                 min_fill=getattr(self.embedder, "min_fill", 0.75),
                                                 max_batch_tokens=self._budget(self.embedder), **common).start()
        if self.reranker is not None:
            self._batchers["rerank"] = DynamicBatcher(self.reranker.forward, name="rerank",
                                                      min_fill=getattr(self.reranker, "min_fill", 0.75),
                                                      max_batch_tokens=self._budget(self.reranker), **common).start()
        self.ready = True
        log.info("serving %s (dim %d)%s", getattr(self.embedder, "name", "embedder"), self.embedder.dim,
                 f" and reranker {self.reranker.name}" if self.reranker is not None else "")

    def stop(self) -> None:
        """Stop the workers, fail queued requests, close what the service loaded. Idempotent."""
        self.ready = False
        for b in self._batchers.values():
            b.stop()
        self._batchers.clear()
        for pool in (self._pool, self._parse_pool):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._parse_pool = None
        for model in self._owned:
            model.close()
        self._owned.clear()

    @property
    def is_ready(self) -> bool:
        return self.ready and all(b.alive for b in self._batchers.values())

    @property
    def model_name(self) -> str:
        return str(getattr(self.embedder, "name", "") or self.settings.model or "qwen3-vl-embedding")

    def queues(self) -> dict[str, tuple[int, int]]:
        return {n: (b.queue_depth, b.max_queue) for n, b in self._batchers.items()}

    def gauges(self) -> dict[str, tuple[str, float]]:
        a = self.admission
        return {"qvl_inflight_requests": ("Requests admitted and not yet answered.", a.inflight),
                "qvl_inflight_body_bytes": ("Request body bytes held by admitted requests.", a.inflight_bytes),
                "qvl_preprocess_items": ("Items queued for or in preprocessing.", a.preprocess_queued)}

    def fingerprint(self) -> dict | None:
        """The embedder's fingerprint (how its vectors are made), computed once; None when it has none."""
        if self._fingerprint is None and hasattr(self.embedder, "fingerprint"):
            self._fingerprint = self.embedder.fingerprint()
        return self._fingerprint

    def meta(self) -> dict:
        """Model, limits and flags for ``GET /meta``; ``fingerprint`` when the embedder has one."""
        s = self.settings
        kind = str(getattr(self.embedder, "kind", "vl-embedding"))
        out = {"model": {"name": self.model_name, "dim": self.embedder.dim, "min_dim": self.min_dim,
                          "type": "qwen3-embedding" if kind == "text-embedding" else "qwen3-vl-embedding",
                          "kind": kind, "query_instruction": self.query_instruction, **precision(self.embedder)},
                "dim": self.embedder.dim,
                "kind": kind,
                "reranker": ({"name": str(getattr(self.reranker, "name", "")),
                              "kind": str(getattr(self.reranker, "kind", "vl-reranker")), **precision(self.reranker)}
                             if self.reranker is not None else None),
                "limits": {"max_items": s.max_items, "max_body_bytes": s.max_body_bytes,
                           "max_text_chars": s.max_text_chars, "max_frames": s.max_frames,
                           "max_image_pixels": self.embedder.load_options.max_source_pixels,
                           "max_video_pixels": getattr(self.embedder.load_options, "max_video_pixels", None),
                           "allow_video": s.allow_video, "max_queue": s.max_queue, "max_inflight": s.max_inflight,
                           "max_inflight_bytes": s.max_inflight_bytes,
                           "max_preprocess_queue": s.max_preprocess_queue, "body_timeout": s.body_timeout,
                           "timeout": s.timeout},
                "default_dim": self.settings.default_dim,
                "route_dims": dict(self.settings.route_dims),
                "allow_urls": self.settings.allow_urls, "allow_paths": self.settings.allow_paths,
                "path_roots": list(self.settings.path_roots) if self.settings.path_roots else None}
        fingerprint = self.fingerprint()
        if fingerprint is not None:
            out["fingerprint"] = fingerprint
        return out

    # ------------------------------------------------------------------ operations
    def _budget(self, model: Any) -> int:
        """Padded tokens per batch: the setting, else the model's own (its device's) default."""
        if self.settings.max_batch_tokens is not None:
            return int(self.settings.max_batch_tokens)
        return int(getattr(model, "max_batch_tokens", None) or 16384)

    @property
    def min_dim(self) -> int:
        """The served embedder's smallest Matryoshka dimension (64; 32 for a text model)."""
        return int(getattr(self.embedder, "min_dim", MIN_DIM))

    @property
    def query_instruction(self) -> str:
        """The served embedder's default query instruction (routes that ask for "a query")."""
        return str(getattr(self.embedder, "default_query_instruction", DEFAULT_QUERY_INSTRUCTION))

    def resolve_dim(self, dim: int | None, route: str) -> int:
        full = int(self.embedder.dim)
        if dim is None:
            dim = self.settings.dim_for(route) or full
            return min(int(dim), full)
        if not self.min_dim <= dim <= full:
            raise InputError(f"dimension must be an integer from {self.min_dim} to {full}, got {dim}")
        return int(dim)

    def _check_count(self, n: int, what: str) -> None:
        if n > self.settings.max_items:
            raise HTTPFailure(413, "too_many_items",
                              f"{n} {what} in one request; the limit is {self.settings.max_items}")

    async def parse(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a parser on the parse pool, off the event loop."""
        if self._parse_pool is None:
            raise OverloadedError("the service is not running", retry_after=self.settings.retry_after)
        return await asyncio.get_running_loop().run_in_executor(self._parse_pool, fn, *args)

    async def _map(self, fn: Callable[..., Any], calls: Sequence[tuple]) -> list[Any]:
        """Run ``fn(*args)`` for each call on the preprocessing pool; exceptions are returned, not raised.

        The calls count against ``max_preprocess_queue`` until they are done (503 when it is
        full); if the request is cancelled (client gone, timeout), calls not yet started are
        dropped and counted in ``qvl_dropped_items_total{stage="preprocess"}``.
        """
        pool = self._pool
        if pool is None:
            raise OverloadedError("the service is not running", retry_after=self.settings.retry_after)
        self.admission.reserve_preprocessing(len(calls))
        futures = []
        try:
            futures = [pool.submit(fn, *args) for args in calls]
            return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures), return_exceptions=True))
        except asyncio.CancelledError:
            self.metrics.observe_dropped("preprocess", sum(1 for f in futures if f.cancel()))
            raise
        finally:
            self.admission.release_preprocessing(len(calls))

    async def embed(self, items: Sequence[Any], *, dim: int, instruction: str | None,
                    on_error: str = "raise") -> EmbedOutcome:
        """Prepare each item, batch them with other requests, return vectors at ``dim``."""
        self._check_count(len(items), "items")
        emb = self.embedder

        def prepare(item: Any, index: int) -> Any:
            return emb.prepare(item, instruction=instruction, index=index)

        results = await self._map(prepare, [(item, i) for i, item in enumerate(items)])
        good: list[tuple[int, Any]] = []
        errors: list[tuple[int, str]] = []
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                if isinstance(r, MissingDependencyError):
                    raise r
                if not isinstance(r, Exception):
                    raise r
                err = _item_failure(r, i)
                if on_error == "raise":
                    raise err from r
                errors.append((i, err.reason))
            else:
                good.append((i, r))
        if not good:
            return EmbedOutcome(np.zeros((0, dim), np.float32), [], errors, 0, 0)
        prepared = [p for _, p in good]
        try:
            full = await self._batchers["embed"].submit(prepared, deadline=request_deadline.get())
        except BatchError as exc:
            raise BatchError(str(exc), position=good[exc.position][0]) from exc
        tokens = sum(p.n_tokens for p in prepared)
        image_tokens = sum(p.input_ids.count(IMAGE_PAD_ID) for p in prepared)
        return EmbedOutcome(mrl(full, dim), [i for i, _ in good], errors, tokens, image_tokens)

    async def score(self, query: Any, documents: Sequence[Any], *, instruction: str | None,
                    on_error: str = "raise") -> ScoreOutcome:
        """Relevance of each document to the query, batched with other requests."""
        if self.reranker is None:
            raise HTTPFailure(501, "no_reranker", "no reranker is loaded; start the service with --reranker")
        self._check_count(len(documents), "documents")
        rr = self.reranker
        instr = rr.resolve_instruction(instruction) if hasattr(rr, "resolve_instruction") else (
            instruction.strip() if instruction and instruction.strip() else DEFAULT_RERANK_INSTRUCTION)
        (q,) = await self._map(rr.prepare_side, [(query,)])
        if isinstance(q, BaseException):
            if not isinstance(q, Exception) or isinstance(q, MissingDependencyError):
                raise q
            err = _item_failure(q, 0)
            if isinstance(err, TooLarge):
                raise TooLarge(f"query: {err.reason}", code=err.code) from q
            raise InputError(f"query: {err.reason}") from q

        def prepare(doc: Any, index: int) -> Any:
            return rr.prepare_pair(q, rr.prepare_side(doc, index), instr)

        results = await self._map(prepare, [(d, i) for i, d in enumerate(documents)])
        good: list[tuple[int, Any]] = []
        errors: list[tuple[int, str]] = []
        for i, r in enumerate(results):
            if isinstance(r, BaseException):
                if not isinstance(r, Exception) or isinstance(r, MissingDependencyError):
                    raise r
                err = _item_failure(r, i, document=True)
                if on_error == "raise":
                    raise err from r
                errors.append((i, err.reason))
            else:
                good.append((i, r))
        scores = np.full(len(documents), np.nan, dtype=np.float32)
        if good:
            try:
                got = await self._batchers["rerank"].submit([p for _, p in good], deadline=request_deadline.get())
            except BatchError as exc:
                raise BatchError(str(exc), position=good[exc.position][0]) from exc
            scores[[i for i, _ in good]] = np.asarray(got, dtype=np.float32).reshape(-1)
        return ScoreOutcome(scores, errors)

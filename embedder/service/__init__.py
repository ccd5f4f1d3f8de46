"""``qvl serve``: one loaded model shared over HTTP, with dynamic batching.

The service runs one :class:`~embedder.Embedder` (and optionally one
:class:`~embedder.Reranker`) behind several wire protocols so that applications,
ETL workers and the databases themselves can share a single model:

* native ``POST /v1/embed`` and ``POST /v1/rerank`` (plus DashScope's request shape);
* OpenAI ``POST /v1/embeddings``;
* Hugging Face TEI ``POST /embed`` and ``POST /rerank``;
* Weaviate module protocols (multi2vec-clip ``/vectorize``, text2vec-transformers
  ``/vectors``, reranker-transformers ``/rerank``, ``/meta``, ``/.well-known/*``);
* Hugging Face TEI's predict route ``POST /`` (what ``huggingface_hub.InferenceClient``
  with ``base_url`` calls);
* ``/health``, ``/ready`` and Prometheus ``/metrics``.

Each protocol family is one FastAPI router with its pydantic request models, in
:mod:`embedder.service.routes`; the protocol-independent work (models, batching,
admission) is :class:`embedder.service.core.Service`. FastAPI, uvicorn and httpx are
imported only when a server or client is built, so importing this package is cheap.

Example:
    >>> from embedder.service import ServiceSettings, create_app   # doctest: +SKIP
    >>> app = create_app(ServiceSettings(model="Qwen/Qwen3-VL-Embedding-2B"))  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["ServiceSettings", "create_app", "ROUTE_NAMES"]

# Route families that may each have their own default MRL dimension (``--route-dim``).
ROUTE_NAMES = ("native", "dashscope", "openai", "tei", "clip", "transformers")


@dataclass(frozen=True)
class ServiceSettings:
    """Everything the service needs, read once by the CLI and passed down.

    Attributes:
        model: embedding checkpoint (local directory or hub id); None when an
            :class:`~embedder.Embedder` is passed to :func:`create_app`.
        reranker: reranker checkpoint, optional.
        host: interface to bind (``127.0.0.1`` unless the operator says otherwise).
        port: TCP port.
        api_key: when set, model routes require ``Authorization: Bearer <api_key>``.
        allow_urls: let items name ``http(s)://`` media (off: SSRF).
        allow_private_urls: with ``allow_urls``, also fetch from loopback, private and
            link-local addresses (off: internal services stay out of reach).
        allow_paths: let items name files on the server (off: file disclosure).
        path_roots: with ``allow_paths``, only files whose real path (links resolved) is
            inside one of these folders are read (None: any file the server can read).
        default_dim: MRL dimension for requests that give none (None: full size).
        route_dims: per route family (see :data:`ROUTE_NAMES`) default dimension,
            overriding ``default_dim``; e.g. ``{"clip": 512}`` for Weaviate's
            multi2vec-clip, whose requests carry no dimension.
        max_batch_tokens: padded tokens per forward pass (None: 4096 on CPU, 16384 on GPU).
        max_batch_items: items per forward pass.
        max_wait_ms: how long the worker waits for more requests before running a
            batch that is not full.
        max_queue: items waiting for the model before requests are refused with 503.
        max_items: items (or documents) per request (413 above).
        max_body_bytes: request body limit (413 above, refused from ``Content-Length``
            before reading, or as soon as a streamed body passes it).
        max_text_chars: characters of text in one item, instruction included (413
            above, before tokenising).
        max_frames: frames in one video given as a frame list (413 above).
        max_image_pixels: refuse an image whose header announces more pixels, before
            decoding it (None: the library's default, ``LoadOptions.max_source_pixels``).
        max_video_pixels: refuse a video whose width x height x frames passes this,
            before decoding it (None: the library's default).
        url_timeout: with ``allow_urls``, total seconds for one URL fetch (None: the
            library's default, ``LoadOptions.url_timeout``).
        url_min_rate: with ``allow_urls``, slowest average transfer in bytes/s accepted
            (None: the library's default).
        max_url_bytes: with ``allow_urls``, largest body fetched from a URL (None: the
            library's default).
        allow_video: accept video items at all (``--no-video`` switches decoding of
            untrusted video off).
        max_inflight: requests admitted at once (reading, parsing, preprocessing or
            waiting for the model); one more is answered 503 at once.
        max_inflight_bytes: request body bytes held at once across requests (503 above).
        max_preprocess_queue: items waiting for a preprocessing thread (503 above).
        body_timeout: seconds a client may take to send its body (408 after).
        timeout: seconds a request may take, preprocessing included (504 after).
        device: torch device for models the service loads itself.
        preprocess_workers: threads decoding and tokenising items.
        retry_after: seconds suggested to clients in ``Retry-After`` on 503.
    """

    model: str | None = None
    reranker: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = field(default=None, repr=False)
    allow_urls: bool = False
    allow_private_urls: bool = False
    allow_paths: bool = False
    path_roots: tuple[str, ...] | None = None
    default_dim: int | None = None
    route_dims: Mapping[str, int] = field(default_factory=dict)
    max_batch_tokens: int | None = None
    max_batch_items: int = 64
    max_wait_ms: float = 5.0
    max_queue: int = 1024
    max_items: int = 256
    max_body_bytes: int = 32 * 1024 * 1024
    max_text_chars: int = 327_680
    max_frames: int = 768
    max_image_pixels: int | None = None
    max_video_pixels: int | None = None
    url_timeout: float | None = None
    url_min_rate: int | None = None
    max_url_bytes: int | None = None
    allow_video: bool = True
    max_inflight: int = 32
    max_inflight_bytes: int = 256 * 1024 * 1024
    max_preprocess_queue: int = 1024
    body_timeout: float = 60.0
    timeout: float = 120.0
    device: str = "auto"
    preprocess_workers: int = 2
    retry_after: float = 1.0

    def __post_init__(self) -> None:
        unknown = set(self.route_dims) - set(ROUTE_NAMES)
        if unknown:
            raise ValueError(f"unknown route(s) {sorted(unknown)} in route_dims; valid: {list(ROUTE_NAMES)}")
        for name, value in (("max_batch_tokens", 1 if self.max_batch_tokens is None else self.max_batch_tokens),
                            ("max_batch_items", self.max_batch_items),
                            ("max_queue", self.max_queue), ("max_items", self.max_items),
                            ("max_body_bytes", self.max_body_bytes), ("preprocess_workers", self.preprocess_workers),
                            ("max_text_chars", self.max_text_chars), ("max_frames", self.max_frames),
                            ("max_inflight", self.max_inflight), ("max_inflight_bytes", self.max_inflight_bytes),
                            ("max_preprocess_queue", self.max_preprocess_queue),
                            ("max_image_pixels", 1 if self.max_image_pixels is None else self.max_image_pixels),
                            ("max_video_pixels", 1 if self.max_video_pixels is None else self.max_video_pixels),
                            ("max_url_bytes", 1 if self.max_url_bytes is None else self.max_url_bytes),
                            ("url_min_rate", 1 if self.url_min_rate is None else self.url_min_rate),
                            ("url_timeout", 1 if self.url_timeout is None else self.url_timeout)):
            if int(value) <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        for name, seconds in (("timeout", self.timeout), ("body_timeout", self.body_timeout)):
            if seconds <= 0:
                raise ValueError(f"{name} must be positive, got {seconds}")

    def dim_for(self, route: str) -> int | None:
        """Default dimension of a route family (None: the model's full size)."""
        return self.route_dims.get(route, self.default_dim)


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'embedder.service' has no attribute {name!r}")

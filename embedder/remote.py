"""Clients of ``qvl serve`` with exactly the :class:`~embedder.Embedder` / :class:`~embedder.Reranker` interface.

Anything that accepts a local embedder accepts a :class:`RemoteEmbedder`: the same
``embed`` / ``embed_queries`` / ``embed_documents`` / ``dim`` (and ``score`` /
``rerank`` for :class:`RemoteReranker`), the same errors, the same vectors.

* Local media (file paths, :class:`pathlib.Path`, PIL images, bytes, numpy arrays,
  video files and frame lists) are read here and sent as base64 ``data:`` URIs; URLs
  and ``data:`` URIs are sent as they are (the server fetches URLs only when started
  with ``--allow-urls``). Pass ``server_paths=True`` to send path strings unread, for
  a server started with ``--allow-paths`` that sees the same files.
* Large calls are split by item count and by request size; vectors travel as base64
  float32, so they are bit-identical to the server's.
* 503 (service busy), 504, timeouts and refused connections are retried with
  exponential backoff (honouring ``Retry-After``); then :class:`~embedder.errors.OverloadedError`
  (503) or :class:`~embedder.errors.RemoteError`. A 413 (a request beyond the
  service's limits) is not retried: it raises :class:`~embedder.errors.RemoteError`
  naming the limit.
* Nothing is read from the environment: the key is what you pass (the ``qvl`` command
  passes ``--api-key`` / ``QVL_API_KEY``), and proxy variables are ignored (pass an
  ``httpx`` ``transport`` to go through a proxy).
* A bad item raises :class:`~embedder.errors.InputError` naming its index in YOUR
  list, wherever the call was split.

httpx is imported when the first client is built.

Example:
    >>> with RemoteEmbedder("http://127.0.0.1:8080") as emb:          # doctest: +SKIP
    ...     vecs = emb.embed(["a cat", {"image": "cat.jpg"}], dim=512)
"""
from __future__ import annotations

import base64
import io
import logging
import os
import pathlib
import random
import threading
import time
from typing import Any, Iterator, Sequence

import numpy as np

from .contracts import (EmbedCall, EmbedderFront, RerankerFront, ScoreCall, document_error, query_error)
from .errors import InputError, MissingDependencyError, OverloadedError, RemoteError
from .items import check_path_root

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_ITEMS = 64
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
_VIDEO_MIME = {".mp4": "video/mp4", ".avi": "video/x-msvideo", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
               ".webm": "video/webm"}


# ---------------------------------------------------------------------------- item encoding
def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _image_mime(data: bytes) -> str:
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return "application/octet-stream"


def _pil_to_uri(img: Any) -> str:
    buf = io.BytesIO()
    if img.mode in ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA"):
        img.save(buf, format="PNG")
        return _data_uri(buf.getvalue(), "image/png")
    img.save(buf, format="TIFF")  # lossless for the other modes (CMYK, YCbCr, F, ...)
    return _data_uri(buf.getvalue(), "image/tiff")


def _describe_ref(source: str) -> str:
    return repr(source if len(source) < 200 else "..." + source[-197:])


def _read_local(path: str, what: str, path_roots: Sequence[str] | None = None) -> bytes:
    check_path_root(path, path_roots, what)
    if not os.path.exists(path):
        raise InputError(f"{what} file not found: {path!r}")
    if not os.path.isfile(path):
        raise InputError(f"{what} path is not a file: {path!r}")
    with open(path, "rb") as fh:
        return fh.read()


def _encode_source(source: Any, what: str, *, server_paths: bool, path_roots: Sequence[str] | None = None) -> str:
    """One image/video source as something the service accepts (a data URI, URL or server path)."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return _pil_to_uri(source)
    if type(source).__module__ == "numpy" and type(source).__name__ == "ndarray":
        from .items import LoadOptions, open_image

        return _pil_to_uri(open_image(source, LoadOptions()))  # the same array rules as the local embedder
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        return _data_uri(data, _image_mime(data) if what == "image" else "application/octet-stream")
    if isinstance(source, pathlib.Path):
        source = str(source)
    if not isinstance(source, str):
        raise InputError(f"unsupported {what} source type {type(source).__name__}")
    lowered = source[:10].lower()
    if source.startswith("data:") or lowered.startswith(("http://", "https://")):
        return source
    if server_paths:
        return source
    if what == "image":
        from .items import LoadOptions, parse_page_ref, render_pdf_page

        page = parse_page_ref(source)
        if page is not None:  # a PDF page (report.pdf#page=3): rendered here, as the local embedder renders it
            return _pil_to_uri(render_pdf_page(*page, options=LoadOptions(
                path_roots=None if path_roots is None else tuple(path_roots))))
    if what == "video":
        from .video import parse_segment_ref

        if parse_segment_ref(source) is not None:
            raise InputError(f"video window {_describe_ref(source)} can only be embedded by a qvl serve that reads "
                             "the file itself (RemoteEmbedder(..., server_paths=True), the service started with "
                             "--allow-paths); or keep one vector per video (qvl ingest --video-segments 0)")
    path = source[7:] if lowered.startswith("file://") else source
    data = _read_local(path, what, path_roots)
    if what == "video":
        return _data_uri(data, _VIDEO_MIME.get(os.path.splitext(path)[1].lower(), "application/octet-stream"))
    return _data_uri(data, _image_mime(data))


def encode_item(item: Any, index: int | None = None, *, server_paths: bool = False,
                path_roots: Sequence[str] | None = None) -> Any:
    """A caller's item (as :class:`~embedder.Embedder` takes it) in the service's wire form.

    ``path_roots`` (None: any file) confines the local paths read here, as
    :attr:`~embedder.items.LoadOptions.path_roots` does for the local embedder.

    Raises:
        InputError: the item is malformed or a local file cannot be read (names ``index``).
    """
    from PIL import Image

    try:
        if isinstance(item, str):
            return item
        if isinstance(item, (Image.Image, bytes, bytearray, pathlib.Path)) or (
                type(item).__module__ == "numpy" and type(item).__name__ == "ndarray"):
            return {"image": _encode_source(item, "image", server_paths=server_paths, path_roots=path_roots)}
        if isinstance(item, dict):
            out = dict(item)
            image = item.get("image")
            if image is not None:
                if isinstance(image, (list, tuple)):
                    out["image"] = [_encode_source(s, "image", server_paths=server_paths, path_roots=path_roots)
                                    for s in image]
                else:
                    out["image"] = _encode_source(image, "image", server_paths=server_paths, path_roots=path_roots)
            video = item.get("video")
            if video is not None:
                if isinstance(video, (list, tuple)):
                    frames = []
                    for j, frame in enumerate(video):
                        try:
                            frames.append(_encode_source(frame, "image", server_paths=server_paths,
                                                         path_roots=path_roots))
                        except InputError as exc:
                            raise InputError(f"video frame {j}: {exc.reason}") from exc
                    out["video"] = frames
                else:
                    out["video"] = _encode_source(video, "video", server_paths=server_paths, path_roots=path_roots)
            if isinstance(out.get("text"), tuple):
                out["text"] = list(out["text"])
            return out
    except InputError as exc:
        raise exc.at(index) if index is not None else exc
    except OSError as exc:
        raise InputError(f"cannot read or encode the item: {exc}", index=index) from exc
    raise InputError(f"unsupported item type {type(item).__name__}; expected str, PIL.Image.Image, bytes, "
                     "pathlib.Path, numpy array or a dict with text/image/video", index=index)


def _wire_size(obj: Any) -> int:
    if isinstance(obj, str):
        return len(obj) + 8
    if isinstance(obj, dict):
        return sum(_wire_size(v) + len(k) + 4 for k, v in obj.items())
    if isinstance(obj, list):
        return sum(_wire_size(v) + 1 for v in obj) + 2
    return 16


def _chunks(sizes: Sequence[int], *, max_items: int, max_bytes: int) -> list[range]:
    out, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        if i > start and (i - start >= max_items or total + size > max_bytes):
            out.append(range(start, i))
            start, total = i, 0
        total += size
    if start < len(sizes):
        out.append(range(start, len(sizes)))
    return out


# ---------------------------------------------------------------------------- HTTP plumbing
class _Http:
    """A pooled httpx client with retries and the service's error translation."""

    def __init__(self, url: str, *, api_key: str | None, timeout: float, retries: int, backoff: float,
                 transport: Any = None) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise MissingDependencyError("httpx", "", "RemoteEmbedder / RemoteReranker") from exc
        self._httpx = httpx
        self.url = url.rstrip("/")
        for suffix in ("/v1/embed", "/v1/rerank", "/v1"):
            if self.url.endswith(suffix):
                self.url = self.url[: -len(suffix)]
                break
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.retries = max(0, int(retries))
        self.backoff = float(backoff)
        # trust_env=False: no proxy, netrc or certificate settings from the environment.
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport,
                                    trust_env=False)
        self._closed = False

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send with retries; return the decoded JSON body or raise a translated error."""
        httpx = self._httpx
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            wait = self.backoff * (2 ** attempt) * (1 + 0.25 * random.random())
            try:
                resp = self._client.request(method, path, json=body)
            except (httpx.TimeoutException, httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                last = RemoteError(f"{method} {self.url}{path} failed: {type(exc).__name__}: {exc}",
                                   code="timeout" if isinstance(exc, httpx.TimeoutException) else "unavailable")
                last.__cause__ = exc
            else:
                if resp.status_code < 400:
                    return resp.json()
                if resp.status_code not in (503, 504):
                    raise _translate(resp, method, path)
                last = _translate(resp, method, path)
                retry_after = resp.headers.get("retry-after", "")
                if retry_after.replace(".", "", 1).isdigit():
                    wait = max(wait, float(retry_after))
            if attempt < self.retries:
                log.debug("%s %s: %s; retrying in %.2f s", method, path, last, wait)
                time.sleep(min(wait, 30.0))
        assert last is not None
        raise last

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._client.close()


def _translate(resp: Any, method: str, path: str) -> Exception:
    """The service's error body -> InputError (bad item), OverloadedError (503) or RemoteError."""
    try:
        body = resp.json()
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        message, code, index, reason = (str(err.get("message", "")), err.get("code"), err.get("index"),
                                        err.get("reason"))
    else:
        message, code, index, reason = (str(err) if err else resp.text[:300]), None, None, None
    status = resp.status_code
    if status == 400 and code == "invalid_input":
        return InputError(reason if reason is not None else message, index=index)
    if status == 413:
        return RemoteError(f"{method} {path}: the service refused the request as too large (HTTP 413): {message} "
                           "(send smaller items, or ask the operator to raise the limit)",
                           status=status, code=code, index=index)
    if status == 503:
        retry = resp.headers.get("retry-after", "1")
        return OverloadedError(f"the embedding service is overloaded: {message}",
                               retry_after=float(retry) if retry.replace(".", "", 1).isdigit() else 1.0)
    return RemoteError(f"{method} {path} -> HTTP {status}: {message}", status=status, code=code, index=index)


class _Remote:
    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_items_per_request: int = DEFAULT_MAX_ITEMS, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
                 retries: int = 3, backoff: float = 0.5, concurrency: int = 2, server_paths: bool = False,
                 path_roots: Sequence[str | os.PathLike] | None = None, transport: Any = None) -> None:
        if max_items_per_request <= 0:
            raise ValueError(f"max_items_per_request must be positive, got {max_items_per_request}")
        self._http = _Http(url, api_key=api_key, timeout=timeout, retries=retries, backoff=backoff,
                           transport=transport)
        self.url = self._http.url
        self.max_items_per_request = int(max_items_per_request)
        self.max_request_bytes = int(max_request_bytes)
        self.concurrency = max(1, int(concurrency))
        self.server_paths = server_paths
        self.path_roots = None if path_roots is None else tuple(
            os.fspath(r) for r in ((path_roots,) if isinstance(path_roots, (str, os.PathLike)) else path_roots))
        self._meta: dict | None = None
        self._lock = threading.Lock()

    def meta(self) -> dict:
        """The service's ``/meta`` (model name, dim, limits), fetched once."""
        with self._lock:
            if self._meta is None:
                self._meta = self._http.request("GET", "/meta")
            return self._meta

    def _limit(self, batch_size: int | None) -> int:
        server = (self.meta().get("limits") or {}).get("max_items") or self.max_items_per_request
        return max(1, min(self.max_items_per_request, int(server), batch_size or self.max_items_per_request))

    def _max_bytes(self) -> int:
        """Request size to split at: ours, and under the service's own body limit."""
        server = (self.meta().get("limits") or {}).get("max_body_bytes")
        if not server:
            return self.max_request_bytes
        return max(1, min(self.max_request_bytes, int(server) * 9 // 10))

    def _map(self, fn: Any, jobs: Sequence[Any], show_progress: bool, desc: str) -> Iterator[Any]:
        """Run ``fn(job)`` for each job, ``concurrency`` at a time, yielding results in order."""
        from tqdm.auto import tqdm

        with tqdm(total=len(jobs), unit="request", disable=not show_progress, desc=desc) as bar:
            if self.concurrency == 1 or len(jobs) <= 1:
                for job in jobs:
                    yield fn(job)
                    bar.update(1)
                return
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="qvl-remote") as pool:
                futures = [pool.submit(fn, job) for job in jobs]
                try:
                    for fut in futures:
                        yield fut.result()
                        bar.update(1)
                finally:
                    for fut in futures:
                        fut.cancel()

    def _encode_all(self, items: Sequence[Any], on_error: str, *,
                    documents: bool = False) -> tuple[list[Any], list[int], list[tuple[int, str]]]:
        """Items in wire form, with their positions in the caller's list and the items that failed."""
        wire: list[Any] = []
        positions: list[int] = []
        errors: list[tuple[int, str]] = []
        for i, item in enumerate(items):
            try:
                wire.append(encode_item(item, i, server_paths=self.server_paths, path_roots=self.path_roots))
                positions.append(i)
            except InputError as exc:
                if on_error == "raise":
                    if documents:
                        raise document_error(i, exc.reason) from exc
                    raise
                errors.append((i, exc.reason))
        return wire, positions, errors

    def _post(self, path: str, body: dict, chunk: range, positions: Sequence[int], *, documents: bool = False) -> dict:
        """POST one chunk; a bad item named by the service is re-attributed to its index in the caller's list."""
        try:
            return self._http.request("POST", path, body)
        except InputError as exc:
            if exc.index is None:
                raise exc from None
            i = positions[chunk.start + exc.index]
            raise (document_error(i, exc.reason) if documents else exc.at(i)) from None

    def close(self) -> None:
        """Close the HTTP connection pool. Idempotent."""
        self._http.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class RemoteEmbedder(_Remote, EmbedderFront):
    """An :class:`~embedder.Embedder` whose model runs in ``qvl serve``.

    Args:
        url: the service's base URL, e.g. ``http://127.0.0.1:8080``.
        api_key: bearer key, when the service was started with ``--api-key``.
        timeout: seconds per HTTP request.
        max_items_per_request: items per request (large calls are split; the
            service's own ``max_items`` is respected too).
        max_request_bytes: approximate request size cap used when splitting.
        retries: extra attempts after a 503/504, a timeout or a refused connection.
        backoff: first retry wait in seconds, doubled each attempt.
        concurrency: requests in flight at once for one large call.
        server_paths: send path strings unread (for ``--allow-paths`` servers)
            instead of reading and uploading the files.
        path_roots: read only local files whose real path (links resolved) is inside one
            of these folders; others raise :class:`~embedder.errors.InputError` (None: any
            file). With ``server_paths`` nothing is read here: the server's
            ``--path-root`` confines the paths it reads.
        transport: an ``httpx`` transport (tests, proxies).

    Example:
        >>> emb = RemoteEmbedder("http://127.0.0.1:8080", api_key="...")    # doctest: +SKIP
        >>> emb.embed_queries(["red shoes"], dim=512).shape                  # doctest: +SKIP
        (1, 512)
    """

    @property
    def dim(self) -> int:
        """Full embedding dimension of the served model."""
        return int(self.meta()["dim"])

    @property
    def name(self) -> str:
        """The served model's name."""
        return str((self.meta().get("model") or {}).get("name", ""))

    @property
    def kind(self) -> str:
        """The served model's kind (``vl-embedding``, ``text-embedding``), per its ``/meta``."""
        return str((self.meta().get("model") or {}).get("kind") or "vl-embedding")

    @property
    def min_dim(self) -> int:
        """The served model's smallest Matryoshka dimension."""
        from .contracts import MIN_DIM

        return int((self.meta().get("model") or {}).get("min_dim") or MIN_DIM)

    @property
    def default_query_instruction(self) -> str:
        """The served model's default query instruction (``embed_queries`` without one)."""
        from .contracts import DEFAULT_QUERY_INSTRUCTION

        return str((self.meta().get("model") or {}).get("query_instruction") or DEFAULT_QUERY_INSTRUCTION)

    def fingerprint(self, *, document_instruction: str | None = None) -> dict[str, Any]:
        """How the served model makes vectors: the service's ``/meta`` ``fingerprint``.

        A service that does not state one gives a fingerprint built from the rest of its
        ``/meta`` (model name and dim; the other fields None, which
        :func:`~embedder.fingerprint.fingerprint_conflicts` does not compare). Same
        ``document_instruction`` argument as :meth:`embedder.Embedder.fingerprint`.
        """
        from .fingerprint import fingerprint_from_meta, make_fingerprint

        out = fingerprint_from_meta(self.meta())
        if document_instruction is not None:
            out["document_instruction"] = make_fingerprint(model="", dim=0, precision=None,
                                                           document_instruction=document_instruction)[
                "document_instruction"]
        return out

    # embed / embed_queries / embed_documents (arguments checked, result shaped) come from
    # EmbedderFront, with the same errors as Embedder's; ``batch_size`` caps the items per
    # HTTP request (the service batches across requests itself).
    def _embed(self, call: EmbedCall) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
        wire, positions, errors = self._encode_all(call.items, call.on_error)
        vectors = np.zeros((len(call.items), call.dim), dtype=np.float32)
        ok = np.zeros(len(call.items), dtype=bool)
        chunks = _chunks([_wire_size(w) for w in wire], max_items=self._limit(call.batch_size),
                         max_bytes=self._max_bytes())

        def send(chunk: range) -> tuple[range, dict]:
            body = {"inputs": [wire[j] for j in chunk], "dimension": call.dim, "instruction": call.instruction,
                    "encoding_format": "base64", "on_error": call.on_error}
            return chunk, self._post("/v1/embed", body, chunk, positions)

        for chunk, answer in self._map(send, chunks, call.show_progress, "embedding"):
            for j, row in zip(chunk, answer["embeddings"]):
                if row is not None:
                    vectors[positions[j]] = np.frombuffer(base64.b64decode(row), dtype="<f4")
                    ok[positions[j]] = True
            for e in answer.get("errors", ()):
                errors.append((positions[chunk.start + int(e["index"])], str(e["message"])))
        return vectors, ok, errors


class RemoteReranker(_Remote, RerankerFront):
    """A :class:`~embedder.Reranker` whose model runs in ``qvl serve`` (started with ``--reranker``).

    Takes the same arguments as :class:`RemoteEmbedder`.

    Example:
        >>> rr = RemoteReranker("http://127.0.0.1:8080")                       # doctest: +SKIP
        >>> rr.rerank("a red car", ["a red car", {"image": "car.jpg"}], top_k=1)  # doctest: +SKIP
        [(0, 0.93)]
    """

    @property
    def name(self) -> str:
        """The served reranker's name ("" when the service has none)."""
        return str((self.meta().get("reranker") or {}).get("name", ""))

    # score / rerank (arguments checked, result shaped) come from RerankerFront, with the
    # same errors as Reranker's.
    def _score(self, call: ScoreCall) -> tuple[np.ndarray, list[tuple[int, str]]]:
        try:
            wire_query = encode_item(call.query, server_paths=self.server_paths, path_roots=self.path_roots)
        except InputError as exc:
            raise query_error(exc.reason) from exc
        wire, positions, errors = self._encode_all(call.documents, call.on_error, documents=True)
        scores = np.full(len(call.documents), np.nan, dtype=np.float32)
        budget = max(1, self._max_bytes() - _wire_size(wire_query))
        chunks = _chunks([_wire_size(w) for w in wire], max_items=self._limit(call.batch_size), max_bytes=budget)

        def send(chunk: range) -> tuple[range, dict]:
            body = {"query": wire_query, "documents": [wire[j] for j in chunk], "instruction": call.instruction,
                    "on_error": call.on_error}
            return chunk, self._post("/v1/rerank", body, chunk, positions, documents=True)

        for chunk, answer in self._map(send, chunks, call.show_progress, "reranking"):
            for r in answer["results"]:
                scores[positions[chunk.start + int(r["index"])]] = float(r["score"])
            for e in answer.get("errors", ()):
                errors.append((positions[chunk.start + int(e["index"])], str(e["message"])))
        return scores, errors

"""The search page's FastAPI application (see :mod:`connectors.ui`).

Routes:

=========================  ==========================================================
``GET /``                  the page (``static/index.html``; ``app.js`` and ``style.css``
                           under ``/static/``)
``GET /api/info``          the collection, its declared fields (for the filter form),
                           whether a reranker is loaded, the upload limit
``POST /api/search``       a JSON query (text, an image as a ``data:`` URI, filter, k,
                           rerank, candidates) -> hits, as ``qvl search --json`` gives them,
                           with a thumbnail URL and a link for each
``GET /thumb?m=REF``       a JPEG thumbnail of a stored media reference (cached)
``GET /media?m=PATH``      the file itself (for the source links)
=========================  ==========================================================

Every error is JSON ``{"error": "one line"}`` with a 4xx status (a 500 names only the
exception's type and message, never a stack trace). Media are served only from the
configured roots (403 otherwise, 404 for a missing file). When a key is set every route needs
it, as HTTP Basic (any user name, the key as password: the browser asks once and sends it
with every request, images included) or ``Authorization: Bearer KEY``.
"""
# no "from __future__ import annotations": FastAPI reads the routes' annotations (Request) at runtime

import asyncio
import base64
import binascii
import hmac
import io
import json
import logging
import os
import time
import urllib.parse
from importlib import resources
from typing import Any, Mapping, Sequence

from embedder.errors import InputError, QVLError

from .media import MediaRefused, Thumbnails, is_url, local_file, split_ref

log = logging.getLogger(__name__)

#: the largest image a query may upload (bytes, decoded)
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: the largest k and candidate count the page asks for
MAX_K = 200
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
_TYPE_NAMES = {str: "str", int: "int", float: "float", bool: "bool"}


class PageError(Exception):
    """A request the page answers with ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _static(name: str) -> str:
    return resources.files("connectors.ui").joinpath("static", name).read_text(encoding="utf-8")


def field_types(store: Any) -> dict[str, str]:
    """The store's declared fields as ``{name: "str" | "int" | "float" | "bool"}``."""
    return {name: _TYPE_NAMES.get(t, "str") for name, t in sorted((store.fields or {}).items())}


def page_filter(flt: Any, fields: Mapping[str, Any]) -> Any:
    """The page's filter as the portable filter: keys are declared fields, the built-in ``text`` /
    ``media`` / ``modality``, or ``metadata.KEY`` for a key of the rows' metadata.

    The portable filter reads any undeclared key as a metadata key; on the page a typo would then
    silently match nothing, so a bare unknown key is an error naming the fields there are.

    Raises:
        PageError: 400 for an unknown field or a malformed filter.
    """
    from connectors.filters import BUILTIN_FIELDS

    known = set(fields) | set(BUILTIN_FIELDS)

    def walk(node: Any) -> Any:
        if not isinstance(node, Mapping):
            raise PageError(400, f"a filter must be a JSON object, got {json.dumps(node)[:80]}")
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("$and", "$or"):
                if not isinstance(value, list):
                    raise PageError(400, f"{key} takes a list of filters")
                out[key] = [walk(sub) for sub in value]
            elif key in known:
                out[key] = value
            elif key.startswith("metadata.") and key[9:] and key[9:] not in known:
                out[key[9:]] = value
            else:
                raise PageError(400, f"unknown filter field {key!r}: this collection's fields are "
                                     f"{sorted(fields) or 'none'}, with {list(BUILTIN_FIELDS)} and "
                                     "'metadata.KEY' for a metadata key")
        return out

    return walk(flt)


def decode_image(data_uri: str, max_bytes: int) -> bytes:
    """The bytes of an uploaded image (a ``data:`` URI), checked to be an image Pillow may open.

    Raises:
        PageError: 413 above ``max_bytes``, 400 for anything that is not a supported image.
    """
    from embedder.items import ALLOWED_IMAGE_FORMATS

    head, sep, payload = data_uri.partition(",")
    if not sep or not head.startswith("data:") or ";base64" not in head:
        raise PageError(400, "the image must be sent as a base64 data: URI")
    if len(payload) > (max_bytes + 2) // 3 * 4 + 4:
        raise PageError(413, f"the image is larger than the {max_bytes // (1024 * 1024)} MB upload limit")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise PageError(400, "the image is not valid base64") from None
    if len(data) > max_bytes:
        raise PageError(413, f"the image is larger than the {max_bytes // (1024 * 1024)} MB upload limit")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=list(ALLOWED_IMAGE_FORMATS)) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise PageError(400, "the uploaded file is not an image (expected one of "
                             f"{', '.join(ALLOWED_IMAGE_FORMATS)})") from None
    return data


def _int(body: Mapping[str, Any], key: str, default: int | None, low: int, high: int) -> int | None:
    value = body.get(key, default)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise PageError(400, f"{key} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise PageError(400, f"{key} must be from {low} to {high}, got {number}")
    return number


class SearchPage:
    """What the routes share: the store, the reranker, the media roots, the thumbnail cache."""

    def __init__(self, store: Any, *, reranker: Any = None, media_roots: Sequence[str] = (),
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.store = store
        self.reranker = reranker
        self.media_roots = tuple(os.path.realpath(os.path.expanduser(r)) for r in media_roots)
        self.max_upload_bytes = max_upload_bytes
        self.thumbnails = Thumbnails(self.media_roots)

    def info(self) -> dict[str, Any]:
        return {"collection": self.store.collection, "backend": getattr(self.store, "backend", ""),
                "fields": field_types(self.store), "rerank": self.reranker is not None,
                "max_upload_bytes": self.max_upload_bytes, "max_k": MAX_K}

    def query_of(self, body: Mapping[str, Any]) -> Any:
        text = body.get("text") or ""
        if not isinstance(text, str):
            raise PageError(400, "text must be a string")
        text = text.strip()
        image = body.get("image")
        if image is not None and not isinstance(image, str):
            raise PageError(400, "image must be a data: URI")
        data = decode_image(image, self.max_upload_bytes) if image else None
        if not text and data is None:
            raise PageError(400, "type a query or add an image")
        if data is None:
            return text
        return {"text": text, "image": data} if text else {"image": data}

    def search(self, body: Any) -> dict[str, Any]:
        """Run one query from the page; the answer's ``hits`` are :func:`connectors.hits.hit_record`
        dicts with ``thumb``, ``link`` and ``where`` added."""
        from connectors.hits import hit_record, where_of

        if not isinstance(body, Mapping):
            raise PageError(400, "the request must be a JSON object")
        query = self.query_of(body)
        k = _int(body, "k", 10, 1, MAX_K)
        kwargs: dict[str, Any] = {}
        flt = body.get("filter")
        if flt:
            kwargs["filter"] = page_filter(flt, self.store.fields)
        if body.get("rerank"):
            if self.reranker is None:
                raise PageError(400, "no reranker is loaded (start qvl ui with --reranker)")
            kwargs["rerank"] = self.reranker
            candidates = _int(body, "candidates", None, k, MAX_K)  # type: ignore[arg-type]
            if candidates is not None:
                kwargs["candidates"] = candidates
        start = time.perf_counter()
        try:
            hits = self.store.search(query, k=k, **kwargs)
        except InputError as exc:
            raise PageError(400, " ".join(str(exc).split())) from None
        elapsed = time.perf_counter() - start
        records = []
        for i, hit in enumerate(hits, 1):
            record = hit_record(i, hit)
            record.update(self.links(record["media"] or ""), where=where_of(record))
            records.append(record)
        return {"hits": records, "elapsed_ms": round(elapsed * 1000, 1)}

    def links(self, media: str) -> dict[str, Any]:
        """The thumbnail URL and the source link of a stored media reference (None when the
        file is outside the roots: the page then shows the reference as text)."""
        if not media:
            return {"thumb": None, "link": None}
        if is_url(media):
            return {"thumb": media if not split_ref(media)[2] else None, "link": media}
        path, fragment, _ = split_ref(media)
        try:
            local_file(path, self.media_roots)
        except MediaRefused as exc:
            return {"thumb": None, "link": None, "media_note": str(exc) if exc.status == 404 else
                    "outside the media folders"}
        quoted = urllib.parse.quote(media, safe="")
        return {"thumb": f"thumb?m={quoted}", "link": f"media?m={urllib.parse.quote(path, safe='')}{fragment}"}


def create_app(store: Any, *, reranker: Any = None, media_roots: Sequence[str] = (), api_key: str | None = None,
               max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Any:
    """The search page over an open store (with its embedder) as a FastAPI app.

    Args:
        store: an open store whose collection exists, with the embedder that made it.
        reranker: a ``Reranker`` / ``RemoteReranker`` for the rerank toggle (None: the toggle is off).
        media_roots: the only folders media files are read from (thumbnails and links).
        api_key: when set, every route needs it (HTTP Basic password or Bearer token).
        max_upload_bytes: the largest query image.

    Raises:
        MissingDependencyError: FastAPI is not installed (extra ``server``).
    """
    from connectors.core import import_optional

    fastapi = import_optional("fastapi", package="fastapi", extra="server", purpose="The search page (qvl ui)")
    from fastapi import Request
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    page = SearchPage(store, reranker=reranker, media_roots=media_roots, max_upload_bytes=max_upload_bytes)
    key = api_key.encode() if api_key else None
    app = fastapi.FastAPI(title="qvl ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.page = page

    def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Any:
        return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))

    def authorised(request: Any) -> bool:
        if key is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                token = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")[2]
            except (binascii.Error, ValueError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(token.strip().encode(), key)

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Any:
        if not authorised(request):
            return error(401, "this page needs the API key (the browser asks for it: any user name, the key "
                              "as password; or send 'Authorization: Bearer KEY')",
                         {"WWW-Authenticate": 'Basic realm="qvl ui", charset="UTF-8"'})
        try:
            return await call_next(request)
        except Exception as exc:  # noqa: BLE001 - one line for the page, the trace in the log only
            log.exception("qvl ui: %s %s failed", request.method, request.url.path)
            return error(500, f"the server failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")

    @app.get("/", response_class=HTMLResponse)
    def index() -> Any:
        return HTMLResponse(_static("index.html"), headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}")
    def static(name: str) -> Any:
        if name not in STATIC_FILES:
            return error(404, f"no static file {name!r}")
        return Response(_static(name), media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})

    @app.get("/api/info")
    def info() -> Any:
        return page.info()

    @app.post("/api/search")
    async def search(request: Request) -> Any:
        limit = page.max_upload_bytes * 4 // 3 + 64 * 1024
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            return error(413, f"the request is larger than the {page.max_upload_bytes // (1024 * 1024)} MB "
                              "upload limit")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return error(413, f"the request is larger than the {page.max_upload_bytes // (1024 * 1024)} MB "
                                  "upload limit")
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks) or b"null")
        except ValueError:
            return error(400, "the request is not valid JSON")
        try:
            return await asyncio.get_running_loop().run_in_executor(None, page.search, body)
        except PageError as exc:
            return error(exc.status, str(exc))
        except QVLError as exc:
            return error(400 if isinstance(exc, InputError) else 503, " ".join(str(exc).split()))

    @app.get("/thumb")
    def thumb(m: str = "", modality: str | None = None) -> Any:
        try:
            data = page.thumbnails.jpeg(m, modality)
        except MediaRefused as exc:
            return error(exc.status, str(exc))
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/media")
    def media(m: str = "") -> Any:
        from fastapi.responses import FileResponse

        try:
            real = local_file(split_ref(m)[0], page.media_roots)
        except MediaRefused as exc:
            return error(exc.status, str(exc))
        return FileResponse(real)

    return app

"""Input items: normalising what callers pass, and loading media safely.

An *item* is what becomes one vector:

* ``str``: a text;
* ``PIL.Image.Image``: an image;
* ``dict`` with any of ``text`` (str or list of str), ``image`` (one source or a list),
  ``video`` (a file source, or a list of frame sources), ``instruction``, and for video
  files ``fps`` (default 1) and ``max_frames`` (default 64), as in the release.
  Several parts in one dict give ONE fused vector.

An image source is a path (``str`` or :class:`pathlib.Path`), ``bytes``, a
``data:image/...;base64,`` URI, a PIL image or a numpy array (HxW or HxWxC, uint8).
URLs are refused unless ``allow_urls=True`` (fetched by :mod:`embedder.urls`); local
paths are refused when ``allow_paths=False`` (the HTTP service's default). Untrusted
image bytes are opened only in the formats of :data:`ALLOWED_IMAGE_FORMATS`.

Sizing follows the release exactly (spec points 7 and 8, see :mod:`embedder.prompts`): the
steps of qwen-vl-utils' ``fetch_image`` (its ``to_rgb`` and ``smart_resize``, PIL's
bicubic resize) on already-opened images; videos are decoded and sized in
:mod:`embedder.video`.

A page of a PDF is an image source too: the path ``report.pdf#page=3`` (1-based, the
PDF open-parameter form browsers understand; ``&dpi=N`` when not rendered at
:data:`DEFAULT_PDF_DPI`) is rendered with pypdfium2 (the ``documents`` extra) at that DPI,
capped so that the page stays within the model's :data:`MAX_PIXELS`
(:func:`render_pdf_page`). Ingest stores that reference, so the reranker and ``qvl search
--html`` see the very page image that was embedded. PDFium is not thread-safe: every
call into it holds :data:`PDFIUM_LOCK`.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import io
import math
import os
import pathlib
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .errors import InputError, LimitError, MissingDependencyError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_FACTOR = 32  # patch 16 x spatial merge 2: one merged visual token covers 32x32 pixels
MIN_PIXELS = 4 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_PIXELS = 1800 * IMAGE_FACTOR * IMAGE_FACTOR
FPS = 1.0
MAX_FRAMES = 64
MAX_ASPECT_RATIO = 200
# The model sees at most MAX_PIXELS = 1,843,200 pixels of an image (1800 visual tokens;
# a video frame at most 786,432). 8192 x 8192 = 67 M source pixels is 36x that, room for
# every current camera (50-64 MP), while one decoded RGB image stays under 200 MB.
# Larger images are refused from their header, before any pixel is decoded.
DEFAULT_MAX_SOURCE_PIXELS = 8192 * 8192
# Pixels decoded for one video: width x height x sampled frames (a file), or the sum over
# distinct frames (a frame list). 4K (3840 x 2160) at the default 64 frames fits.
DEFAULT_MAX_VIDEO_PIXELS = 3840 * 2160 * 64
# Characters of an item's text kept before tokenising: 32 per token of the longest
# prompt (the reranker's 10,240 tokens). See LoadOptions.max_text_chars.
DEFAULT_MAX_TEXT_CHARS = 32 * 10240
DEFAULT_MAX_URL_BYTES = 50 * 1024 * 1024
DEFAULT_URL_TIMEOUT = 30.0
DEFAULT_URL_MIN_RATE = 16 * 1024
# Formats Pillow may open from untrusted bytes and paths: the common raster formats
# DashScope accepts. Everything else Pillow knows is refused, notably EPS/PS (run by
# Ghostscript), PDF, and rarely used decoders (FITS, PSD, SGI, TGA, XBM, ...). Camera
# MPO files open through "JPEG" (Pillow's JPEG opener recognises them).
ALLOWED_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF", "ICO")

# Pillow loads a lazy image (``Image.open`` without ``load()``) in place and is not safe
# when two threads load the same object; caller-supplied images are loaded under this.
_PIL_LOAD_LOCK = threading.Lock()

_ITEM_KEYS = {"text", "image", "video", "instruction", "fps", "max_frames"}

#: pages are rendered at this DPI unless the reference says ``&dpi=N`` (and never above MAX_PIXELS)
DEFAULT_PDF_DPI = 144
#: PDFium (pypdfium2) may be entered by one thread at a time
PDFIUM_LOCK = threading.RLock()
_PAGE_REF = re.compile(r"^(?P<path>.+\.pdf)#page=(?P<page>[1-9][0-9]{0,6})(?:&dpi=(?P<dpi>[1-9][0-9]{0,3}))?$",
                       re.IGNORECASE)


@dataclass(frozen=True)
class LoadOptions:
    """How media may be loaded, and the limits that bound one item's memory and work.

    Attributes:
        allow_urls: fetch ``http(s)://`` sources (off by default: SSRF).
        allow_paths: read local file paths (on for the library, off in the service).
        path_roots: when set, a local path (plain or ``file://``) is read only if its real
            path (symbolic links resolved) lies inside one of these folders' real paths;
            any other path is refused with :class:`~embedder.errors.InputError`. For media
            paths that come from data (a database column, a request), e.g. ``qvl pg worker
            --media-root`` and ``qvl serve --path-root``. None (default): any readable file.
        allow_private_urls: with ``allow_urls``, also fetch from loopback, private and
            link-local addresses (off: keeps internal services out of reach).
        allow_video: accept video items (the service's ``--no-video`` turns it off, so
            that no client bytes reach a video decoder).
        max_source_pixels: refuse an image (or a video frame) whose header announces
            more pixels, before decoding it (default 8192 x 8192; the model uses at most
            1,843,200 pixels of an image).
        max_video_pixels: refuse a video whose pixels to decode (width x height x
            sampled frames; for a frame list the sum over its distinct frames) exceed
            this, before decoding (default 3840 x 2160 x 64: 4K at 64 frames).
        max_text_chars: characters of an item's text (its text parts joined; for the
            reranker, each side) kept before tokenising, so that a huge text costs no
            more than this (default 327,680 = 32 per token of the reranker's 10,240).
            Exact whenever the prompt's kept text tokens end before the cut: the
            tokenizer splits text into pre-tokens (words, single digits, punctuation
            and whitespace runs) and merges only within each, so the tokens of
            everything before the pre-token holding the cut do not depend on what
            follows. A prompt keeps at most 10,240 text tokens and ordinary text
            averages 3-5 characters per token, so its kept tokens end long before the
            cut and are exactly those of the whole text. Otherwise (text averaging
            over 32 characters per token, e.g. huge runs of spaces, or one "word" of
            300,000 letters) the text is tokenised as cut: its last kept tokens can
            differ from those of the whole text.
        max_url_bytes: largest body fetched from a URL.
        url_timeout: total seconds for one URL fetch (connection, redirects, body).
        url_min_rate: slowest average transfer (bytes/s) accepted after the first two
            seconds of a fetch.
        fps: frames per second sampled from video files.
        max_frames: most frames taken from a video file.
    """

    allow_urls: bool = False
    allow_paths: bool = True
    allow_private_urls: bool = False
    allow_video: bool = True
    max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS
    max_video_pixels: int = DEFAULT_MAX_VIDEO_PIXELS
    max_text_chars: int = DEFAULT_MAX_TEXT_CHARS
    max_url_bytes: int = DEFAULT_MAX_URL_BYTES
    url_timeout: float = DEFAULT_URL_TIMEOUT
    url_min_rate: int = DEFAULT_URL_MIN_RATE
    fps: float = FPS
    max_frames: int = MAX_FRAMES
    path_roots: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.path_roots is not None:
            roots = (self.path_roots,) if isinstance(self.path_roots, (str, os.PathLike)) else self.path_roots
            object.__setattr__(self, "path_roots", tuple(os.fspath(r) for r in roots))


def check_path_root(path: str | os.PathLike, roots: Sequence[str | os.PathLike] | None, what: str) -> None:
    """Refuse ``path`` unless its real path lies inside one of ``roots`` (None: no confinement).

    Both sides are resolved with :func:`os.path.realpath`, so a symbolic link inside a root
    that points outside it is refused, and ``..`` cannot climb out.

    Raises:
        InputError: the path is outside every root (the message names the path and the roots).
    """
    if roots is None:
        return
    real = os.path.realpath(os.path.expanduser(os.fspath(path)))
    allowed = [os.path.realpath(os.path.expanduser(os.fspath(r))) for r in roots]
    for root in allowed:
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return
    where = f" (it resolves to {real!r})" if real != os.path.abspath(os.fspath(path)) else ""
    raise InputError(f"{what} path {os.fspath(path)!r}{where} is outside the allowed media folders {allowed}; "
                     "move the file into one of them or allow its folder (--media-root / --path-root)")


def with_permissions(options: LoadOptions | None, *, allow_urls: bool | None = None,
                     allow_paths: bool | None = None) -> LoadOptions:
    """``options`` (default :class:`LoadOptions`) with ``allow_urls`` / ``allow_paths`` set when given."""
    import dataclasses

    options = options or LoadOptions()
    changes = {k: v for k, v in (("allow_urls", allow_urls), ("allow_paths", allow_paths)) if v is not None}
    return dataclasses.replace(options, **changes) if changes else options


@dataclass(frozen=True)
class Item:
    """A normalised item: its parts in the caller's order, media not yet loaded."""

    texts: tuple[str, ...] = ()
    images: tuple[Any, ...] = ()
    videos: tuple[Any, ...] = ()
    instruction: str | None = None
    fps: float | None = None
    max_frames: int | None = None

    @property
    def is_empty(self) -> bool:
        return not (self.texts or self.images or self.videos)

    @property
    def modality(self) -> str:
        """``text``, ``image``, ``video`` or ``vl`` (fused), as DashScope names them."""
        kinds = [k for k, v in (("text", self.texts), ("image", self.images), ("video", self.videos)) if v]
        if len(kinds) == 1:
            return kinds[0]
        return "vl" if kinds else "text"


def normalize_item(obj: Any, index: int | None = None) -> Item:
    """Turn a caller's item into an :class:`Item`; raise :class:`InputError` if malformed."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a core dependency
        Image = None  # type: ignore[assignment]
    if isinstance(obj, Item):
        return obj
    if isinstance(obj, str):
        return Item(texts=(obj,))
    if Image is not None and isinstance(obj, Image.Image):
        return Item(images=(obj,))
    if isinstance(obj, (bytes, bytearray, pathlib.Path)) or _is_ndarray(obj):
        return Item(images=(obj,))
    if isinstance(obj, dict):
        unknown = set(obj) - _ITEM_KEYS
        if unknown:
            raise InputError(
                f"unknown key(s) {sorted(unknown)}; an item dict takes {sorted(_ITEM_KEYS)}", index=index)
        texts = obj.get("text")
        if texts is None:
            texts = ()
        elif isinstance(texts, str):
            texts = (texts,)
        elif isinstance(texts, (list, tuple)) and all(isinstance(t, str) for t in texts):
            texts = tuple(texts)
        else:
            raise InputError(f"'text' must be a string or a list of strings, got {type(texts).__name__}",
                             index=index)
        images = obj.get("image")
        if images is None:
            images = ()
        elif isinstance(images, (list, tuple)):
            images = tuple(images)
        else:
            images = (images,)
        videos = obj.get("video")
        if videos is None:
            videos = ()
        else:
            videos = (videos,)
        instruction = obj.get("instruction")
        if instruction is not None and not isinstance(instruction, str):
            raise InputError(f"'instruction' must be a string, got {type(instruction).__name__}", index=index)
        fps, max_frames = obj.get("fps"), obj.get("max_frames")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 60):
            raise InputError(f"'fps' must be a number in (0, 60], got {fps!r}", index=index)
        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)
                                       or not 4 <= max_frames <= 768):
            raise InputError(f"'max_frames' must be an integer from 4 to 768, got {max_frames!r}", index=index)
        return Item(texts=texts, images=images, videos=videos, instruction=instruction, fps=fps,
                    max_frames=max_frames)
    raise InputError(
        f"unsupported item type {type(obj).__name__}; expected str, PIL.Image.Image, bytes, "
        "pathlib.Path, numpy array or a dict with text/image/video", index=index)


def _is_ndarray(obj: Any) -> bool:
    return type(obj).__module__ == "numpy" and type(obj).__name__ == "ndarray"


def _describe(source: Any) -> str:
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    if isinstance(source, str):
        if source.startswith("data:"):
            return source[:30] + "..."
        return repr(source if len(source) < 200 else source[:200] + "...")
    return type(source).__name__


def read_source_bytes(source: Any, options: LoadOptions, what: str) -> bytes | str:
    """Resolve a str/Path/bytes/data-URI source to bytes, or to a local path (str).

    URLs and paths are checked against ``options`` first.
    """
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    if isinstance(source, pathlib.Path):
        source = str(source)
    if not isinstance(source, str):
        raise InputError(f"unsupported {what} source type {type(source).__name__}")
    if source.startswith("data:"):
        if "base64," not in source[:100]:
            raise InputError(f"{what} data URI must be base64-encoded (data:...;base64,...)")
        try:
            return base64.b64decode(source.split("base64,", 1)[1], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError(f"{what} data URI is not valid base64: {exc}") from exc
    lowered = source[:10].lower()
    if lowered.startswith(("http://", "https://")):
        if not options.allow_urls:
            raise InputError(
                f"{what} URL {_describe(source)} refused: URL fetching is disabled "
                "(pass allow_urls=True, or --allow-urls to the service, to enable it)")
        from .urls import fetch_url

        return fetch_url(source, what, options)
    if "://" in source[:12] and not lowered.startswith("file://"):
        raise InputError(f"unsupported {what} URI scheme in {_describe(source)}")
    path = source[7:] if lowered.startswith("file://") else source
    if not options.allow_paths:
        raise InputError(
            f"{what} path {_describe(source)} refused: reading local paths is disabled "
            "(send the content as base64, or start the service with --allow-paths)")
    check_path_root(path, options.path_roots, what)
    if not os.path.exists(path):
        raise InputError(f"{what} file not found: {path!r}")
    if not os.path.isfile(path):
        raise InputError(f"{what} path is not a file: {path!r}")
    return path


def check_url_host(url: str, *, allow_private: bool) -> None:
    """Refuse URLs whose host resolves to a non-public address (see :mod:`embedder.urls`)."""
    from .urls import check_url_host as check

    check(url, allow_private=allow_private)


def bounded_text(texts: Any, options: LoadOptions) -> str:
    """An item's text parts joined and cut to ``options.max_text_chars`` characters
    before tokenising (see :class:`LoadOptions` for why the kept tokens do not change)."""
    return "".join(texts)[:options.max_text_chars]


def _array_image(arr: Any, options: LoadOptions) -> "Image.Image":
    import numpy as np
    from PIL import Image

    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise InputError(f"image array must be HxW, HxWx3 or HxWx4, got shape {tuple(arr.shape)}")
    _check_pixels((arr.shape[1], arr.shape[0]), options)
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
            arr = arr * 255.0
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def _open_header(source: Any, options: LoadOptions) -> tuple["Image.Image", Any]:
    """Open an encoded image source without decoding its pixels: ``(lazy image, file)``.

    Only :data:`ALLOWED_IMAGE_FORMATS` are tried; the pixel count and aspect ratio are
    checked from the header. The caller closes the file.
    """
    from PIL import Image

    data = read_source_bytes(source, options, "image")
    if isinstance(data, bytes) and not data:
        raise InputError("image is empty (zero bytes)")
    fh = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")  # noqa: SIM115
    try:
        try:
            img = Image.open(fh, formats=list(ALLOWED_IMAGE_FORMATS))
        except Image.DecompressionBombError as exc:
            raise InputError(f"image {_describe(source)} refused before decoding "
                             f"(possible decompression bomb): {exc}") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            size = os.path.getsize(data) if isinstance(data, str) else len(data)
            if size == 0:
                raise InputError(f"image {_describe(source)} is empty (zero bytes)") from exc
            raise InputError(f"cannot identify image {_describe(source)}: not an image in an accepted format "
                             f"({', '.join(ALLOWED_IMAGE_FORMATS)})") from exc
        _check_pixels(img.size, options)
        return img, fh
    except BaseException:
        fh.close()
        raise


def probe_image_size(source: Any, options: LoadOptions) -> tuple[int, int]:
    """``(width, height)`` of an image source from its header (no pixel decoded), checked
    against ``options`` as :func:`open_image` checks it."""
    from PIL import Image

    if isinstance(source, Image.Image):
        _check_pixels(source.size, options)
        return source.size
    if _is_ndarray(source):
        return _array_image(source, options).size
    ref = parse_page_ref(source)
    if ref is not None:
        return _page_size(*ref, options)
    img, fh = _open_header(source, options)
    fh.close()
    return img.size


def open_image(source: Any, options: LoadOptions) -> "Image.Image":
    """Open an image source as a fully decoded PIL image in its own mode.

    The pixel count is checked from the header before any pixel is decoded. A caller's
    lazy PIL image (``Image.open`` without ``load()``) is loaded here, once, under a lock:
    the same object may appear in several items prepared on different threads.
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        _check_pixels(source.size, options)
        with _PIL_LOAD_LOCK:
            try:
                source.load()
            except Exception as exc:  # noqa: BLE001 - any decoder failure is the item's
                raise InputError(f"image {_describe(source)} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        return source
    if _is_ndarray(source):
        return _array_image(source, options)
    ref = parse_page_ref(source)
    if ref is not None:
        return render_pdf_page(ref[0], ref[1], ref[2], options=options)
    img, fh = _open_header(source, options)
    try:
        try:
            img.load()
        except Exception as exc:  # truncated files raise OSError; bombs raise DecompressionBombError
            raise InputError(f"image {_describe(source)} is truncated or corrupt: {exc}") from exc
        return img
    finally:
        fh.close()


def _check_pixels(size: tuple[int, int], options: LoadOptions) -> None:
    w, h = size
    if w <= 0 or h <= 0:
        raise InputError(f"image has no pixels ({w}x{h})")
    if w * h > options.max_source_pixels:
        raise LimitError(
            f"image of {w}x{h} = {w * h} pixels exceeds the limit of {options.max_source_pixels} pixels "
            "(refused before decoding: possible decompression bomb)")
    ratio = max(w, h) / min(w, h)
    if ratio > MAX_ASPECT_RATIO:
        raise InputError(f"image aspect ratio {ratio:.1f} ({w}x{h}) is above the limit of {MAX_ASPECT_RATIO}")


def load_image(source: Any, options: LoadOptions) -> "Image.Image":
    """Open, convert to RGB and smart-resize an image exactly as the release does.

    These are the steps of qwen-vl-utils' ``fetch_image`` (its ``to_rgb``, ``smart_resize``
    at factor 32 within [``MIN_PIXELS``, ``MAX_PIXELS``], PIL's bicubic ``resize`` from the
    full-resolution image), except that an image already in RGB is not copied first
    (``convert("RGB")`` of an RGB image is a copy): the same pixels with one full-size
    copy fewer. Decoding at a reduced size (JPEG ``draft``, ``reduce``) is NOT used: the
    release resizes from full resolution, and a reduced decode changes the pixels.
    """
    from qwen_vl_utils.vision_process import smart_resize, to_rgb

    img = open_image(source, options)
    if img.mode != "RGB":
        img = to_rgb(img)
    width, height = img.size
    try:
        h, w = smart_resize(height, width, factor=IMAGE_FACTOR, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS)
    except ValueError as exc:
        raise InputError(f"image cannot be resized: {exc}") from exc
    return img.resize((w, h))


# --------------------------------------------------------------------------- PDF pages
def page_ref(path: str | os.PathLike, page: int, dpi: int = DEFAULT_PDF_DPI) -> str:
    """The image source for page ``page`` (1-based) of a PDF: ``/abs/report.pdf#page=3`` (``&dpi=N``
    added when ``dpi`` is not :data:`DEFAULT_PDF_DPI`)."""
    ref = f"{os.fspath(path)}#page={int(page)}"
    return ref if int(dpi) == DEFAULT_PDF_DPI else f"{ref}&dpi={int(dpi)}"


def parse_page_ref(source: Any) -> tuple[str, int, int] | None:
    """``(pdf path, page, dpi)`` when ``source`` is a page reference (:func:`page_ref`), else None.

    A string that names an existing file as a whole (a file called ``a.pdf#page=1``) is that file.
    """
    if isinstance(source, pathlib.Path):
        source = str(source)
    if not isinstance(source, str) or "#page=" not in source[-24:].lower():
        return None
    m = _PAGE_REF.match(source[7:] if source[:7].lower() == "file://" else source)
    if m is None or os.path.exists(source):
        return None
    return m.group("path"), int(m.group("page")), int(m.group("dpi") or DEFAULT_PDF_DPI)


def pdf_page_scale(width_pt: float, height_pt: float, dpi: int = DEFAULT_PDF_DPI,
                   max_pixels: int = MAX_PIXELS) -> float:
    """Pixels per PDF point for a page of ``width_pt`` x ``height_pt`` points rendered at ``dpi``,
    lowered so that the rendered page (rounded up, as PDFium does) is within ``max_pixels``."""
    scale = dpi / 72.0
    area = max(width_pt, 1e-6) * max(height_pt, 1e-6)
    if math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > max_pixels:
        scale = math.sqrt(max_pixels / area)
        while scale > 0 and math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > max_pixels:
            scale *= 0.999
    return scale


def import_pdfium() -> Any:
    """pypdfium2, or :class:`~embedder.errors.MissingDependencyError` naming the ``documents`` extra."""
    try:
        import pypdfium2
    except ImportError as exc:
        raise MissingDependencyError("pypdfium2", "documents", "Reading PDF pages") from exc
    return pypdfium2


def _page_path(path: str, options: LoadOptions) -> str:
    if not options.allow_paths:
        raise InputError(f"PDF page {_describe(path)} refused: reading local paths is disabled "
                         "(send the page as an image, or start the service with --allow-paths)")
    check_path_root(path, options.path_roots, "PDF")
    if not os.path.isfile(path):
        raise InputError(f"PDF file not found: {path!r}" if not os.path.exists(path)
                         else f"PDF path is not a file: {path!r}")
    return path


def render_pdf_page(path: str | os.PathLike, page: int, dpi: int = DEFAULT_PDF_DPI, *,
                    max_pixels: int = MAX_PIXELS, options: LoadOptions | None = None) -> "Image.Image":
    """Render page ``page`` (1-based) of a PDF as an RGB image at ``dpi``, within ``max_pixels``.

    Raises:
        InputError: the file is missing, outside the allowed folders, encrypted, corrupt, or
            has no such page; the page cannot be rendered.
        MissingDependencyError: pypdfium2 is not installed (the ``documents`` extra).
    """
    options = options or LoadOptions()
    path = _page_path(os.fspath(path), options)
    pdfium = import_pdfium()
    with _pdf_with_page(path, page) as doc:
        pdf_page = doc[page - 1]
        try:
            width, height = pdf_page.get_size()
            scale = pdf_page_scale(width, height, dpi, max_pixels)
            _check_pixels((max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))), options)
            bitmap = pdf_page.render(scale=scale, fill_color=(255, 255, 255, 255))
            try:
                return bitmap.to_pil().convert("RGB")  # a copy: the bitmap's buffer is freed below
            finally:
                bitmap.close()  # here, under the lock, not by the garbage collector on another thread
        except pdfium.PdfiumError as exc:
            raise InputError(f"cannot render page {page} of PDF {_describe(path)}: {exc}") from exc
        finally:
            pdf_page.close()


@contextlib.contextmanager
def _pdf_with_page(path: str, page: int) -> Iterator[Any]:
    """The open PDF (under the PDFium lock: PDFium is not thread-safe), checked to have ``page``."""
    pdfium = import_pdfium()
    with PDFIUM_LOCK:
        try:
            doc = pdfium.PdfDocument(path)
        except pdfium.PdfiumError as exc:
            raise InputError(f"cannot open PDF {_describe(path)}: {exc}") from exc
        try:
            if not 1 <= page <= len(doc):
                raise InputError(f"PDF {_describe(path)} has {len(doc)} pages, no page {page}")
            yield doc
        finally:
            doc.close()


def _page_size(path: str, page: int, dpi: int, options: LoadOptions) -> tuple[int, int]:
    """The size :func:`render_pdf_page` will give, from the page's dimensions (nothing rendered)."""
    path = _page_path(path, options)
    with _pdf_with_page(path, page) as doc:
        width, height = doc.get_page_size(page - 1)
    scale = pdf_page_scale(width, height, dpi)
    size = (max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale)))
    _check_pixels(size, options)
    return size

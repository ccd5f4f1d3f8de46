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
URLs are refused unless ``allow_urls=True``; local paths are refused when
``allow_paths=False`` (the HTTP service's default).

Sizing follows the release exactly (``../shared/qwen3-vl-spec.md``, points 7 and 8) by
calling qwen-vl-utils' ``fetch_image`` / ``fetch_video`` on already-opened media.
"""
from __future__ import annotations

import base64
import binascii
import io
import os
import pathlib
import tempfile
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from .errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    from PIL import Image

IMAGE_FACTOR = 32  # patch 16 x spatial merge 2: one merged visual token covers 32x32 pixels
MIN_PIXELS = 4 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_PIXELS = 1800 * IMAGE_FACTOR * IMAGE_FACTOR
FPS = 1.0
MAX_FRAMES = 64
FRAME_MAX_PIXELS = 768 * IMAGE_FACTOR * IMAGE_FACTOR
MAX_TOTAL_PIXELS = 10 * FRAME_MAX_PIXELS
FRAME_LIST_FPS = 2.0
MAX_ASPECT_RATIO = 200
DEFAULT_MAX_SOURCE_PIXELS = 178_956_970  # refuse larger images before decoding (PIL's bomb limit)
DEFAULT_MAX_URL_BYTES = 50 * 1024 * 1024

_ITEM_KEYS = {"text", "image", "video", "instruction", "fps", "max_frames"}


@dataclass(frozen=True)
class LoadOptions:
    """How media may be loaded.

    Attributes:
        allow_urls: fetch ``http(s)://`` sources (off by default: SSRF).
        allow_paths: read local file paths (on for the library, off in the service).
        allow_private_urls: with ``allow_urls``, also fetch from loopback, private and
            link-local addresses (off: keeps internal services out of reach).
        max_source_pixels: refuse an image whose header announces more pixels, before
            decoding it (decompression bombs).
        fps: frames per second sampled from video files.
        max_frames: most frames taken from a video.
    """

    allow_urls: bool = False
    allow_paths: bool = True
    allow_private_urls: bool = False
    max_source_pixels: int = DEFAULT_MAX_SOURCE_PIXELS
    fps: float = FPS
    max_frames: int = MAX_FRAMES


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


@dataclass
class LoadedVideo:
    """Frames ready for the video processor, with the timestamp of each frame pair."""

    frames: Any  # torch.Tensor (T, C, H, W), float in [0, 255]
    timestamps: list[float] = field(default_factory=list)


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
        return _fetch_url(source, what, allow_private=options.allow_private_urls)
    if "://" in source[:12] and not lowered.startswith("file://"):
        raise InputError(f"unsupported {what} URI scheme in {_describe(source)}")
    path = source[7:] if lowered.startswith("file://") else source
    if not options.allow_paths:
        raise InputError(
            f"{what} path {_describe(source)} refused: reading local paths is disabled "
            "(send the content as base64, or start the service with --allow-paths)")
    if not os.path.exists(path):
        raise InputError(f"{what} file not found: {path!r}")
    if not os.path.isfile(path):
        raise InputError(f"{what} path is not a file: {path!r}")
    return path


def check_url_host(url: str, *, allow_private: bool) -> None:
    """Refuse URLs whose host resolves to a loopback, private, link-local or reserved address.

    An operator who enables URL fetching exposes the machine's network to its callers;
    this keeps internal services (metadata endpoints, databases, admin pages) out of
    reach unless ``allow_private`` says otherwise.
    """
    import ipaddress
    import socket
    import urllib.parse

    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InputError(f"unsupported URL {url!r}: only http(s) URLs with a host are fetched")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80),
                                   proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise InputError(f"cannot resolve the host of URL {url!r}: {exc}") from exc
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if not ip.is_global:
            raise InputError(
                f"URL {url!r} refused: its host resolves to the non-public address {ip} "
                "(enable allow_private_urls, or --allow-private-urls in the service, to permit it)")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        check_url_host(newurl, allow_private=self.allow_private)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_url(url: str, what: str, *, allow_private: bool = False) -> bytes:
    check_url_host(url, allow_private=allow_private)
    opener = urllib.request.build_opener(_CheckedRedirects(allow_private))
    try:
        with opener.open(url, timeout=30) as resp:  # every redirect is checked too
            data = resp.read(DEFAULT_MAX_URL_BYTES + 1)
    except InputError:
        raise
    except OSError as exc:
        raise InputError(f"cannot fetch {what} URL {url!r}: {exc}") from exc
    if len(data) > DEFAULT_MAX_URL_BYTES:
        raise InputError(f"{what} at {url!r} is larger than {DEFAULT_MAX_URL_BYTES} bytes")
    return data


def open_image(source: Any, options: LoadOptions) -> "Image.Image":
    """Open an image source as a fully decoded PIL image in its own mode.

    The pixel count is checked from the header before any pixel is decoded.
    """
    from PIL import Image

    if isinstance(source, Image.Image):
        img = source
        _check_pixels(img.size, options)
        return img
    if _is_ndarray(source):
        import numpy as np

        arr = source
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
            raise InputError(f"image array must be HxW, HxWx3 or HxWx4, got shape {tuple(arr.shape)}")
        if arr.dtype != np.uint8:
            if np.issubdtype(arr.dtype, np.floating) and arr.size and float(arr.max()) <= 1.0:
                arr = arr * 255.0
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        _check_pixels((arr.shape[1], arr.shape[0]), options)
        return Image.fromarray(arr)
    data = read_source_bytes(source, options, "image")
    fh = io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")  # noqa: SIM115
    try:
        if isinstance(data, bytes) and not data:
            raise InputError("image is empty (zero bytes)")
        try:
            img = Image.open(fh)
        except Image.DecompressionBombError as exc:
            raise InputError(f"image {_describe(source)} refused before decoding "
                             f"(possible decompression bomb): {exc}") from exc
        except (OSError, ValueError, SyntaxError) as exc:
            size = os.path.getsize(data) if isinstance(data, str) else len(data)
            if size == 0:
                raise InputError(f"image {_describe(source)} is empty (zero bytes)") from exc
            raise InputError(f"cannot identify image {_describe(source)}: not a supported image file") from exc
        _check_pixels(img.size, options)
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
        raise InputError(
            f"image of {w}x{h} = {w * h} pixels exceeds the limit of {options.max_source_pixels} pixels "
            "(refused before decoding: possible decompression bomb)")
    ratio = max(w, h) / min(w, h)
    if ratio > MAX_ASPECT_RATIO:
        raise InputError(f"image aspect ratio {ratio:.1f} ({w}x{h}) is above the limit of {MAX_ASPECT_RATIO}")


def load_image(source: Any, options: LoadOptions) -> "Image.Image":
    """Open, convert to RGB and smart-resize an image exactly as the release does."""
    from qwen_vl_utils.vision_process import fetch_image

    img = open_image(source, options)
    try:
        return fetch_image({"image": img, "min_pixels": MIN_PIXELS, "max_pixels": MAX_PIXELS},
                           image_patch_size=16)
    except ValueError as exc:
        raise InputError(f"image cannot be resized: {exc}") from exc


def sample_frame_list(frames: Sequence[Any], num_segments: int = MAX_FRAMES) -> list[Any]:
    """The release's frame subsampling: ``numpy.linspace(0, n-1, num_segments, dtype=int)``.

    Note that fewer than ``num_segments`` frames are repeated up to that count, as in the release.
    """
    import numpy as np

    idx = np.linspace(0, len(frames) - 1, num_segments, dtype=int).tolist()
    return [frames[i] for i in idx]


def pair_timestamps(indices: Sequence[int], fps: float, merge: int = 2) -> list[float]:
    """Timestamp of each temporal patch: the mean of its frames' times (transformers 4.57.x)."""
    idx = list(indices)
    if len(idx) % merge:
        idx.extend(idx[-1] for _ in range(merge - len(idx) % merge))
    times = [i / fps for i in idx]
    return [(times[i] + times[i + merge - 1]) / 2 for i in range(0, len(times), merge)]


def load_video(source: Any, options: LoadOptions) -> LoadedVideo:
    """Load a video file or a list of frames as the release does (spec point 8)."""
    from qwen_vl_utils.vision_process import fetch_video

    if isinstance(source, (list, tuple)):
        if not source:
            raise InputError("video frame list is empty")
        frames = []
        for j, frame in enumerate(sample_frame_list(list(source))):
            try:
                frames.append(open_image(frame, options))
            except InputError as exc:
                raise InputError(f"video frame {j}: {exc.reason}") from exc
        try:
            video, meta = fetch_video({"video": frames, "total_pixels": MAX_TOTAL_PIXELS},
                                      image_patch_size=16, return_video_metadata=True)
        except ValueError as exc:
            raise InputError(f"video frames cannot be resized: {exc}") from exc
        return LoadedVideo(frames=video, timestamps=pair_timestamps(meta["frames_indices"], FRAME_LIST_FPS))

    data = read_source_bytes(source, options, "video")
    if not _video_backend_available():
        raise MissingDependencyError("decord", "video", "Decoding video files")
    tmp = None
    if isinstance(data, bytes):
        if not data:
            raise InputError("video is empty (zero bytes)")
        tmp = tempfile.NamedTemporaryFile(suffix=".mp4", delete=False)  # noqa: SIM115
        tmp.write(data)
        tmp.close()
        path = tmp.name
    else:
        path = data
        if os.path.getsize(path) == 0:
            raise InputError(f"video {path!r} is empty (zero bytes)")
    try:
        import logging

        vlog = logging.getLogger("qwen_vl_utils.vision_process")
        old = vlog.level
        vlog.setLevel(logging.ERROR)  # its fallback warning repeats our own error
        try:
            video, meta = fetch_video({"video": path, "fps": options.fps, "max_frames": options.max_frames},
                                      image_patch_size=16, return_video_metadata=True)
        finally:
            vlog.setLevel(old)
    except (InputError, MissingDependencyError):
        raise
    except Exception as exc:  # decord / torchvision raise many unrelated types
        raise InputError(f"cannot decode video {_describe(source)}: {type(exc).__name__}: {exc}") from exc
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    return LoadedVideo(frames=video, timestamps=pair_timestamps(meta["frames_indices"], float(meta["fps"])))


def _video_backend_available() -> bool:
    import importlib.util

    return any(importlib.util.find_spec(m) is not None for m in ("decord", "torchcodec"))

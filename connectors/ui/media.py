"""Media for the search page: references checked against the operator's roots, thumbnails made and cached.

A stored ``media`` value is a path (``/data/a.png``), a place inside a document
(``/data/r.pdf#page=3``, ``/data/v.mp4#t=25,55``: :mod:`connectors.ingest.documents`) or a URL.
The page never reads a path it was handed blindly: :func:`local_file` resolves it (links and
``..`` included) and refuses it unless it lies inside one of the configured roots
(:func:`embedder.items.check_path_root`, the same rule as ``qvl serve --path-root``). URLs are
left to the browser (the server fetches nothing).

Thumbnails reuse what ``qvl search --html`` draws (:mod:`connectors.hits`: a PDF page, the
frame at a video window's start, a video's first frame) and are kept in a small LRU cache keyed
by the reference and the file's size and modification time.
"""
from __future__ import annotations

import io
import os
import threading
import urllib.parse
from collections import OrderedDict
from typing import Any, Sequence

from embedder.errors import InputError

#: longest side of a thumbnail, in pixels
THUMB_SIZE = 256
#: thumbnails kept in memory (about 10-20 KB each)
CACHE_ENTRIES = 2048
VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}


class MediaRefused(Exception):
    """A media reference the page will not serve: ``status`` 403 (outside the roots) or 404 (no such file)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def split_ref(media: str) -> tuple[str, str, Any]:
    """``(file path, URL fragment, location)`` of a stored reference; ``location`` is
    ``("page", n)``, ``("t", start)`` or None."""
    from embedder.items import parse_page_ref
    from embedder.video import parse_segment_ref

    page, segment = parse_page_ref(media), parse_segment_ref(media)
    if page is not None:
        return page[0], media[media.rfind("#"):].split("&dpi=")[0], ("page", page[1])
    if segment is not None:
        return segment[0], media[media.rfind("#"):], ("t", segment[1])
    return media, "", None


def is_url(media: str) -> bool:
    return media.startswith(("http://", "https://"))


def local_file(path: str, roots: Sequence[str]) -> str:
    """The real path of ``path`` when it is an existing file inside ``roots``.

    Raises:
        MediaRefused: 403 when it is outside every root (or no root is configured), 404 when
            there is no such file.
    """
    if path.startswith("file://"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(path).path)
    if not roots:
        raise MediaRefused(403, "no media folder is configured (start qvl ui with --media-root DIR)")
    if not os.path.isabs(path):
        raise MediaRefused(403, f"media path {path!r} is not absolute; only files inside {list(roots)} are served")
    from embedder.items import check_path_root

    try:
        check_path_root(path, roots, "media")
    except InputError as exc:
        raise MediaRefused(403, str(exc)) from None
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        raise MediaRefused(404, f"media file {path!r} does not exist")
    return real


class Thumbnails:
    """JPEG thumbnails of stored media references, made on demand and cached (thread-safe)."""

    def __init__(self, roots: Sequence[str], *, size: int = THUMB_SIZE, entries: int = CACHE_ENTRIES) -> None:
        self.roots = tuple(roots)
        self.size = size
        self.entries = entries
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def jpeg(self, media: str, modality: str | None = None) -> bytes:
        """The thumbnail of ``media`` as JPEG bytes.

        Raises:
            MediaRefused: the file is outside the roots (403), missing (404), or cannot be
                drawn (404, with the reason).
        """
        path, _, location = split_ref(media)
        real = local_file(path, self.roots)
        st = os.stat(real)
        key = (real, location, modality, st.st_size, st.st_mtime_ns)
        with self._lock:
            data = self._cache.get(key)
            if data is not None:
                self._cache.move_to_end(key)
                self.hits += 1
                return data
            self.misses += 1
        try:
            img = self._draw(real, location, modality)
        except MediaRefused:
            raise
        except Exception as exc:  # noqa: BLE001 - a broken file is a 404 with its reason, not a crash
            raise MediaRefused(404, f"cannot draw {os.path.basename(real)}: {' '.join(str(exc).split())}") from None
        img.thumbnail((self.size, self.size))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        data = buf.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self.entries:
                self._cache.popitem(last=False)
        return data

    def _draw(self, real: str, location: Any, modality: str | None) -> Any:
        from connectors.hits import first_frame, frame_at  # the frames qvl search --html shows

        if location is not None and location[0] == "page":
            from embedder.items import render_pdf_page

            return render_pdf_page(real, location[1], 36)
        video = modality == "video" or os.path.splitext(real)[1].lower() in VIDEO_SUFFIXES
        if location is not None or video:
            import pathlib

            frame = frame_at(pathlib.Path(real), location[1]) if location is not None else \
                first_frame(pathlib.Path(real))
            if frame is None:
                raise MediaRefused(404, "no video decoder (PyAV) to draw a frame; install the 'video' extra")
            return frame
        from PIL import Image

        from embedder.items import ALLOWED_IMAGE_FORMATS

        with Image.open(real, formats=list(ALLOWED_IMAGE_FORMATS)) as opened:
            opened.draft("RGB", (self.size, self.size))  # JPEG: decode at a reduced scale, much faster
            return opened.convert("RGB")

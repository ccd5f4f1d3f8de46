"""Documents, slide decks and long videos as rows: one row per PDF page, one per video window.

* **PDF pages** (:func:`pdf_rows`): each page is one row. Its image is the page reference
  ``/abs/report.pdf#page=3`` (:func:`embedder.items.page_ref`), which the embedder renders
  with pypdfium2 at :attr:`PdfOptions.dpi` within the model's pixel limit, and which is
  what the store keeps: the reranker and ``qvl search --html`` render the same page again.
  In ``fused`` mode (the default) the page's text layer, cut to a token budget, is the
  row's text too; a page without a text layer (a scan) is its image alone. ``image`` mode
  embeds the image only, ``text`` mode the text only (a page without text: its image).
  The fields (in ``metadata``): ``path``, ``doc_id`` (the file's content hash), ``page``
  (1-based), ``pages``, ``title``. A row's id is ``{doc_id}-p{page}``: re-runs are
  idempotent, and an edited file gets new ids.
* **Slide decks** (``.pptx``, ``.ppt``, ``.odp``, ``.key``; :func:`slide_rows`): converted
  to PDF by LibreOffice (``soffice --headless``, a fresh profile, a timeout) into a cache
  folder keyed by the deck's content, then read as PDF pages (``path`` is the deck's).
  Without ``soffice`` on the PATH a deck is a dead letter that says how to install it.
* **Long videos** (:func:`video_rows`): cut into overlapping windows by
  :class:`VideoSegments`; each window is one row whose video is the segment reference
  ``/abs/talk.mp4#t=25,55`` (:func:`embedder.video.segment_ref`), with ``doc_id`` (the
  video's id), ``t_start``, ``t_end``, ``segment`` and ``segments`` in ``metadata``.

Failures are dead letters with a reason and never stop the run: an encrypted, corrupt or
empty PDF is one dead letter; a page whose text cannot be read is one dead letter and the
other pages go on; a page that cannot be rendered fails alone at the embed stage.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any, Iterator

from embedder.errors import InputError, MissingDependencyError
from embedder.items import DEFAULT_PDF_DPI, PDFIUM_LOCK, import_pdfium, page_ref

from .sources import SourceRow

log = logging.getLogger(__name__)

PDF_EXTENSIONS = frozenset({".pdf"})
SLIDE_EXTENSIONS = frozenset({".pptx", ".ppt", ".odp", ".key"})
DOCUMENT_EXTENSIONS = PDF_EXTENSIONS | SLIDE_EXTENSIONS
PDF_MODES = ("fused", "image", "text")
#: characters kept per token of the text budget (English averages about 4 per token)
CHARS_PER_TOKEN = 4
#: a video up to this long is one vector when segments are automatic (64 frames at 1 fps)
AUTO_SINGLE_SECONDS = 64.0
AUTO_WINDOW_SECONDS = 30.0
AUTO_OVERLAP_SECONDS = 5.0
INSTALL_LIBREOFFICE = ("install LibreOffice so that `soffice` is on the PATH (Debian/Ubuntu: apt-get install "
                       "--no-install-recommends libreoffice-impress-nogui; macOS: brew install --cask libreoffice), "
                       "or export the deck to PDF")


@dataclass(frozen=True)
class PdfOptions:
    """How PDF pages and slide decks become rows.

    Attributes:
        mode: ``fused`` (page image + its text), ``image`` or ``text``.
        dpi: render resolution; a page is never rendered above the model's 1,843,200 pixels.
        text_tokens: the page text's budget, kept as ``CHARS_PER_TOKEN`` characters per token
            and cut at a word.
        soffice_timeout: seconds one deck's conversion may take.
        slides_dir: where converted decks are kept (default ``~/.cache/qvl/slides``).
    """

    mode: str = "fused"
    dpi: int = DEFAULT_PDF_DPI
    text_tokens: int = 1024
    soffice_timeout: float = 180.0
    slides_dir: str | None = None

    def __post_init__(self) -> None:
        if self.mode not in PDF_MODES:
            raise InputError(f"PDF mode must be one of {list(PDF_MODES)}, got {self.mode!r}")
        if isinstance(self.dpi, bool) or not isinstance(self.dpi, int) or not 18 <= self.dpi <= 1200:
            raise InputError(f"PDF dpi must be an integer from 18 to 1200, got {self.dpi!r}")
        if self.text_tokens < 1:
            raise InputError(f"the page text budget must be a positive number of tokens, got {self.text_tokens}")


@dataclass(frozen=True)
class VideoSegments:
    """How video files are cut into rows.

    Attributes:
        window: seconds per window; 0 keeps one vector per video; None (automatic) keeps
            one vector for a video up to 64 s (where one vector still takes a frame per
            second) and cuts longer ones into 30 s windows.
        overlap: seconds each window shares with the previous one (None: 5 s, or a sixth of
            a window shorter than 30 s).
    """

    window: float | None = None
    overlap: float | None = None

    def __post_init__(self) -> None:
        if self.window is not None and self.window < 0:
            raise InputError(f"video segments must be 0 (one vector per video) or a positive number of seconds, "
                             f"got {self.window}")
        if self.window and self.overlap is not None and not 0 <= self.overlap < self.window:
            raise InputError(f"the video overlap must be at least 0 and below the window ({self.window} s), "
                             f"got {self.overlap}")

    def windows(self, duration: float) -> list[tuple[float, float]] | None:
        """The windows of a video of ``duration`` seconds, or None for one vector of the whole video."""
        from embedder.video import segment_windows

        if self.window == 0:
            return None
        window = self.window if self.window is not None else AUTO_WINDOW_SECONDS
        overlap = self.overlap if self.overlap is not None else min(AUTO_OVERLAP_SECONDS, window / 6)
        single = window if self.window is not None else AUTO_SINGLE_SECONDS
        if duration <= single:
            return None
        return segment_windows(duration, window, overlap)


def file_digest(path: str | os.PathLike) -> str:
    """The first 16 hex digits of the SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def clip_text(text: str, max_chars: int) -> str:
    """``text`` cut to at most ``max_chars`` characters, at the last whitespace before the cut."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    if text[max_chars].isspace():
        return cut.rstrip()
    space = max(cut.rfind(" "), cut.rfind("\n"))
    return (cut[:space] if space > max_chars // 2 else cut).rstrip()


def _clean(text: str) -> str:
    lines = (" ".join(line.split()) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return "\n".join(line for line in lines if line).replace("\x00", "")


def _open_pdf(pdfium: Any, path: pathlib.Path) -> Any:
    """An open PdfDocument, or InputError with the reason (encrypted, corrupt, empty)."""
    if path.stat().st_size == 0:
        raise InputError("the PDF is empty (zero bytes)")
    with PDFIUM_LOCK:
        try:
            return pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as exc:
            raise InputError(_why_unopenable(path, str(exc))) from exc


def _why_unopenable(path: pathlib.Path, message: str) -> str:
    """Why PDFium refused a file. It refuses a PDF without pages too, with an odd error
    ("Incorrect password", "Success"), so the file itself is looked at."""
    with open(path, "rb") as fh:
        data = fh.read(64 << 20)
    if re.search(rb"/Encrypt\s*\d+\s+\d+\s+R|/Encrypt\s*<<", data):
        return f"the PDF is encrypted: it needs a password to open ({message})"
    if data.startswith(b"%PDF") and re.search(rb"/Type\s*/Pages", data) and re.search(rb"/Count\s+0\b", data) \
            and not re.search(rb"/Type\s*/Page\b", data):
        return "the PDF has no pages"
    return f"the PDF cannot be opened, it is corrupt or not a PDF ({message})"


def pdf_page_count(path: str | os.PathLike) -> int | None:
    """Pages of a PDF, or None when it cannot be opened (a quick look, for progress estimates)."""
    try:
        pdfium = import_pdfium()
        doc = _open_pdf(pdfium, pathlib.Path(path))
    except (InputError, MissingDependencyError, OSError):
        return None
    with PDFIUM_LOCK:
        try:
            return len(doc)
        finally:
            doc.close()


def pdf_rows(path: str | os.PathLike, rel: str, options: PdfOptions = PdfOptions(), *,
             shown_path: str | None = None, doc_id: str | None = None) -> Iterator[SourceRow]:
    """One row per page of the PDF at ``path`` (``rel``: its path relative to the source folder).

    Args:
        path: the PDF file.
        rel: the path stored in ``metadata.path`` and written to the dead letters.
        options: mode, DPI and text budget.
        shown_path: a different location for messages (a deck converted to ``path``).
        doc_id: the document's id (default: the PDF's content hash).

    Yields:
        :class:`SourceRow` per page, or one failed row when the document cannot be read.
    """
    path = pathlib.Path(path).resolve()
    where = shown_path or rel
    try:
        pdfium = import_pdfium()
    except MissingDependencyError as exc:
        yield SourceRow(where, error=str(exc))
        return
    try:
        doc_id = doc_id or file_digest(path)
        doc = _open_pdf(pdfium, path)
    except InputError as exc:
        yield SourceRow(where, error=exc.reason)
        return
    except OSError as exc:
        yield SourceRow(where, error=f"cannot read the PDF: {exc.strerror or exc}")
        return
    try:
        with PDFIUM_LOCK:
            pages = len(doc)
            try:
                title = (doc.get_metadata_value("Title") or "").strip()
            except pdfium.PdfiumError:
                title = ""
        if pages == 0:
            yield SourceRow(where, error="the PDF has no pages")
            return
        title = title or pathlib.Path(rel).stem
        max_chars = options.text_tokens * CHARS_PER_TOKEN
        for number in range(1, pages + 1):
            location = f"{where}#page={number}"
            text = ""
            if options.mode != "image":
                try:
                    text = clip_text(_page_text(pdfium, doc, number - 1), max_chars)
                except pdfium.PdfiumError as exc:
                    yield SourceRow(location, error=f"cannot read the text of page {number} of {pages}: {exc}")
                    continue
            row: dict[str, Any] = {
                "id": f"{doc_id}-p{number}",
                "metadata": {"path": rel, "doc_id": doc_id, "page": number, "pages": pages, "title": title}}
            if options.mode != "text" or not text:
                row["image"] = page_ref(path, number, options.dpi)
            if text:
                row["text"] = text
            yield SourceRow(location, row)
    finally:
        with PDFIUM_LOCK:
            doc.close()


def _page_text(pdfium: Any, doc: Any, index: int) -> str:
    with PDFIUM_LOCK:
        page = doc[index]
        textpage = page.get_textpage()
        try:
            return _clean(textpage.get_text_range())
        finally:
            textpage.close()
            page.close()


# ---------------------------------------------------------------------------- slides
def _slides_dir(options: PdfOptions) -> pathlib.Path:
    if options.slides_dir:
        return pathlib.Path(options.slides_dir).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "qvl" / "slides"


def convert_to_pdf(path: str | os.PathLike, *, out_dir: str | os.PathLike, timeout: float = 180.0) -> pathlib.Path:
    """Convert a slide deck to PDF with LibreOffice; the PDF is ``out_dir/<content hash>.pdf`` (kept for re-runs).

    ``soffice`` runs headless in a fresh temporary profile (so that it never meets a
    running LibreOffice or a locked profile), in its own process group, killed whole
    after ``timeout`` seconds.

    Raises:
        InputError: ``soffice`` is not on the PATH, the conversion failed or timed out.
    """
    src = pathlib.Path(path).resolve()
    out = pathlib.Path(out_dir)
    target = out / f"{file_digest(src)}.pdf"
    if target.is_file() and target.stat().st_size > 0:
        return target
    soffice = shutil.which("soffice") or shutil.which("libreoffice")
    if soffice is None:
        raise InputError(f"converting a slide deck needs LibreOffice: {INSTALL_LIBREOFFICE}")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qvl-soffice-") as tmp:
        profile = pathlib.Path(tmp, "profile").as_uri()
        cmd = [soffice, f"-env:UserInstallation={profile}", "--headless", "--invisible", "--norestore",
               "--nolockcheck", "--nodefault", "--convert-to", "pdf", "--outdir", tmp, str(src)]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise InputError(f"LibreOffice did not convert the deck within {timeout:g} s") from None
        produced = pathlib.Path(tmp, src.stem + ".pdf")
        if proc.returncode != 0 or not produced.is_file() or produced.stat().st_size == 0:
            said = " ".join(output.decode("utf-8", "replace").split())[-300:]
            raise InputError(f"LibreOffice could not convert the deck (exit code {proc.returncode}"
                             f"{': ' + said if said else ''})")
        partial = target.with_suffix(f".{os.getpid()}.part")
        shutil.move(str(produced), partial)
        os.replace(partial, target)
    return target


def slide_rows(path: str | os.PathLike, rel: str, options: PdfOptions = PdfOptions()) -> Iterator[SourceRow]:
    """One row per slide of a deck (converted with :func:`convert_to_pdf`); ``metadata.path`` is the deck's."""
    try:
        pdf = convert_to_pdf(path, out_dir=_slides_dir(options), timeout=options.soffice_timeout)
        doc_id = pdf.stem  # the deck's content hash: a conversion need not give the same bytes twice
    except InputError as exc:
        yield SourceRow(rel, error=exc.reason)
        return
    except OSError as exc:
        yield SourceRow(rel, error=f"cannot convert the deck: {exc.strerror or exc}")
        return
    yield from pdf_rows(pdf, rel, options, shown_path=rel, doc_id=doc_id)


def document_rows(path: str | os.PathLike, rel: str, options: PdfOptions = PdfOptions()) -> Iterator[SourceRow]:
    """:func:`pdf_rows` or :func:`slide_rows`, by the file's suffix."""
    if pathlib.Path(path).suffix.lower() in SLIDE_EXTENSIONS:
        return slide_rows(path, rel, options)
    return pdf_rows(path, rel, options)


# ---------------------------------------------------------------------------- videos
def video_rows(path: str | os.PathLike, rel: str, location: str, segments: VideoSegments,
               base_row: dict[str, Any]) -> Iterator[SourceRow]:
    """The rows of one video file: ``base_row`` as is when it stays one vector, else one per window.

    ``base_row`` is the whole video's row (``video``, maybe a caption ``text``, ``metadata``);
    each window's row has the segment as its video and the same caption. A file that
    cannot be read as a video (or no PyAV) stays one row: embedding it says why.
    """
    if segments.window == 0:
        yield SourceRow(location, base_row)
        return
    from embedder.video import segment_ref, video_info

    try:
        info = video_info(path)
        windows = segments.windows(info.duration) if info.total > 0 and info.fps > 0 else None
    except (InputError, MissingDependencyError) as exc:
        log.debug("%s stays one row: %s", rel, exc)
        windows = None
    if windows is None:
        yield SourceRow(location, base_row)
        return
    try:
        doc_id = file_digest(path)
    except OSError as exc:
        yield SourceRow(location, error=f"cannot read the video: {exc.strerror or exc}")
        return
    for k, (start, end) in enumerate(windows, 1):
        row = dict(base_row)
        row["id"] = f"{doc_id}-t{start:g}-{end:g}"
        row["video"] = segment_ref(pathlib.Path(path).resolve(), start, end)
        row["metadata"] = dict(base_row.get("metadata") or {}, doc_id=doc_id, t_start=start, t_end=end,
                               segment=k, segments=len(windows))
        yield SourceRow(f"{rel}#t={start:g},{end:g}{location[len(rel):]}", row)  # then " (+talk.txt)"

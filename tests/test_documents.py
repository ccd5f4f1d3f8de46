"""Documents, slides and long videos (issue 17): one row per PDF page, one per video window.

Every fixture is made here, offline: PDFs written with fpdf2 (text pages, a drawn chart, an
image-only "scan", a 16:9 deck, a page too thin to embed, an encrypted and a truncated
file, one without pages), an OpenDocument deck written by hand, and long videos encoded
with PyAV at 64x48 and 1 fps. Pages are rendered at 36 DPI where a model embeds them, so
the tiny checkpoint stays quick.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from connectors.ingest.documents import PdfOptions, VideoSegments, slide_rows
from connectors.ingest.sources import folder_rows, open_source
from tests.conftest import make_image, skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
A4 = (595.28, 841.89)  # points


# ============================================================================ fixtures, made offline
def _text_pdf(path: Path, pages: int, *, title: str | None = None, landscape: bool = False) -> None:
    from fpdf import FPDF

    pdf = FPDF(orientation="L" if landscape else "P", format=(190.5, 338.7) if landscape else "A4")
    if title:
        pdf.set_title(title)
    for i in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("helvetica", size=14)
        pdf.multi_cell(0, 10, f"Page {i} talks about topic number {i}. " * 4)
    pdf.output(str(path))


def _chart_pdf(path: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("helvetica", size=16)
    pdf.cell(0, 10, "Revenue by year")
    for j, h in enumerate([30, 50, 80, 40]):
        pdf.set_fill_color(200, 40 * j, 40)
        pdf.rect(30 + j * 30, 150 - h, 20, h, style="F")
    pdf.output(str(path))


def _scan_pdf(path: Path) -> None:
    """A page that is one picture and no text layer, as a scanner makes it."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.image(make_image(200, 280, seed=3), x=10, y=10, w=190)
    pdf.output(str(path))


def _strip_pdf(path: Path) -> None:
    """Three pages, the middle one a 1000 x 4 mm strip (aspect ratio 250, over the model's 200)."""
    from fpdf import FPDF

    pdf = FPDF()
    for i, fmt in enumerate(["A4", (4, 1000), "A4"], 1):
        pdf.add_page(format=fmt)
        pdf.set_font("helvetica", size=3 if i == 2 else 14)
        pdf.cell(0, 2 if i == 2 else 10, f"strip page {i}")
    pdf.output(str(path))


def _bad_pdfs(folder: Path) -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_encryption(owner_password="owner", user_password="secret")
    pdf.add_page()
    pdf.set_font("helvetica")
    pdf.cell(0, 10, "locked away")
    pdf.output(str(folder / "locked.pdf"))
    _text_pdf(folder / "whole.tmp", 2)
    data = (folder / "whole.tmp").read_bytes()
    (folder / "broken.pdf").write_bytes(data[: len(data) // 2])
    (folder / "whole.tmp").unlink()
    (folder / "nopages.pdf").write_bytes(_zero_page_pdf())


def _zero_page_pdf() -> bytes:
    """A well-formed PDF whose page tree is empty."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, obj in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def write_video(path: Path, seconds: int, *, fps: int = 1, size: tuple[int, int] = (64, 48)) -> Path:
    """A low-resolution H.264 video whose every frame differs (red level and a green band)."""
    import av

    w, h = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "10"}
        for i in range(seconds * fps):
            arr = np.zeros((h, w, 3), dtype="uint8")
            arr[:, :, 0] = (i * 5) % 256
            arr[: i % h, :, 1] = 200
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_odp(path: Path, slides: list[str]) -> Path:
    """A minimal OpenDocument presentation (content and manifest only): one text box a slide."""
    ns = ('xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
          'xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0" '
          'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0" '
          'xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0"')
    pages = "".join(
        f'<draw:page draw:name="s{i}"><draw:frame svg:x="2cm" svg:y="2cm" svg:width="20cm" svg:height="5cm">'
        f"<draw:text-box><text:p>{text}</text:p></draw:text-box></draw:frame></draw:page>"
        for i, text in enumerate(slides, 1))
    mime = "application/vnd.oasis.opendocument.presentation"
    content = (f'<?xml version="1.0" encoding="UTF-8"?><office:document-content {ns} office:version="1.2">'
               f"<office:body><office:presentation>{pages}</office:presentation></office:body>"
               "</office:document-content>")
    manifest = ('<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
                'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
                f'<manifest:file-entry manifest:full-path="/" manifest:media-type="{mime}"/>'
                '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
                "</manifest:manifest>")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(zipfile.ZipInfo("mimetype"), mime)  # first and stored, as the format asks
        z.writestr("META-INF/manifest.xml", manifest, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)
    return path


@pytest.fixture(scope="module")
def docs(tmp_path_factory) -> Path:
    """report.pdf (3 pages), chart.pdf, scan.pdf, deck.pdf (5 slides, 16:9) and four bad PDFs."""
    folder = tmp_path_factory.mktemp("docs")
    _text_pdf(folder / "report.pdf", 3, title="Quarterly report")
    _chart_pdf(folder / "chart.pdf")
    _scan_pdf(folder / "scan.pdf")
    _text_pdf(folder / "deck.pdf", 5, landscape=True)
    _bad_pdfs(folder)
    (folder / "empty.pdf").write_bytes(b"")
    return folder


def _by_location(rows):
    rows = list(rows)
    good = {r.location: r.row for r in rows if r.error is None}
    bad = {r.location: r.error for r in rows if r.error is not None}
    return good, bad


# ============================================================================ pages as rows (no model)
def test_every_page_is_a_row_with_its_fields_text_and_image(docs):
    from embedder.items import LoadOptions, open_image, page_ref, probe_image_size

    good, bad = _by_location(folder_rows(docs, pdf=PdfOptions(dpi=36)))
    assert sorted(good) == sorted(["chart.pdf#page=1", "scan.pdf#page=1"] + [f"report.pdf#page={i}" for i in (1, 2, 3)]
                                  + [f"deck.pdf#page={i}" for i in range(1, 6)])
    report = [good[f"report.pdf#page={i}"] for i in (1, 2, 3)]
    doc_id = report[0]["metadata"]["doc_id"]
    for i, row in enumerate(report, 1):
        assert row["id"] == f"{doc_id}-p{i}"
        assert row["metadata"] == {"path": "report.pdf", "doc_id": doc_id, "page": i, "pages": 3,
                                   "title": "Quarterly report"}
        assert row["image"] == page_ref(docs / "report.pdf", i, 36) == f"{docs / 'report.pdf'}#page={i}&dpi=36"
        assert f"topic number {i}." in row["text"] and f"topic number {i % 3 + 1}." not in row["text"]
    assert good["chart.pdf#page=1"]["text"] == "Revenue by year"
    assert good["chart.pdf#page=1"]["metadata"]["title"] == "chart"  # no Title in the PDF: the file name
    scan = good["scan.pdf#page=1"]
    assert "text" not in scan and scan["image"].endswith("scan.pdf#page=1&dpi=36")  # a scan: its image alone
    assert {good[f"deck.pdf#page={i}"]["metadata"]["pages"] for i in range(1, 6)} == {5}

    # bad documents: one dead letter each, with the reason
    assert set(bad) == {"locked.pdf", "broken.pdf", "nopages.pdf", "empty.pdf"}
    assert "encrypted" in bad["locked.pdf"] and "password" in bad["locked.pdf"]
    assert "corrupt" in bad["broken.pdf"]
    assert bad["nopages.pdf"] == "the PDF has no pages"
    assert "empty" in bad["empty.pdf"]

    # page images at the expected size: the DPI's, or capped at the model's 1,843,200 pixels
    options = LoadOptions()
    assert probe_image_size(report[0]["image"], options) == (math.ceil(A4[0] / 2), math.ceil(A4[1] / 2))
    page = open_image(report[0]["image"], options)
    assert page.size == (298, 421) and page.mode == "RGB"
    assert np.asarray(page).min() < 100 < np.asarray(page).max()  # ink on white paper
    full = open_image(page_ref(docs / "report.pdf", 1), options)   # 144 DPI would be 2.0 M pixels
    assert 0.99 * 1_843_200 < full.size[0] * full.size[1] <= 1_843_200
    assert abs(full.size[0] / full.size[1] - A4[0] / A4[1]) < 0.002


def test_a_page_goes_to_a_remote_embedder_as_the_image_rendered_here_a_window_as_its_reference(docs):
    import base64
    import io

    from PIL import Image

    from embedder.items import LoadOptions, open_image, page_ref
    from embedder.remote import encode_item

    ref = page_ref(docs / "chart.pdf", 1, 36)
    sent = encode_item({"image": ref, "text": "Revenue by year"})
    assert sent["image"].startswith("data:image/png;base64,")
    img = Image.open(io.BytesIO(base64.b64decode(sent["image"].split(",", 1)[1])))
    assert np.array_equal(np.asarray(img), np.asarray(open_image(ref, LoadOptions())))
    assert encode_item({"image": ref}, server_paths=True)["image"] == ref  # a service that reads the file itself
    window = f"{docs / 'talk.mp4'}#t=25,55"
    with pytest.raises(Exception, match="server_paths=True"):  # a window: only a service reading the file
        encode_item({"video": window})
    assert encode_item({"video": window}, server_paths=True)["video"] == window


def test_modes_and_the_text_budget(docs):
    rows = {r.location: r.row for r in folder_rows(docs, pdf=PdfOptions(mode="text", dpi=36)) if r.row}
    assert "image" not in rows["report.pdf#page=1"] and "topic" in rows["report.pdf#page=1"]["text"]
    assert "image" in rows["scan.pdf#page=1"]  # no text layer: the image, whatever the mode
    rows = {r.location: r.row for r in folder_rows(docs, pdf=PdfOptions(mode="image")) if r.row}
    assert "text" not in rows["report.pdf#page=2"] and rows["report.pdf#page=2"]["image"].endswith("#page=2")
    rows = {r.location: r.row for r in folder_rows(docs, pdf=PdfOptions(text_tokens=6)) if r.row}
    text = rows["report.pdf#page=1"]["text"]
    assert text == "Page 1 talks about topic"  # 24 characters at most, cut at a word
    with pytest.raises(Exception, match="mode"):
        PdfOptions(mode="ocr")


# ============================================================================ long videos
def test_long_video_windows_cover_it_with_the_overlap_and_read_its_index_once(tmp_path, monkeypatch):
    import av
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    import embedder.video as ev
    from embedder.items import LoadOptions

    folder = tmp_path / "v"
    folder.mkdir()
    write_video(folder / "talk.mp4", 180)           # three minutes: windows
    write_video(folder / "clip.mp4", 40)            # a short clip: one vector
    (folder / "talk.txt").write_text("a talk about boats")
    probes = []
    real_probe = ev._probe
    monkeypatch.setattr(ev, "_probe", lambda *a: probes.append(a[1]) or real_probe(*a))
    ev._INFO_CACHE.clear()

    rows = [r for r in folder_rows(folder) if r.row]
    clip = [r.row for r in rows if r.row["metadata"]["path"] == "clip.mp4"]
    assert clip == [{"video": str(folder / "clip.mp4"), "metadata": {"path": "clip.mp4"}}]
    talk = [r.row for r in rows if r.row["metadata"]["path"] == "talk.mp4"]
    assert [r.location for r in rows if "talk" in r.location][:2] == ["talk.mp4#t=0,30 (+talk.txt)",
                                                                     "talk.mp4#t=25,55 (+talk.txt)"]
    spans = [(r["metadata"]["t_start"], r["metadata"]["t_end"]) for r in talk]
    assert spans == [(0, 30), (25, 55), (50, 80), (75, 105), (100, 130), (125, 155), (150, 180)]
    assert all(b[0] == a[1] - 5 for a, b in zip(spans, spans[1:]))   # 5 s shared with the previous window
    assert spans[0][0] == 0 and spans[-1][1] == 180                   # the whole video
    doc_id = talk[0]["metadata"]["doc_id"]
    for k, (row, (start, end)) in enumerate(zip(talk, spans), 1):
        assert row["video"] == f"{folder / 'talk.mp4'}#t={start:g},{end:g}"
        assert row["text"] == "a talk about boats"  # the caption goes with every window
        assert row["id"] == f"{doc_id}-t{start:g}-{end:g}"
        assert row["metadata"]["segment"] == k and row["metadata"]["segments"] == 7

    # a window's frames: those a reader decoding everything takes, timestamps from the window's start
    # (sampled at 0.25 fps here, 6 frames a window, to keep the upscaling to 128 tokens a frame quick)
    picked = [(talk[i]["video"], spans[i]) for i in (6,)]  # the last window: (150, 180)
    loaded = [ev.load_video(ref, LoadOptions(fps=0.25)) for ref, _ in picked]
    assert probes.count(str(folder / "talk.mp4")) == 1  # the packet index is read once for every window
    with av.open(str(folder / "talk.mp4")) as c:
        everything = [f.to_rgb().to_ndarray() for f in c.decode(video=0)]
    video = torch.from_numpy(np.stack(everything)).permute(0, 3, 1, 2)
    for lv, (_, (start, end)) in zip(loaded, picked):
        idx = int(start) + torch.linspace(0, end - start - 1, 6).round().long()   # 30 frames at 0.25 fps: 7.5 -> 6
        h, w = ev.clip_size(48, 64, len(idx))
        ref = TF.resize(video[idx], [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True).float()
        assert lv.frames.shape == ref.shape and float((lv.frames - ref).abs().max()) == 0.0
        assert lv.timestamps == pytest.approx([(a + b) / 2 for a, b in zip((idx - start)[::2].tolist(),
                                                                           (idx - start)[1::2].tolist())])
    # explicit windows, and none at all
    rows = [r.row for r in folder_rows(folder, video_segments=VideoSegments(20, 4)) if r.row]
    assert [(r["metadata"]["t_start"], r["metadata"]["t_end"]) for r in rows if "clip" in r["video"]] == [
        (0, 20), (16, 36), (32, 40)]
    rows = [r.row for r in folder_rows(folder, video_segments=VideoSegments(0)) if r.row]
    assert sorted(r["video"] for r in rows) == [str(folder / "clip.mp4"), str(folder / "talk.mp4")]


# ============================================================================ end to end (memory store)
def test_pages_and_windows_ingest_search_group_and_rerank(tmp_path, docs, embedder, reranker):
    """Ingest, re-run, search, group and rerank pages and windows with the tiny checkpoints."""
    from connectors.core import document_item
    from connectors.hits import format_table, group_by_doc, hit_record
    from connectors.ingest import ingest
    from connectors.memory import MemoryStore

    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("report.pdf", "scan.pdf", "locked.pdf", "broken.pdf"):
        shutil.copy(docs / name, folder / name)
    _strip_pdf(folder / "strip.pdf")
    write_video(folder / "talk.mp4", 20)
    (folder / "talk.txt").write_text("a talk about boats")  # a caption: fused windows, still videos to rerank
    source = open_source(folder, pdf=PdfOptions(dpi=36), video_segments=VideoSegments(8, 2))
    rows = {r.row["id"]: r.row for r in source.rows() if r.row}
    store = MemoryStore(embedder=embedder, dim=64, collection="docs")
    store.create(exist_ok=True)
    dead = tmp_path / "dead.jsonl"
    first = ingest(source.rows(), store, embedder, dead_letter=dead, batch_size=8)
    # 3 report pages + 1 scan + pages 1 and 3 of the strip + 3 windows of 8 s (0-8, 6-14, 12-20)
    assert (first.written, first.failed) == (9, 3), first
    letters = {d["location"]: d for d in map(json.loads, dead.read_text().splitlines())}
    assert set(letters) == {"locked.pdf", "broken.pdf", "strip.pdf#page=2"}
    assert letters["strip.pdf#page=2"]["stage"] == "embed" and "aspect ratio" in letters["strip.pdf#page=2"]["reason"]
    assert "encrypted" in letters["locked.pdf"]["reason"] and letters["locked.pdf"]["stage"] == "read"
    again = ingest(source.rows(), store, embedder, dead_letter=tmp_path / "dead2.jsonl", batch_size=8)
    assert (again.embedded, again.written, again.skipped) == (0, 0, 9)  # idempotent: same ids, nothing new
    assert store.count() == 9

    hits = store.search("topic number 2", k=20)
    records = [hit_record(i, h) for i, h in enumerate(hits, 1)]
    pages = [r for r in records if r["metadata"].get("path") == "report.pdf"]
    assert sorted(r["page"] for r in pages) == [1, 2, 3] and {r["pages"] for r in pages} == {3}
    windows = sorted((r["t_start"], r["t_end"]) for r in records if "t_start" in r)
    assert windows == [(0, 8), (6, 14), (12, 20)]
    table = format_table(records)
    assert table.splitlines()[0].endswith("where") and "p2/3" in table and "6-14 s" in table
    best = group_by_doc(hits, 10)
    assert len(best) == 4 and len({h.fields["metadata"]["doc_id"] for h in best}) == 4  # report, scan, strip, talk
    assert best[0].id == hits[0].id

    # the reranker gets the very item that was embedded: the page image and its text, the window's frames
    assert len(hits) == 9
    for hit in hits:
        embedded = {k: v for k, v in rows[hit.id].items() if k in ("text", "image", "video")}
        assert document_item(hit.fields) == embedded
    reranked = store.search("topic number 2", k=9, rerank=reranker, candidates=9)  # every page and window
    assert len(reranked) == 9 and all(np.isfinite(h.rerank_score) for h in reranked)
    assert sum("t_start" in h.fields["metadata"] for h in reranked) == 3


# ============================================================================ the command line
def test_cli_ingests_a_folder_then_searches_by_document_with_html(tmp_path, docs, capsys, tiny_embedding_path):
    """`qvl ingest` in a real process (the flags), then `qvl search --group-by doc --html --json`."""
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:
        skip_or_fail("pymilvus / milvus-lite not installed")
    from connectors.cli import main

    folder = tmp_path / "corpus"
    folder.mkdir()
    for name in ("report.pdf", "chart.pdf", "locked.pdf"):
        shutil.copy(docs / name, folder / name)
    write_video(folder / "talk.mp4", 12)
    target = f"milvus:{tmp_path / 'qvl.db'}"
    qvl = [shutil.which("qvl")] if shutil.which("qvl") else [sys.executable, "-m", "connectors.cli"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [*qvl, "ingest", str(folder), "--to", target, "--collection", "docs", "--model", tiny_embedding_path,
           "--pdf-dpi", "36", "--pdf-mode", "fused", "--video-segments", "6", "--video-overlap", "2",
           "--dead-letter", str(tmp_path / "dead.jsonl"), "--state", str(tmp_path / "state"), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    # 3 + 1 pages, windows 0-6, 4-10, 8-12; the locked PDF fails
    assert proc.returncode == 1, proc.stderr
    assert "written 7" in proc.stdout and "failed 1" in proc.stdout, proc.stdout
    assert "encrypted" in (tmp_path / "dead.jsonl").read_text()

    html = tmp_path / "hits.html"
    code = main(["search", "topic number 3", "--in", target, "--collection", "docs", "--model", tiny_embedding_path,
                 "-k", "5", "--group-by", "doc", "--json", "--html", str(html)])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    hits = out["hits"]
    docs_seen = [h["metadata"]["doc_id"] for h in hits]
    assert len(hits) == 3 and len(set(docs_seen)) == 3  # report, chart, talk: the best hit of each
    for h in hits:
        assert ("page" in h) != ("t_start" in h)
    page = html.read_text()
    assert f'href="{(folder / "report.pdf").as_uri()}#page=' in page
    assert f'href="{(folder / "talk.mp4").as_uri()}#t=' in page
    assert page.count("data:image/jpeg;base64,") == 3  # the page itself, the frame at t_start


# ============================================================================ slides
def test_a_deck_becomes_one_row_per_slide_with_libreoffice(tmp_path, monkeypatch):
    deck = write_odp(tmp_path / "deck.odp", ["Alpha slide about cats", "Beta slide about boats"])
    options = PdfOptions(dpi=36, slides_dir=str(tmp_path / "converted"))
    monkeypatch.setenv("PATH", "/nonexistent")
    (missing,) = list(slide_rows(deck, "deck.odp", options))
    assert missing.row is None and "LibreOffice" in missing.error and "apt-get install" in missing.error
    monkeypatch.undo()
    if shutil.which("soffice") is None and shutil.which("libreoffice") is None:
        skip_or_fail("LibreOffice (soffice) is not installed")
    rows = list(slide_rows(deck, "deck.odp", options))
    assert [r.error for r in rows] == [None, None]
    assert [r.row["text"] for r in rows] == ["Alpha slide about cats", "Beta slide about boats"]
    assert [r.row["metadata"]["page"] for r in rows] == [1, 2] and rows[0].row["metadata"]["path"] == "deck.odp"
    converted = list((tmp_path / "converted").glob("*.pdf"))
    assert len(converted) == 1 and rows[0].row["image"] == f"{converted[0]}#page=1&dpi=36"
    again = list(slide_rows(deck, "deck.odp", options))  # converted once: the same ids and pages
    assert [r.row for r in again] == [r.row for r in rows]

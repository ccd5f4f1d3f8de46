"""Search hits for people and scripts: a JSON-ready record, a plain-text table, an HTML page of thumbnails.

Used by ``qvl search`` and ``qvl demo``::

    records = [hit_record(i, h) for i, h in enumerate(store.search("a red bicycle"), 1)]
    print(format_table(records))
    pathlib.Path("hits.html").write_text(render_html(records, title="a red bicycle"))

A hit inside a document or a video (a PDF page, a slide, a video window: see
:mod:`connectors.ingest.documents`) carries ``page`` or ``t_start`` / ``t_end`` in its
record; the HTML page shows the page itself or the frame at ``t_start``, linked to
``file.pdf#page=N`` or ``video.mp4#t=START,END``. :func:`group_by_doc` keeps the best
hit of each document.
"""
from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import pathlib
from typing import Any, Sequence

log = logging.getLogger(__name__)

__all__ = ["hit_record", "format_table", "render_html", "group_by_doc", "doc_key", "where_of", "frame_at", "first_frame",
           "THUMBNAIL_SIZE"]

#: where a hit points inside its document: lifted from ``metadata`` into the record
LOCATION_KEYS = ("doc_id", "page", "pages", "t_start", "t_end")

THUMBNAIL_SIZE = 256


def hit_record(rank: int, hit: Any) -> dict[str, Any]:
    """A JSON-ready dict for one hit (a database's numeric, date or bytes values as JSON values)."""
    from .ingest import json_safe

    fields = json_safe(dict(hit.fields or {}))
    record = {"rank": rank, "id": hit.id, "score": round(float(hit.score), 6),
              "rerank_score": None if hit.rerank_score is None else round(float(hit.rerank_score), 6),
              "text": fields.pop("text", None), "media": fields.pop("media", None),
              "modality": fields.pop("modality", None), "metadata": fields.pop("metadata", None) or {},
              "fields": {k: v for k, v in fields.items() if not k.startswith("_")}}
    meta = record["metadata"] if isinstance(record["metadata"], dict) else {}
    record.update({key: meta[key] for key in LOCATION_KEYS if key in meta})
    return record


def doc_key(hit: Any) -> str:
    """The document a hit belongs to: its ``doc_id``, else its media file (without ``#page=`` /
    ``#t=``), else its own id."""
    fields = hit.fields if hasattr(hit, "fields") else hit
    meta = (fields or {}).get("metadata") or {}
    if isinstance(meta, dict) and meta.get("doc_id"):
        return str(meta["doc_id"])
    media = (fields or {}).get("media")
    if media:
        return str(media).split("#page=")[0].split("#t=")[0]
    return str(getattr(hit, "id", None) or (fields or {}).get("id"))


def group_by_doc(hits: Sequence[Any], k: int) -> list[Any]:
    """The best hit of each document (hits in rank order), at most ``k`` of them."""
    seen: set[str] = set()
    out = []
    for hit in hits:
        key = doc_key(hit)
        if key in seen:
            continue
        seen.add(key)
        out.append(hit)
        if len(out) >= k:
            break
    return out


def where_of(record: dict[str, Any]) -> str:
    """``p3/12`` for a page, ``25-55 s`` for a video window, else empty."""
    if record.get("page") is not None:
        return f"p{record['page']}" + (f"/{record['pages']}" if record.get("pages") else "")
    if record.get("t_start") is not None:
        try:
            return f"{float(record['t_start']):g}-{float(record.get('t_end', record['t_start'])):g} s"
        except (TypeError, ValueError):
            return f"{record['t_start']}-{record.get('t_end', '')} s"
    return ""


def _clip(text: Any, width: int) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= width else s[: width - 1] + "…"


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of hits: rank, id, score, rerank score, modality, text, media."""
    if not records:
        return "(no hits)"
    reranked = any(r["rerank_score"] is not None for r in records)
    located = any(where_of(r) for r in records)
    head = ["#", "id", "score"] + (["rerank"] if reranked else []) + ["kind", "text", "media"] + (
        ["where"] if located else [])
    rows = []
    for r in records:
        media = r["media"] or ""
        if media and not media.startswith(("http://", "https://", "data:")):
            media = _clip_path(media, 40)
        row = [str(r["rank"]), _clip(r["id"], 14), f"{r['score']:.4f}"]
        if reranked:
            row.append("-" if r["rerank_score"] is None else f"{r['rerank_score']:.4f}")
        row += [r["modality"] or "", _clip(r["text"], 48), media] + ([where_of(r)] if located else [])
        rows.append(row)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _clip_path(path: str, width: int) -> str:
    try:
        rel = os.path.relpath(path)
        if not rel.startswith(".."):
            path = rel
    except ValueError:  # another drive (Windows)
        pass
    return path if len(path) <= width else "…" + path[-(width - 1):]


def _thumbnail(media: str, modality: str | None) -> str:
    """HTML for a hit's media: an inline JPEG thumbnail, a video's first frame, or a <video> tag."""
    if media.startswith(("http://", "https://")):
        tag = "video" if modality == "video" else "img"
        extra = " controls preload=\"metadata\"" if tag == "video" else ""
        return f'<{tag} src="{html.escape(media)}"{extra}></{tag}>' if tag == "video" else \
            f'<img src="{html.escape(media)}" alt="">'
    inside = _inside_thumbnail(media)
    if inside is not None:
        return inside
    path = pathlib.Path(media)
    if not path.is_file():
        return f'<div class="missing">missing: {html.escape(media)}</div>'
    try:
        from PIL import Image

        if modality == "video" or path.suffix.lower() in {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}:
            frame = first_frame(path)
            if frame is None:
                return (f'<video src="{html.escape(path.resolve().as_uri())}" controls preload="metadata">'
                        "</video>")
            img = frame
        else:
            with Image.open(path) as opened:
                img = opened.convert("RGB")
        img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=80)
        data = base64.b64encode(buf.getvalue()).decode("ascii")
        return f'<img src="data:image/jpeg;base64,{data}" alt="{html.escape(path.name)}">'
    except Exception as exc:  # noqa: BLE001 - a broken file gets a note, not a crash
        return f'<div class="missing">cannot show {html.escape(path.name)}: {html.escape(str(exc))}</div>'


def _jpeg_tag(img: Any, alt: str) -> str:
    img.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80)
    return f'<img src="data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode("ascii")}" alt="{alt}">'


def _inside_thumbnail(media: str) -> str | None:
    """HTML for a PDF page (``x.pdf#page=N``: the page, linked to it) or a video window
    (``x.mp4#t=A,B``: the frame at A, linked to the window); None for other media."""
    from embedder.items import parse_page_ref
    from embedder.video import parse_segment_ref

    page, segment = parse_page_ref(media), parse_segment_ref(media)
    if page is None and segment is None:
        return None
    path = pathlib.Path(page[0] if page is not None else segment[0])  # type: ignore[index]
    fragment = media[media.rfind("#"):].split("&dpi=")[0]
    if not path.is_file():
        return f'<div class="missing">missing: {html.escape(media)}</div>'
    href = html.escape(path.resolve().as_uri() + fragment)
    try:
        if page is not None:
            from embedder.items import render_pdf_page

            img = render_pdf_page(path, page[1], 36)
            label = f"{path.name} page {page[1]}"
        else:
            img = frame_at(path, segment[1])  # type: ignore[index]
            label = f"{path.name} at {segment[1]:g} s"  # type: ignore[index]
            if img is None:
                return f'<a href="{href}">{html.escape(label)}</a>'
        return f'<a href="{href}">{_jpeg_tag(img, html.escape(label))}</a>'
    except Exception as exc:  # noqa: BLE001 - a broken file gets a note, not a crash
        return f'<div class="missing">cannot show {html.escape(media)}: {html.escape(str(exc))}</div>'


def frame_at(path: pathlib.Path, seconds: float) -> Any:
    """The first frame at or after ``seconds`` of a video as a PIL image, or None without a decoder."""
    try:
        import av
    except ImportError:
        return None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if seconds > 0 and stream.time_base:
            container.seek(int(seconds / stream.time_base), stream=stream, backward=True, any_frame=False)
        last = None
        for frame in container.decode(stream):
            last = frame
            if frame.time is None or frame.time >= seconds - 1e-3:
                break
        return None if last is None else last.to_image().convert("RGB")


def first_frame(path: pathlib.Path) -> Any:
    """The first frame of a video as a PIL image, or None when no decoder is available."""
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return frame.to_image().convert("RGB")
    except Exception as exc:  # noqa: BLE001
        log.debug("cannot decode %s: %s", path, exc)
    return None


def render_html(records: Sequence[dict[str, Any]], *, title: str, query_media: str | None = None,
                note: str | None = None) -> str:
    """A self-contained HTML page of hits, with inline thumbnails for image and video hits.

    Args:
        records: the hits (:func:`hit_record`).
        title: the page's title.
        query_media: the query's image or video, shown above the hits.
        note: a warning shown above everything (e.g. that the weights are random).
    """
    cards = []
    for r in records:
        media = r["media"] or ""
        visual = _thumbnail(media, r["modality"]) if media else ""
        scores = f"score {r['score']:.4f}"
        if r["rerank_score"] is not None:
            scores += f" · rerank {r['rerank_score']:.4f}"
        meta = html.escape(json.dumps(r["metadata"], ensure_ascii=False)) if r["metadata"] else ""
        cards.append(
            '<div class="hit">'
            f'<div class="rank">#{r["rank"]}</div>{visual}'
            f'<div class="scores">{html.escape(scores)}</div>'
            f'<div class="text">{html.escape(r["text"] or "")}</div>'
            f'<div class="meta">{html.escape(str(r["id"]))} {html.escape(media)}<br>{meta}</div>'
            "</div>")
    style = ("body{font-family:sans-serif;margin:1.5em}.grid{display:flex;flex-wrap:wrap;gap:12px}"
             ".hit{width:272px;border:1px solid #ddd;border-radius:6px;padding:8px}"
             ".hit img,.hit video{max-width:256px;max-height:256px;display:block;margin:auto}"
             ".rank{font-weight:bold}.scores{color:#555;font-size:90%}.meta{color:#888;font-size:75%;"
             "word-break:break-all}.missing{color:#a00;font-size:80%}")
    style += ".note{background:#fee;border:1px solid #c00;padding:8px;margin-bottom:1em}.query{margin-bottom:1em}"
    head = f'<div class="note"><b>Note:</b> {html.escape(note)}</div>' if note else ""
    if query_media:
        head += (f'<div class="query"><b>query</b><br>{_thumbnail(query_media, None)}'
                 f'<div class="meta">{html.escape(query_media)}</div></div>')
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{head}"
            f"<div class=\"grid\">{''.join(cards) or '<p>no hits</p>'}</div></body></html>\n")

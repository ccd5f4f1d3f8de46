"""Search hits for people and scripts: a JSON-ready record, a plain-text table, an HTML page of thumbnails.

Used by ``qvl search`` and ``qvl demo``::

    records = [hit_record(i, h) for i, h in enumerate(store.search("a red bicycle"), 1)]
    print(format_table(records))
    pathlib.Path("hits.html").write_text(render_html(records, title="a red bicycle"))
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

__all__ = ["hit_record", "format_table", "render_html", "THUMBNAIL_SIZE"]

THUMBNAIL_SIZE = 256


def hit_record(rank: int, hit: Any) -> dict[str, Any]:
    """A JSON-ready dict for one hit (a database's numeric, date or bytes values as JSON values)."""
    from .ingest import json_safe

    fields = json_safe(dict(hit.fields or {}))
    return {"rank": rank, "id": hit.id, "score": round(float(hit.score), 6),
            "rerank_score": None if hit.rerank_score is None else round(float(hit.rerank_score), 6),
            "text": fields.pop("text", None), "media": fields.pop("media", None),
            "modality": fields.pop("modality", None), "metadata": fields.pop("metadata", None) or {},
            "fields": {k: v for k, v in fields.items() if not k.startswith("_")}}


def _clip(text: Any, width: int) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= width else s[: width - 1] + "…"


def format_table(records: Sequence[dict[str, Any]]) -> str:
    """A plain-text table of hits: rank, id, score, rerank score, modality, text, media."""
    if not records:
        return "(no hits)"
    reranked = any(r["rerank_score"] is not None for r in records)
    head = ["#", "id", "score"] + (["rerank"] if reranked else []) + ["kind", "text", "media"]
    rows = []
    for r in records:
        media = r["media"] or ""
        if media and not media.startswith(("http://", "https://", "data:")):
            media = _clip_path(media, 40)
        row = [str(r["rank"]), _clip(r["id"], 14), f"{r['score']:.4f}"]
        if reranked:
            row.append("-" if r["rerank_score"] is None else f"{r['rerank_score']:.4f}")
        row += [r["modality"] or "", _clip(r["text"], 48), media]
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
    path = pathlib.Path(media)
    if not path.is_file():
        return f'<div class="missing">missing: {html.escape(media)}</div>'
    try:
        from PIL import Image

        if modality == "video" or path.suffix.lower() in {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}:
            frame = _first_frame(path)
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


def _first_frame(path: pathlib.Path) -> Any:
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

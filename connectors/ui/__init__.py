"""A search page for a collection: ``qvl ui`` (issue 22).

::

    qvl ui --in milvus:./qvl.db --collection photos --media-root ~/Pictures --reranker Qwen/Qwen3-VL-Reranker-2B

serves, on http://127.0.0.1:8090 by default, a page with a text box, an image drop / paste /
upload (text and image together make a fused query), a filter form built from the
collection's declared fields (plus a JSON box for the portable filter), ``k``, a rerank toggle
with its candidate count, and a grid of hits with thumbnails (images, PDF pages, the frame at a
video window's start), scores, text and a link to the source (file, page, time).

The page is plain HTML, CSS and a little JavaScript shipped in the package (``static/``); the
server is a small FastAPI app (:func:`create_app`) over any open store, the same one
``qvl search`` would use. Media are read only from the ``--media-root`` folders
(:mod:`connectors.ui.media`); with a key set every route needs it.

Importing this package is light (FastAPI is imported by :func:`create_app`).
"""
from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def create_app(store: Any, **kwargs: Any) -> Any:
    """The search page's FastAPI app over an open store; see :func:`connectors.ui.app.create_app`."""
    from .app import create_app as _create_app

    return _create_app(store, **kwargs)

"""Qdrant backend for the shared connector suites (the contract suite, the CLI end-to-end cycle).

Local mode (a folder under ``tmp_path``, in-process) by default; a Qdrant server when
``QDRANT_URL`` is set (``qdrant://host:6333`` or ``http://host:6333``; ``QDRANT_API_KEY`` if
it needs one). Nothing connects at import time.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import re
from contextlib import contextmanager
from typing import Any, Iterator

NAME = "qdrant"
#: open_store kwargs for an exact index (local mode is always exact; a server then scans)
EXACT: dict[str, Any] = {"exact": True}


def target_for(tmp_path: str | os.PathLike[str]) -> str:
    """``QDRANT_URL`` as a qdrant target when set, else a local-mode folder under ``tmp_path``."""
    url = os.environ.get("QDRANT_URL")
    if url:
        for http, scheme in (("https://", "qdrant+https://"), ("http://", "qdrant://")):
            if url.startswith(http):
                return scheme + url[len(http):]
        return url
    return f"qdrant:{pathlib.Path(tmp_path) / 'qdrant'}"


def collection_name(name: str) -> str:
    """A valid, unique-enough collection name for a test name."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "t"
    if len(clean) > 180 or clean != name:
        clean = f"{clean[:180]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return clean


def new_store(tmp_path: Any, name: str, *, embedder: Any, dim: int | None, **kwargs: Any) -> Any:
    """A store object for the collection of this test name, not created."""
    from connectors.qdrant import open_store

    return open_store(target_for(tmp_path), collection=collection_name(name), embedder=embedder, dim=dim,
                      **kwargs)


@contextmanager
def open_test_store(tmp_path: Any, name: str, *, embedder: Any, dim: int, **kwargs: Any) -> Iterator[Any]:
    """Yield a created, empty Qdrant store; drop and close it afterwards.

    ``fields`` goes to ``create``; everything else to :func:`connectors.qdrant.open_store`.
    """
    fields = kwargs.pop("fields", None)
    _drop_leftover(tmp_path, name)
    store = new_store(tmp_path, name, embedder=embedder, dim=dim, **kwargs)
    try:
        store.create(fields=fields)
        yield store
    finally:
        if store.closed:  # the test closed it
            _drop_leftover(tmp_path, name)
        else:
            try:
                store.drop()
            finally:
                store.close()


def _drop_leftover(tmp_path: Any, name: str) -> None:
    """Drop a collection of this name left by an interrupted run (whatever its schema)."""
    from qdrant_client import QdrantClient

    from connectors.qdrant.wire import acquire_local, parse_target, release_local

    target = parse_target(target_for(tmp_path))
    if target.local:
        client, _ = acquire_local(target.path)  # type: ignore[arg-type]
    else:
        client = QdrantClient(url=target.url, api_key=os.environ.get("QDRANT_API_KEY") or None)
    try:
        client.delete_collection(collection_name(name))
    finally:
        release_local(client) if target.local else client.close()


def e2e_target(tmp_path: Any) -> tuple[str, str]:
    """(target, collection) for the CLI cycle: a local-mode folder (each command is a new process)."""
    return target_for(tmp_path), "photos"

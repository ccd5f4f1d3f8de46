"""Milvus backend for the shared connector suites: a created, empty store per test.

Milvus Lite (a file under ``tmp_path``) by default; a Milvus server when ``MILVUS_URI``
is set (with ``MILVUS_TOKEN`` if it needs one). Nothing connects at import time.
"""
from __future__ import annotations

import hashlib
import os
import pathlib
import re
from contextlib import contextmanager
from typing import Any, Iterator

NAME = "milvus"


def collection_name(name: str) -> str:
    """A valid, unique-enough Milvus collection name for a test name (``[A-Za-z0-9_]``, <= 255)."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "t"
    if not (clean[0].isalpha() or clean[0] == "_"):
        clean = "t_" + clean
    if len(clean) > 200 or clean != name:
        # keep distinct names distinct after sanitising ("a-b" vs "a_b")
        clean = f"{clean[:200]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return clean


def target_for(tmp_path: str | os.PathLike[str]) -> str:
    """``MILVUS_URI`` when set, else a Milvus Lite file under ``tmp_path``."""
    return os.environ.get("MILVUS_URI") or f"milvus:{pathlib.Path(tmp_path) / 'milvus.db'}"


@contextmanager
def open_test_store(tmp_path: str | os.PathLike[str], name: str, *, embedder: Any, dim: int,
                    **kwargs: Any) -> Iterator[Any]:
    """Yield a created, empty Milvus store; drop and close it afterwards.

    Args:
        tmp_path: directory for the Milvus Lite file (share one per module to start Milvus
            Lite once; every test still gets its own collection).
        name: the test's name; the collection is named after it (sanitised).
        embedder: the embedder (or None for a vector-only store).
        dim: the store's dim.
        **kwargs: ``fields`` goes to ``create``; everything else to ``open_store``
            (``metric``, ``index``, ``coarse_dim``...).
    """
    from connectors.milvus import open_store, parse_target

    fields = kwargs.pop("fields", None)
    if os.environ.get("MILVUS_TOKEN") and "token" not in kwargs:
        kwargs["token"] = os.environ["MILVUS_TOKEN"]
    target, collection = target_for(tmp_path), collection_name(name)
    _drop_leftover(parse_target(target).uri, collection, kwargs.get("token"))
    store = open_store(target, collection=collection, embedder=embedder, dim=dim, **kwargs)
    try:
        store.create(fields=fields)
        yield store
    finally:
        if store.closed:  # the test closed it
            _drop_leftover(parse_target(target).uri, collection, kwargs.get("token"))
        else:
            try:
                store.drop()
            finally:
                store.close()


def _drop_leftover(uri: str, collection: str, token: str | None) -> None:
    """Drop a collection left by an interrupted run (it may have any schema)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, token=token or "")
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
    finally:
        client.close()

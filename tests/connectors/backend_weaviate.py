"""The Weaviate backend of the shared connector test suite.

``open_test_store(tmp_path, name, embedder=..., dim=...)`` yields a created, empty store
on the shared test server (started once per test process, see ``weaviate_server.py``;
``WEAVIATE_URL`` selects an external one) and drops its collection afterwards. Without
a server it skips the test with the reason (fails in CI).
"""
from __future__ import annotations

import contextlib
import hashlib
import re
from typing import Any, Iterator

from tests.connectors.weaviate_server import SHARED, ServerUnavailable, WeaviateServer

NAME = "weaviate"


def test_server() -> WeaviateServer:
    """The shared Weaviate test server; skips (or fails in CI) when there is none."""
    from tests.conftest import skip_or_fail

    try:
        return SHARED.get()
    except ServerUnavailable as exc:
        skip_or_fail(str(exc))
        raise  # unreachable: skip_or_fail raises


test_server.__test__ = False  # type: ignore[attr-defined]  # not a test despite its name


def test_collection_name(name: str) -> str:
    """A valid Weaviate collection name for a test name: sanitised, capitalised, unique enough.

    ``test_upsert[milvus-128]`` -> ``Test_upsert_milvus_128_<hash>`` (<= 60 characters).
    """
    clean = re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "store"
    if not clean[0].isalpha():
        clean = "T" + clean
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return (clean[0].upper() + clean[1:])[:48] + "_" + digest


test_collection_name.__test__ = False  # type: ignore[attr-defined]


@contextlib.contextmanager
def open_test_store(tmp_path: Any, name: str, *, embedder: Any, dim: int, **kwargs: Any) -> Iterator[Any]:
    """A created, empty :class:`connectors.weaviate.WeaviateStore`, dropped afterwards.

    Args:
        tmp_path: the test's temporary directory (unused: the server is shared).
        name: the test's name; the collection is named after it (sanitised, capitalised).
        embedder: the embedder (or None for precomputed vectors only).
        dim: the store's dim (one named vector ``default``), unless ``named_vectors`` is
            given in ``kwargs``.
        **kwargs: ``fields`` goes to ``create``; everything else to
            :func:`connectors.weaviate.open_store` (``named_vectors``, ``index``...).
    """
    from connectors.weaviate import open_store

    server = test_server()
    collection = test_collection_name(name)
    fields = kwargs.pop("fields", None)
    if "named_vectors" in kwargs:
        dim = None  # type: ignore[assignment]
    drop_collection(server, collection)  # a leftover of an interrupted run may have any schema
    store = open_store(server.target, collection=collection, embedder=embedder, dim=dim, **kwargs)
    try:
        store.create(fields=fields)
        yield store
    finally:
        store.close()
        drop_collection(server, collection)


def drop_collection(server: WeaviateServer, name: str) -> None:
    """Delete a collection (whatever its schema) if it exists."""
    from connectors.weaviate import WeaviateTarget, connect_client

    client = connect_client(WeaviateTarget.parse(server.target))
    try:
        client.collections.delete(name)
    finally:
        client.close()

"""The Faiss backend of the shared connector suites: a store folder under the test's ``tmp_path``
(``faiss:<tmp_path>/faiss``), a collection per test, nothing to start."""
from __future__ import annotations

import contextlib
import hashlib
import pathlib
import re
from typing import Any, Iterator

NAME = "faiss"
EXACT: dict = {"index": "flat"}  # the default; HNSW and IVF-PQ are tested in test_faiss.py


def collection_name(name: str) -> str:
    """A valid collection name for a test name (``[A-Za-z0-9_.-]``, <= 128), distinct names kept distinct."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "t"
    if clean != name or len(clean) > 100:
        clean = f"{clean[:100]}_{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return clean


def target_for(tmp_path: Any) -> str:
    return f"faiss:{pathlib.Path(tmp_path) / 'faiss'}"


def new_store(tmp_path: Any, name: str, *, embedder: Any, dim: int | None, **kwargs: Any) -> Any:
    """A store object for the collection of ``name`` (not created)."""
    from connectors.faiss import open_store

    return open_store(target_for(tmp_path), collection=collection_name(name), embedder=embedder, dim=dim, **kwargs)


@contextlib.contextmanager
def open_test_store(tmp_path: Any, name: str, *, embedder: Any, dim: int, **kwargs: Any) -> Iterator[Any]:
    """A created, empty store (``fields`` goes to ``create``, the rest to ``open_store``); dropped afterwards."""
    fields = kwargs.pop("fields", None)
    with contextlib.closing(new_store(tmp_path, name, embedder=None, dim=dim, **kwargs)) as old:
        old.drop()  # a leftover of an interrupted run may have any schema
    store = new_store(tmp_path, name, embedder=embedder, dim=dim, **kwargs)
    try:
        store.create(fields=fields)
        yield store
    finally:
        if store.closed:
            store = new_store(tmp_path, name, embedder=None, dim=None)
        try:
            store.drop()
        finally:
            store.close()


def e2e_target(tmp_path: Any) -> tuple[str, str]:
    """(target, collection) for the CLI cycle: a folder that outlives each process."""
    return target_for(tmp_path), "photos"

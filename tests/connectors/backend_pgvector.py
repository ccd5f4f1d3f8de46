"""The pgvector backend of the shared connector contract suite.

``with open_test_store(tmp_path, request.node.name, embedder=emb, dim=64) as store:`` yields a
created, empty :class:`connectors.pgvector.PgVectorStore` on the session's test server (see
:mod:`tests.connectors.postgres_server`), in a table named after ``name``, dropped afterwards.
"""
from __future__ import annotations

import contextlib
import hashlib
import pathlib
import re
from typing import Any, Iterator

from tests.connectors.postgres_server import basetemp_of, test_server


def table_name(name: str) -> str:
    """A valid table name for a test name: lower-case, ``[a-z0-9_]``, at most 63 characters."""
    base = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_") or "t"
    if not re.match(r"[a-z_]", base):
        base = "t_" + base
    if len(base) > 63:
        base = base[:54] + "_" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return base


@contextlib.contextmanager
def open_test_store(tmp_path: pathlib.Path, name: str, *, embedder: Any, dim: int, dsn: str | None = None,
                    fields: dict | None = None, **kwargs: Any) -> Iterator[Any]:
    """A created, empty store on the test server; dropped and closed afterwards.

    Args:
        tmp_path: the test's ``tmp_path`` (its parent locates the session's server).
        name: the test name (sanitised into the table name).
        embedder, dim: passed to :func:`connectors.pgvector.open_store`.
        dsn: a server to use instead of the session's.
        fields: user fields for ``create``.
        **kwargs: more ``open_store`` arguments (``storage``, ``index_dim``...).
    """
    from connectors.pgvector import open_store

    dsn = dsn or test_server(basetemp_of(tmp_path)).dsn
    table = table_name(name)
    store = open_store(dsn, table=table, embedder=embedder, dim=dim, **kwargs)
    try:
        store.drop()  # a leftover of an interrupted run
        store.create(fields=fields)
        yield store
    finally:
        try:
            if not store._closed:
                store.drop()
        finally:
            store.close()

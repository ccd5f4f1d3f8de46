"""Qwen3-VL as the vectorizer of the databases you already run.

``connect(target, ...)`` opens a store for a target URL:

=============================  ===============================================
``milvus:./photos.db``         Milvus Lite file (embedded; nothing to start)
``milvus://host:19530``        Milvus server (``http://`` and ``https://`` too)
``postgresql://user@host/db``  PostgreSQL with pgvector
``weaviate://host:8080``       Weaviate server
``qdrant:./folder``            Qdrant local mode (``qdrant://host:6333``: a server)
``faiss:./index_dir``          a Faiss index file and its fields, in a folder
``memory:``                    exact in-process numpy store (tests, notebooks)
=============================  ===============================================

Every store offers ``create``, ``upsert``, ``search``, ``delete``, ``count``, ``drop``,
``close`` and ``client`` (the native client). Drivers are imported only by their own
connector, so a Milvus user never needs the Weaviate client.
"""
from __future__ import annotations

import importlib
from typing import Any

from .core import Hit, Row, Store, UpsertReport

__all__ = ["connect", "register", "Hit", "Row", "Store", "UpsertReport"]

# scheme -> "module:factory"; a factory takes (target, **kwargs) and returns a Store.
_REGISTRY: dict[str, str] = {
    "milvus": "connectors.milvus:open_store",
    "postgresql": "connectors.pgvector:open_store",
    "postgres": "connectors.pgvector:open_store",
    "weaviate": "connectors.weaviate:open_store",
    "qdrant": "connectors.qdrant:open_store",
    "faiss": "connectors.faiss:open_store",
    "memory": "connectors.memory:open_store",
}


def register(scheme: str, factory: str) -> None:
    """Register a connector for a URL scheme (``"module:function"``)."""
    _REGISTRY[scheme] = factory


def scheme_of(target: str) -> str:
    if target.endswith(".db") and ":" not in target:
        return "milvus"  # a bare Milvus Lite file
    scheme = target.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return "milvus"
    return scheme.split("+", 1)[0]


def connect(target: str, **kwargs: Any) -> Store:
    """Open a store for ``target`` (see the module docstring for the URL forms).

    Keyword arguments go to the connector (``collection``, ``embedder``, ``dim``, ...).
    """
    scheme = scheme_of(target)
    try:
        spec = _REGISTRY[scheme]
    except KeyError:
        raise ValueError(f"unknown target {target!r}: scheme {scheme!r} is not one of "
                         f"{sorted(set(_REGISTRY))}") from None
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)(target, **kwargs)

"""Milvus connector: Qwen3-VL vectors in Milvus (server) or Milvus Lite (an embedded file).

Open a store with :func:`open_store` (or ``connectors.connect``)::

    import connectors
    from embedder import Embedder

    emb = Embedder.from_pretrained("Qwen/Qwen3-VL-Embedding-2B")
    with connectors.connect("milvus:./photos.db", collection="photos", embedder=emb, dim=1024) as store:
        store.create(fields={"color": str, "price": float}, exist_ok=True)
        report = store.upsert([{"id": "p1", "image": "cat.jpg", "text": "a cat", "color": "red"}])
        hits = store.search("a red cat", k=5, filter='color == "red"')

Target forms: ``milvus:./file.db`` or a bare ``file.db`` path (Milvus Lite, in-process; one
process per file: the first to open it keeps it until it exits),
``milvus://host:19530`` (plain gRPC/HTTP), ``milvus+https://host:443``, and
``http(s)://host:19530``.

The collection layout is: ``id`` (VARCHAR primary key), ``vector`` (FLOAT_VECTOR(dim)),
optionally ``coarse_vector`` (FLOAT_VECTOR(coarse_dim), the renormalised MRL prefix of
``vector``), ``text``, ``media``, ``modality`` (VARCHAR, nullable), ``metadata`` (JSON)
and the user's declared scalar fields (nullable). The embedding fingerprint is the
collection property ``qvl.fingerprint`` (JSON).

The package, bottom to top (each module imports only those above it):

* :mod:`~connectors.milvus.wire`: targets, expression literals and the portable filter as
  an expression, pymilvus errors as ours, names, and Milvus Lite's one-process lock;
* :mod:`~connectors.milvus.store`: :class:`MilvusStore` (on :class:`connectors.base.BaseStore`)
  and :func:`open_store`;
* :mod:`~connectors.milvus.functions`: for people who already use pymilvus directly,
  :class:`QwenVLEmbeddingFunction` (a ``pymilvus.model``-style embedding function) and
  :func:`text_embedding_function` / :func:`add_text_embedding_function` (Milvus itself calls
  ``qvl serve`` through a ``TEXT_EMBEDDING`` function).

pymilvus is imported lazily, so ``import connectors`` never needs it.
"""
from __future__ import annotations

from .functions import QwenVLEmbeddingFunction, add_text_embedding_function, text_embedding_function
from .store import DEFAULT_MAX_BYTES, FINGERPRINT_PROPERTY, INDEX_TYPES, METRICS, MilvusStore, open_store
from .wire import FIELD_TYPES, MilvusTarget, compile_filter, ids_filter, parse_target, string_literal

__all__ = [
    "MilvusStore", "MilvusTarget", "QwenVLEmbeddingFunction", "open_store", "parse_target",
    "text_embedding_function", "add_text_embedding_function",
    "INDEX_TYPES", "METRICS", "FIELD_TYPES", "DEFAULT_MAX_BYTES", "FINGERPRINT_PROPERTY", "string_literal",
    "ids_filter", "compile_filter",
]

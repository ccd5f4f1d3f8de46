"""Weaviate connector: Qwen3-VL vectors in Weaviate collections, two ways.

**Client-side vectors** (:func:`open_store`, :class:`WeaviateStore`): the embedder runs
in this process; each object carries one *named vector* per chosen Matryoshka (MRL)
dimension (e.g. ``full`` at 1024 and ``coarse`` at 256), all cut from one forward pass.
Search embeds the query, runs ``near_vector`` on the named vector you target, and can
rerank the candidates with a Qwen3-VL reranker::

    from connectors import connect
    store = connect("weaviate://localhost:8080", collection="Photos", embedder=emb,
                    named_vectors={"full": 1024, "coarse": 256})
    store.create(fields={"color": str}, exist_ok=True)
    store.upsert([{"id": "p1", "image": "dog.jpg", "text": "Rex", "color": "brown"}])
    hits = store.search("a brown dog", k=5, target_vector="coarse", rerank=reranker)

**Server-side vectors** (:func:`create_server_vectorized_collection`): Weaviate itself
calls ``qvl serve`` through its ``multi2vec-clip`` / ``text2vec-transformers`` /
``reranker-transformers`` modules, so ``near_text``, ``near_image`` and ``rerank`` in
plain Weaviate queries use Qwen3-VL. Videos cannot travel through Weaviate's modules:
embed them client-side and store them as self-provided vectors.

Modules: :mod:`.client` (target, connection, UUIDs, error translation), :mod:`.schema`
(property types, the recorded dims and fingerprint), :mod:`.store` (the store on
:class:`connectors.base.BaseStore`), :mod:`.modules` (server-side vectorization). The
Weaviate client is imported lazily (``pip install -e ".[weaviate]"``).
"""
from __future__ import annotations

from .client import WeaviateTarget, collection_name, connect_client, driver_errors, row_uuid, translate
from .modules import create_server_vectorized_collection
from .schema import CORE_PROPERTIES, StoreSchema, weaviate_data_type
from .store import BATCHING, MAX_QUERY_RESULTS, WeaviateStore, open_store

__all__ = ["WeaviateStore", "WeaviateTarget", "StoreSchema", "open_store", "connect_client",
           "create_server_vectorized_collection", "row_uuid", "collection_name", "weaviate_data_type",
           "driver_errors", "translate", "CORE_PROPERTIES", "BATCHING", "MAX_QUERY_RESULTS"]

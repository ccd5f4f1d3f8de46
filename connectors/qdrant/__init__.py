"""Qdrant connector: Qwen3-VL vectors in a Qdrant collection, local mode or a server.

Open a store with :func:`open_store` (or ``connectors.connect``)::

    import connectors

    with connectors.connect("qdrant:./qdrant_data", collection="photos", embedder=emb, dim=1024,
                            coarse_dim=256) as store:
        store.create(fields={"color": str, "price": float}, exist_ok=True)
        store.upsert([{"id": "p1", "image": "cat.jpg", "text": "a cat", "color": "red"}])
        hits = store.search("a red cat", k=5, filter={"color": "red", "price": {"$lt": 20}})

Targets: ``qdrant:./folder`` (local mode: in-process, persisted to the folder, one process
per folder), ``qdrant://host:6333`` and ``qdrant+https://host:6333`` (a server; the API key
from ``api_key=`` or ``$QDRANT_API_KEY``).

A collection has the named vector ``full`` (the store's dim) and, with ``coarse_dim``, the
named vector ``coarse`` (the renormalised MRL prefix), both cosine. A point's id is
``uuid5(NAMESPACE_DNS, row id)``; its payload holds ``id`` (the row id), ``text``, ``media``,
``modality``, ``metadata`` (a JSON object, filtered as ``metadata.<key>``), the declared
fields (with payload indexes on a server) and ``_norm`` (the vector's norm: Qdrant keeps
cosine vectors normalised, and ``scan`` gives them back as written). The dims, declared
fields, quantization and embedding fingerprint are the collection metadata entry ``qvl``
(Qdrant 1.16+ and local mode keep collection metadata).

Modules: :mod:`.wire` (targets, the local-mode client shared per folder, errors, point ids,
the portable filter as a ``models.Filter``) and :mod:`.store` (:class:`QdrantStore` on
:class:`connectors.base.BaseStore`, and :func:`open_store`). qdrant-client is imported lazily
(``pip install -e ".[qdrant]"``).
"""
from __future__ import annotations

from .store import COARSE, METADATA_KEY, QUANTIZATION, VECTOR, QdrantStore, open_store
from .wire import QdrantTarget, compile_condition, parse_target, point_id, translate

__all__ = ["QdrantStore", "QdrantTarget", "open_store", "parse_target", "point_id", "compile_condition",
           "translate", "VECTOR", "COARSE", "METADATA_KEY", "QUANTIZATION"]

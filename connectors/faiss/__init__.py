"""Faiss connector: Qwen3-VL vectors in a Faiss index file, the rows' fields in SQLite, side
by side in one folder; no server::

    import connectors
    with connectors.connect("faiss:./index_dir", collection="photos", embedder=emb, dim=1024) as store:
        store.create(fields={"color": str}, exist_ok=True)
        store.upsert([{"id": "p1", "image": "cat.jpg", "text": "a cat", "color": "red"}])
        hits = store.search("a red cat", k=5, filter={"color": "red"})

The folder holds ``store.sqlite`` (the collections' records and one table of rows per
collection: fields, metadata JSON, raw float32 vectors), ``<collection>.<gen>.faiss`` (the
newest index snapshot) and ``<collection>.lock`` (the writer's lock). The index is exact
(``IndexFlatIP`` on normalised vectors: cosine) unless ``index="hnsw"`` or ``"ivfpq"``.

One process writes a collection at a time (``fcntl.flock``; another gets an
``UnavailableError``); any number of processes read it, and each sees the last committed
state (a search first catches up with the generation in SQLite).

Modules: :mod:`.sql` (the SQLite layout, the portable filter as SQL), :mod:`.index` (index
kinds, snapshot files, the writer lock), :mod:`.store` (:class:`FaissStore`,
:func:`open_store`). ``faiss`` (``pip install -e ".[faiss]"``) is imported when a store is used.
"""
from __future__ import annotations

from .index import KINDS, IndexSpec, parse_target
from .sql import compile_where
from .store import FaissStore, open_store

__all__ = ["FaissStore", "IndexSpec", "KINDS", "open_store", "parse_target", "compile_where"]

"""A brute-force, in-process numpy store, written on the store skeleton.

It is exact (no index), so it serves as the oracle of the contract suite, and as a store
for notebooks and small corpora: ``connect("memory:", embedder=emb, dim=256)``. It is also
the shortest example of a database module: the primitives of :class:`connectors.base.BaseStore`
and nothing else.
"""
from __future__ import annotations

import bisect
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from embedder.errors import InputError

from .base import BaseStore, Schema, StoredRow, check_field_types
from .core import Hit, Row
from .filters import Node, matches


class MemoryStore(BaseStore):
    """Exact cosine search over vectors held in memory.

    The native filter (the escape hatch) is a Python predicate over a hit's fields.

    Example:
        >>> store = MemoryStore(dim=64)
        >>> store.create()
        >>> report = store.upsert([{"id": "a", "vector": [1.0] + [0.0] * 63, "text": "x"}])
        >>> [h.id for h in store.search([1.0] + [0.0] * 63, k=1)]
        ['a']
    """

    backend = "memory"
    native_filter = "a callable over a hit's fields"

    def __init__(self, *, embedder: Any = None, dim: int | None = None, collection: str = "default",
                 allow_mismatch: bool = False) -> None:
        if dim is None and embedder is None:
            raise InputError("give dim, or an embedder to take the full dimension from")
        super().__init__(collection=collection, embedder=embedder, dim=dim, allow_mismatch=allow_mismatch)
        self._schema: Schema | None = None
        self._drop()

    def close(self) -> None:
        """Nothing to release: the data lives as long as this object, which stays usable."""

    # ------------------------------------------------------------------ primitives
    def _exists(self) -> bool:
        return self._schema is not None

    def _describe(self) -> Schema:
        assert self._schema is not None
        return self._schema

    def _create(self, schema: Schema) -> None:
        self._schema = schema
        self._vectors = np.zeros((0, schema.dim), dtype=np.float32)

    def _check_fields(self, fields: Mapping[str, Any] | None) -> dict[str, type]:
        return check_field_types(fields, reserved=("id", "text", "media", "modality", "metadata", "vector"))

    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[tuple[str, str]]:
        new = []
        for row, vec in zip(rows, vectors):
            fields = {"text": row.text, "media": row.media, "modality": row.modality,
                      "metadata": dict(row.metadata), **row.fields}
            i = self._pos.get(row.id)
            if i is not None:
                self._vectors[i] = vec
                self._fields_of[i] = fields
            else:
                self._pos[row.id] = len(self._ids) + len(new)
                new.append((row.id, vec, fields))
        if new:
            self._ids += [n[0] for n in new]
            self._vectors = np.vstack([self._vectors, np.stack([n[1] for n in new])])
            self._fields_of += [n[2] for n in new]
        return []

    def _compile(self, node: Node) -> Callable[[dict], bool]:
        return lambda fields: matches(node, fields)

    def _native_filter(self, flt: Any) -> Callable[[dict], bool]:
        if not callable(flt):
            return super()._native_filter(flt)
        return flt

    def _nearest(self, vector: np.ndarray, n: int, where: Any, *, content: bool) -> list[Hit]:
        vec = vector / (np.linalg.norm(vector) or 1.0)
        norms = np.linalg.norm(self._vectors, axis=1)
        norms[norms == 0] = 1.0
        scores = (self._vectors @ vec) / norms
        hits = []
        for i in np.argsort(-scores, kind="stable"):
            if where is not None and not where(self._fields_of[i]):
                continue
            hits.append(Hit(id=self._ids[i], score=float(scores[i]), fields=dict(self._fields_of[i])))
            if len(hits) >= n:
                break
        return hits

    def _existing(self, ids: list[str]) -> Iterable[str]:
        return [i for i in ids if i in self._pos]

    def _delete(self, ids: list[str]) -> None:
        gone = set(ids)
        keep = [i for i, rid in enumerate(self._ids) if rid not in gone]
        self._ids = [self._ids[i] for i in keep]
        self._vectors = self._vectors[keep]
        self._fields_of = [self._fields_of[i] for i in keep]
        self._pos = {rid: i for i, rid in enumerate(self._ids)}

    def _count(self) -> int:
        return len(self._ids)

    def _drop(self) -> None:
        self._schema = None
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._vectors = np.zeros((0, self._dim or 0), dtype=np.float32)
        self._fields_of: list[dict] = []

    def _page(self, cursor: str | None, limit: int) -> tuple[list[StoredRow], str | None]:
        order = sorted(self._ids)
        start = bisect.bisect_right(order, cursor) if cursor is not None else 0
        page = order[start:start + limit]
        rows = [StoredRow(rid, self._vectors[self._pos[rid]].copy(), dict(self._fields_of[self._pos[rid]]))
                for rid in page]
        return rows, (page[-1] if start + limit < len(order) else None)


def open_store(target: str = "memory:", *, collection: str = "default", embedder: Any = None,
               dim: int | None = None, allow_mismatch: bool = False, **_: Any) -> MemoryStore:
    """``connect("memory:", ...)`` entry point."""
    return MemoryStore(embedder=embedder, dim=dim, collection=collection, allow_mismatch=allow_mismatch)

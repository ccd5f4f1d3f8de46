"""A brute-force, in-process numpy store, written on the store skeleton.

It is exact (no index), so it serves as the oracle of the contract suite, and as a store
for notebooks and small corpora: ``connect("memory:", embedder=emb, dim=256)``. Every
``quantization=`` is honoured with the numpy reference of :mod:`connectors.quantization`
(exact search over the quantized form; binary re-scored with the float vectors). It is also
the shortest example of a database module: the primitives of :class:`connectors.base.BaseStore`
and nothing else.
"""
from __future__ import annotations

import bisect
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from embedder.contracts import EmbedderLike
from embedder.errors import InputError, NotFoundError

from .base import BaseStore, Schema, StoredRow, check_field_types
from .core import Hit, Row
from .filters import Node, matches
from .quantization import PRECISIONS, RESCORE_OVERSAMPLING, encode, similarities


class _Collection:
    """One collection's data: ids in insertion order, their vectors and fields."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.ids: list[str] = []
        self.pos: dict[str, int] = {}
        self.vectors = np.zeros((0, schema.dim), dtype=np.float32)
        self.fields: list[dict] = []
        self.encoded: np.ndarray | None = None  # the quantized form, made again after a write

    def stored(self) -> np.ndarray:
        if self.encoded is None:
            self.encoded = encode(self.vectors, self.schema.quantization)
        return self.encoded


# ``memory://NAME`` spaces: collections shared by every store opened on that name in this process.
_SPACES: dict[str, dict[str, _Collection]] = {}


class MemoryStore(BaseStore):
    """Exact cosine search over vectors held in memory.

    ``connect("memory:")`` gives a private space (the data lives as long as the store object);
    ``connect("memory://NAME")`` a space shared by every store opened on that name in this
    process, so a collection can be opened again, as on a database. The native filter (the
    escape hatch) is a Python predicate over a hit's fields.

    Example:
        >>> store = MemoryStore(dim=64)
        >>> store.create()
        >>> report = store.upsert([{"id": "a", "vector": [1.0] + [0.0] * 63, "text": "x"}])
        >>> [h.id for h in store.search([1.0] + [0.0] * 63, k=1)]
        ['a']
    """

    backend = "memory"
    native_filter = "a callable over a hit's fields"
    quantizations = PRECISIONS

    def __init__(self, *, embedder: EmbedderLike | None = None, dim: int | None = None, collection: str = "default",
                 allow_mismatch: bool = False, space: dict[str, _Collection] | None = None,
                 quantization: str | None = None) -> None:
        super().__init__(collection=collection, embedder=embedder, dim=dim, allow_mismatch=allow_mismatch,
                         quantization=quantization)
        self._space = space if space is not None else {}
        if self.open_existing():
            return
        if dim is None and embedder is None:
            raise InputError("give dim, or an embedder to take the full dimension from")

    @property
    def _c(self) -> _Collection:
        try:
            return self._space[self.collection]
        except KeyError:  # dropped through another handle
            self._known = False
            raise NotFoundError(f"collection {self.collection!r} does not exist; call store.create() first") from None

    # ------------------------------------------------------------------ primitives
    def _exists(self) -> bool:
        return self.collection in self._space

    def _describe(self) -> Schema:
        return self._c.schema

    def _create(self, schema: Schema) -> None:
        self._space[self.collection] = _Collection(schema)

    def _check_fields(self, fields: Mapping[str, Any] | None) -> dict[str, type]:
        return check_field_types(fields, reserved=("id", "text", "media", "modality", "metadata", "vector"))

    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[tuple[str, str]]:
        c = self._c
        c.encoded = None
        new: list[tuple[str, np.ndarray, dict]] = []
        for row, vec in zip(rows, vectors):
            fields = {"text": row.text, "media": row.media, "modality": row.modality,
                      "metadata": dict(row.metadata), **row.fields}
            i = c.pos.get(row.id)
            if i is not None:
                c.vectors[i] = vec
                c.fields[i] = fields
            else:
                c.pos[row.id] = len(c.ids) + len(new)
                new.append((row.id, vec, fields))
        if new:
            c.ids += [n[0] for n in new]
            c.vectors = np.vstack([c.vectors, np.stack([n[1] for n in new])])
            c.fields += [n[2] for n in new]
        return []

    def _compile(self, node: Node) -> Callable[[dict], bool]:
        return lambda fields: matches(node, fields)

    def _native_filter(self, flt: Any) -> Callable[[dict], bool]:
        if not callable(flt):
            return super()._native_filter(flt)
        return flt

    def _nearest(self, vector: np.ndarray, n: int, where: Any, *, content: bool, **options: Any) -> list[Hit]:
        if options:
            raise InputError(f"unknown search option(s) {sorted(options)}: the memory store has none")
        c = self._c
        if not c.ids:
            return []
        precision = c.schema.quantization
        scores = similarities(vector, c.stored() if precision != "float32" else c.vectors, precision)
        wanted = n * RESCORE_OVERSAMPLING if precision == "binary" else n
        found = []
        for i in np.argsort(-scores, kind="stable"):
            if where is not None and not where(c.fields[i]):
                continue
            found.append(i)
            if len(found) >= wanted:
                break
        score = dict(zip(found, scores[found]))
        if precision == "binary":  # the binary candidates re-scored with the float vectors
            exact = similarities(vector, c.vectors[found], "float32")
            found, score = [found[j] for j in np.argsort(-exact, kind="stable")[:n]], dict(zip(found, exact))
        return [Hit(id=c.ids[i], score=float(score[i]), fields=dict(c.fields[i])) for i in found]

    def _existing(self, ids: list[str]) -> Iterable[str]:
        return [i for i in ids if i in self._c.pos]

    def _delete(self, ids: list[str]) -> None:
        c, gone = self._c, set(ids)
        c.encoded = None
        keep = [i for i, rid in enumerate(c.ids) if rid not in gone]
        c.ids = [c.ids[i] for i in keep]
        c.vectors = c.vectors[keep]
        c.fields = [c.fields[i] for i in keep]
        c.pos = {rid: i for i, rid in enumerate(c.ids)}

    def _count(self) -> int:
        return len(self._c.ids)

    def _drop(self) -> None:
        self._space.pop(self.collection, None)

    def _page(self, cursor: str | None, limit: int) -> tuple[list[StoredRow], str | None]:
        c = self._c
        order = sorted(c.ids)
        start = bisect.bisect_right(order, cursor) if cursor is not None else 0
        page = order[start:start + limit]
        rows = [StoredRow(rid, c.vectors[c.pos[rid]].copy(), dict(c.fields[c.pos[rid]])) for rid in page]
        return rows, (page[-1] if start + limit < len(order) else None)


def open_store(target: str = "memory:", *, collection: str = "default", embedder: EmbedderLike | None = None,
               dim: int | None = None, allow_mismatch: bool = False, quantization: str | None = None,
               **_: Any) -> MemoryStore:
    """``connect("memory:", ...)`` (a private space) or ``connect("memory://NAME", ...)`` (shared by name)."""
    name = target[len("memory://"):] if target.startswith("memory://") else None
    space = _SPACES.setdefault(name, {}) if name else None
    return MemoryStore(embedder=embedder, dim=dim, collection=collection, allow_mismatch=allow_mismatch,
                       space=space, quantization=quantization)

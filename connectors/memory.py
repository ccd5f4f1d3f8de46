"""A brute-force, in-process numpy store with the common store API.

It is exact (no index), so it serves as the oracle of the congruence tests, and as a
store for notebooks and small corpora: ``connect("memory:", embedder=emb, dim=256)``.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from embedder.errors import InputError, NotFoundError, SchemaMismatchError

from .core import (Hit, Row, UpsertReport, check_dim, check_rerank_query, pipelined_upsert, query_vector,
                   rerank_candidates, rerank_hits)
from .filters import matches, parse


class MemoryStore:
    """Exact cosine search over vectors held in memory.

    Args:
        embedder: an Embedder or RemoteEmbedder (optional when rows and queries carry vectors).
        dim: vector dimension (default: the embedder's full dimension).

    Example:
        >>> store = MemoryStore(dim=64)
        >>> store.create()
        >>> report = store.upsert([{"id": "a", "vector": [1.0] + [0.0] * 63, "text": "x"}])
        >>> [h.id for h in store.search([1.0] + [0.0] * 63, k=1)]
        ['a']
    """

    def __init__(self, *, embedder: Any = None, dim: int | None = None, collection: str = "default") -> None:
        if dim is None:
            if embedder is None:
                raise InputError("give dim, or an embedder to take the full dimension from")
            dim = int(embedder.dim)
        self.embedder = embedder
        self.dim = int(dim)
        self.collection = collection
        self._ids: list[str] = []
        self._pos: dict[str, int] = {}
        self._vectors = np.zeros((0, self.dim), dtype=np.float32)
        self._fields: list[dict] = []
        self._declared: dict[str, type] | None = None

    @property
    def client(self) -> "MemoryStore":
        return self

    def create(self, fields: Mapping[str, type] | None = None, *, exist_ok: bool = False) -> None:
        """Declare user fields; ``exist_ok`` checks that they match an existing declaration.

        Raises:
            InputError: the dim is outside 64..the embedder's full dim (nothing is created).
            SchemaMismatchError: the collection exists (without ``exist_ok``) or has other fields.
        """
        declared = dict(fields or {})
        if self._declared is not None:
            if not exist_ok:
                raise SchemaMismatchError(f"collection {self.collection!r} already exists (pass exist_ok=True)")
            if declared != self._declared:
                raise SchemaMismatchError(f"collection {self.collection!r} has fields {self._declared}, "
                                          f"not {declared}")
            return
        check_dim(self.dim, self.embedder)
        self._declared = declared

    def _require(self) -> None:
        if self._declared is None:
            raise NotFoundError(f"collection {self.collection!r} does not exist: call create() first")

    def upsert(self, rows: Iterable[Mapping[str, Any]], *, batch_size: int = 256,
               show_progress: bool = False) -> UpsertReport:
        """Embed and store rows; see :func:`connectors.core.pipelined_upsert`."""
        self._require()
        return pipelined_upsert(rows, embedder=self.embedder, dim=self.dim, write=self._write,
                                batch_rows=batch_size, declared_fields=self._declared or (),
                                show_progress=show_progress, desc=f"upsert {self.collection}")

    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[tuple[str, str]]:
        new = []
        for row, vec in zip(rows, vectors):
            fields = {"text": row.text, "media": row.media, "modality": row.modality,
                      "metadata": dict(row.metadata), **row.fields}
            if row.id in self._pos:
                i = self._pos[row.id]
                self._vectors[i] = vec
                self._fields[i] = fields
            else:
                self._pos[row.id] = len(self._ids) + len(new)
                new.append((row.id, vec, fields))
        if new:
            self._ids += [n[0] for n in new]
            self._vectors = np.vstack([self._vectors, np.stack([n[1] for n in new])])
            self._fields += [n[2] for n in new]
        return []

    def search(self, query: Any, k: int = 10, *, filter: Mapping[str, Any] | Callable[[dict], bool] | None = None,
               rerank: Any = None, candidates: int | None = None, instruction: str | None = None) -> list[Hit]:
        """Exact search.

        ``filter`` is the portable filter dict (see :mod:`connectors.filters`; this store is its
        exact reference), or a Python predicate over a hit's fields (the native form).
        With ``rerank``, the best ``candidates`` vector hits (default ``max(4k, 20)``, the
        same on every store) are reranked; the query must then be an item, not a vector.

        Raises:
            InputError: ``candidates`` below ``k``, ``rerank`` with a query vector, a bad filter.
        """
        self._require()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        fetch = rerank_candidates(k, candidates)  # one policy, in core; checks a given value
        n = fetch if rerank is not None else k
        check_rerank_query(query, rerank)
        if isinstance(filter, Mapping):
            node = parse(filter, self._declared or {})
            filter = lambda fields: matches(node, fields)  # noqa: E731
        elif filter is not None and not callable(filter):
            raise InputError(f"filter must be a dict (the portable filter) or a callable, got {type(filter).__name__}")
        vec = query_vector(self.embedder, query, self.dim, instruction)
        vec = vec / (np.linalg.norm(vec) or 1.0)
        norms = np.linalg.norm(self._vectors, axis=1)
        norms[norms == 0] = 1.0
        scores = (self._vectors @ vec) / norms
        order = np.argsort(-scores, kind="stable")
        hits = []
        for i in order:
            if filter is not None and not filter(self._fields[i]):
                continue
            hits.append(Hit(id=self._ids[i], score=float(scores[i]), fields=dict(self._fields[i])))
            if len(hits) >= n:
                break
        if rerank is not None:
            return rerank_hits(rerank, query, hits, k=k, instruction=None).hits
        return hits

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the store holds."""
        return {str(i) for i in ids if str(i) in self._pos}

    def delete(self, ids: Sequence[str]) -> None:
        keep = [i for i, rid in enumerate(self._ids) if rid not in set(map(str, ids))]
        self._ids = [self._ids[i] for i in keep]
        self._vectors = self._vectors[keep]
        self._fields = [self._fields[i] for i in keep]
        self._pos = {rid: i for i, rid in enumerate(self._ids)}

    def count(self) -> int:
        """The number of rows.

        Raises:
            NotFoundError: the collection was never created (or was dropped), as on every store.
        """
        self._require()
        return len(self._ids)

    def drop(self) -> None:
        self.__init__(embedder=self.embedder, dim=self.dim, collection=self.collection)  # type: ignore[misc]

    def close(self) -> None:
        """Nothing to release; idempotent."""

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_store(target: str = "memory:", *, collection: str = "default", embedder: Any = None,
               dim: int | None = None, **_: Any) -> MemoryStore:
    """``connect("memory:", ...)`` entry point."""
    return MemoryStore(embedder=embedder, dim=dim, collection=collection)

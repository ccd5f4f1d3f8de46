"""The store skeleton: every promise of the store API, written once.

:class:`BaseStore` owns ``create``, ``upsert``, ``search`` (and search-then-rerank),
``existing_ids``, ``delete``, ``count``, ``drop``, ``scan``, open/close and the context
manager, the field policy, the defaults and the checks. A database module subclasses it
(one level deep) and implements only primitives:

===========================  ==========================================================
``_exists()``                does the collection exist
``_describe()``              an existing collection's :class:`Schema` (dim, fields,
                             fingerprint); raise ``SchemaMismatchError`` if it was not
                             made by this connector
``_create(schema)``          create the collection (vectors at ``schema.dim``, the declared
                             fields typed, the fingerprint in the database's metadata place)
``_check_fields(fields)``    the declared fields, validated for this database
``_write(rows, vectors)``    write one batch; return the rows that failed
``_nearest(vec, n, where)``  the ``n`` nearest rows with a compiled filter, best first
``_compile(node)``           a portable filter (parsed) in the database's native form
``_existing(ids)``           which ids are stored
``_delete(ids)``, ``_count()``, ``_drop()``, ``_close()``
``_page(cursor, limit)``     one page of stored rows with their vectors, and the next cursor
``_translate(exc, what)``    the database's error as one of ours (``UnavailableError`` for a
                             lost connection, so a failure knows it is transient)
===========================  ==========================================================

Optional: ``_write_stream(rows)`` (a bulk path for rows that carry vectors),
``_before_upsert()``, ``_after_upsert(report)``, ``_document_of(hit)``, ``_native_filter(obj)``
(the escape hatch), ``_query_vector(query, instruction, **options)`` (vectors at several dims)
and ``max_k`` / ``max_bytes`` class attributes. A new database is one module with these, one
line in :data:`connectors.REGISTRY` and one parameter of the contract suite.
"""
from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterable, Iterator, Mapping, Sequence

import numpy as np

from embedder.contracts import EmbedderLike, RerankerLike
from embedder.errors import ConnectorError, InputError, NotFoundError, SchemaMismatchError

from .core import (NONFINITE_VECTOR, Failure, Hit, Row, UpsertReport, bad_vector_reason, check_dim, document_item,
                   utf8_storable, vector_problems)
from .pipeline import pipelined_upsert, write_in_batches
from .quantization import check_precision, unsupported
from .search import check_rerank_query, query_vector, rerank_candidates, rerank_hits
from .filters import Node, parse

log = logging.getLogger(__name__)

PAGE_ROWS = 1000  # rows per page of scan() / migrate


@dataclass(frozen=True)
class Schema:
    """What a collection is: its vector dim, its declared fields, and how its vectors were made.

    Attributes:
        dim: the stored vectors' dimension.
        fields: the declared fields, ``{name: python type}``.
        fingerprint: the embedding fingerprint recorded when the collection was created (see
            :func:`embedder.fingerprint_conflicts`), or None (created without an embedder, or
            by an older version).
        quantization: how the vectors are stored (see :mod:`connectors.quantization`).
    """

    dim: int
    fields: dict[str, type] = field(default_factory=dict)
    fingerprint: dict | None = None
    quantization: str = "float32"


@dataclass(frozen=True)
class StoredRow:
    """A stored row as :meth:`BaseStore.scan` gives it: ready to upsert into another store."""

    id: str
    vector: np.ndarray
    fields: dict

    def as_row(self) -> dict:
        """The row dict for ``upsert``: id, the vector, the content reference and the fields."""
        f = dict(self.fields)
        out: dict[str, Any] = {"id": self.id, "vector": self.vector}
        text, media, modality = f.pop("text", None), f.pop("media", None), f.pop("modality", None)
        if text is not None:
            out["text"] = text
        if media:
            out["video" if modality == "video" else "image"] = media
        metadata = f.pop("metadata", None)
        if metadata:
            out["metadata"] = dict(metadata)
        out.update({k: v for k, v in f.items() if v is not None})
        return out


def embedder_fingerprint(embedder: EmbedderLike | None) -> dict | None:
    """The embedder's fingerprint (``embedder.fingerprint()``), or None when it has none."""
    fn = getattr(embedder, "fingerprint", None)
    if embedder is None or not callable(fn):
        return None
    return dict(fn())


def fingerprint_problems(stored: Mapping[str, Any], current: Mapping[str, Any], dim: int) -> list[str]:
    """How two fingerprints differ in ways that make vectors incompatible (empty: compatible)."""
    try:
        from embedder.fingerprint import fingerprint_conflicts
    except ImportError:  # pragma: no cover - the embedder side always ships it
        keys = sorted(set(stored) | set(current))
        return [f"{k}: {stored.get(k)!r} != {current.get(k)!r}" for k in keys if stored.get(k) != current.get(k)]
    return list(fingerprint_conflicts(dict(stored), dict(current), dim))


class BaseStore(abc.ABC):
    """The skeleton of every store (see the module docstring for the primitives).

    Args:
        collection: the collection (table, class) name.
        embedder: an ``Embedder`` or ``RemoteEmbedder`` for rows and queries; None for a
            vector-only store (rows and queries then carry vectors).
        dim: the vector dim (an MRL dim of the embedder); default: the existing
            collection's, else the embedder's full dim.
        allow_mismatch: open a collection whose vectors were made by another model, dim,
            document instruction or image/video sizing than ``embedder`` makes (default: a
            :class:`SchemaMismatchError` naming both sides).
        quantization: how ``create`` stores the vectors (:data:`connectors.quantization.PRECISIONS`; default:
            the collection's, else float32); ``create`` refuses what the store cannot honour.
    """

    backend: ClassVar[str] = "store"
    max_k: ClassVar[int | None] = None  # the database's limit on k and on rerank candidates
    max_bytes: ClassVar[int] = 32 * 1024 * 1024  # per write request
    native_filter: ClassVar[str] = "a callable"  # what the escape-hatch filter is, for messages
    text_filter: ClassVar[bool] = False  # the native filter is text (qvl search --where passes it as is)
    quantizations: ClassVar[tuple[str, ...]] = ("float32",)  # what create honours (see connectors.quantization)

    def __init__(self, *, collection: str, embedder: EmbedderLike | None = None, dim: int | None = None,
                 allow_mismatch: bool = False, quantization: str | None = None) -> None:
        self.collection = collection
        self._quantization = check_precision(quantization) if quantization is not None else None
        self._embedder = embedder
        self._dim = int(dim) if dim is not None else None
        self._fields: dict[str, type] = {}
        self._fingerprint: dict | None = None
        self._known = False  # the collection was found or created by this object
        self.allow_mismatch = bool(allow_mismatch)
        self._closed = False

    # ------------------------------------------------------------------ properties
    @property
    def embedder(self) -> Any:
        """The embedder used for rows and queries (None for a vector-only store)."""
        return self._embedder

    @embedder.setter
    def embedder(self, embedder: EmbedderLike | None) -> None:
        self._embedder = embedder

    @property
    def dim(self) -> int:
        """The stored vectors' dimension.

        Raises:
            InputError: the collection does not exist and neither dim nor an embedder was given.
        """
        if self._dim is None:
            if self._embedder is not None:
                return int(self._embedder.dim)
            raise InputError(f"collection {self.collection!r} does not exist and no dim was given: "
                             "pass dim=... (or an embedder) when opening the store")
        return self._dim

    @property
    def fields(self) -> dict[str, type]:
        """The declared fields, ``{name: python type}``."""
        return dict(self._fields)

    @property
    def fingerprint(self) -> dict | None:
        """How the collection's vectors were made (recorded at create), or None."""
        return dict(self._fingerprint) if self._fingerprint else None

    @property
    def quantization(self) -> str:
        """How the vectors are stored: the collection's, else the one asked for (default ``float32``)."""
        return self._quantization or "float32"

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def client(self) -> Any:
        """The database's native client, for everything this class does not wrap."""
        return self

    # ------------------------------------------------------------------ schema
    def open_existing(self) -> bool:
        """Adopt the collection if it exists (its dim, fields and fingerprint, checked): True if it does.

        Called when a store is opened, so a store for an existing collection can search at once.

        Raises:
            SchemaMismatchError: another dim than asked for, or vectors made another way than the
                embedder makes them (unless ``allow_mismatch``).
        """
        self._check_open()
        if not self._exists():
            return False
        self._adopt(self._describe())
        return True

    def _adopt(self, schema: Schema) -> None:
        if self._dim is not None and self._dim != schema.dim:
            raise SchemaMismatchError(
                f"collection {self.collection!r} stores vectors of dim {schema.dim}, but dim={self._dim} was "
                f"requested; open it with dim={schema.dim} or use another collection")
        if self._quantization not in (None, schema.quantization):
            raise SchemaMismatchError(f"collection {self.collection!r} stores vectors with quantization="
                                      f"{schema.quantization!r}, but quantization={self._quantization!r} was "
                                      "requested; open it without quantization= or use another collection")
        self._dim, self._quantization = schema.dim, schema.quantization
        self._fields = dict(schema.fields)
        self._fingerprint = dict(schema.fingerprint) if schema.fingerprint else None
        self._known = True
        self.check_fingerprint()

    def check_fingerprint(self, embedder: EmbedderLike | None = None) -> None:
        """Check that ``embedder`` (default: the store's) makes vectors like the stored ones.

        Raises:
            SchemaMismatchError: the collection's vectors were made by another model, kind, dim
                (above the model's), document instruction, sizing or prompt format; the message
                names both sides. Skipped with ``allow_mismatch=True``, or when the collection
                records no fingerprint.
        """
        if not self._fingerprint:  # nothing recorded: no need to ask the embedder (a remote one may be down)
            return
        current = embedder_fingerprint(embedder if embedder is not None else self._embedder)
        if current is None:
            return
        problems = fingerprint_problems(self._fingerprint, current, self.dim)
        if not problems:
            return
        message = (f"collection {self.collection!r} holds vectors made another way than this embedder makes "
                   f"them: {'; '.join(problems)}. Mixing them makes search results meaningless: use the "
                   f"collection's model, or another collection (allow_mismatch=True opens it anyway)")
        if self.allow_mismatch:
            log.warning("%s (allowed)", message)
            return
        raise SchemaMismatchError(message)

    def create(self, fields: Mapping[str, Any] | None = None, *, exist_ok: bool = False,
               fingerprint: Mapping[str, Any] | None = None) -> None:
        """Create the collection at the store's dim with the declared fields.

        Args:
            fields: declared fields, ``{name: str | int | float | bool}``: typed, filterable
                columns/properties. Every other top-level key of a row goes into ``metadata``.
            exist_ok: reuse an existing collection after checking its dim, fields (when given)
                and fingerprint; without it an existing collection is an error.
            fingerprint: record this instead of the embedder's fingerprint (a migration
                carries the source collection's).

        Raises:
            InputError: a bad field, or a dim outside 64..the embedder's full dim (nothing is created).
            QuantizationUnsupportedError: the store cannot honour its ``quantization`` (nothing is created).
            ConnectorError: the collection exists and ``exist_ok`` is False.
            SchemaMismatchError: the existing collection differs (the message says how).
        """
        self._check_open()
        wanted = self._check_fields(fields)
        if self._exists():
            if not exist_ok:
                raise ConnectorError(f"collection {self.collection!r} already exists; pass exist_ok=True "
                                     "to reuse it (its schema is checked)")
            self._adopt(self._describe())
            if fields is not None and wanted != self._fields:
                raise SchemaMismatchError(f"collection {self.collection!r} exists with fields "
                                          f"{_names(self._fields)}, not {_names(wanted)}")
            return
        dim = check_dim(self.dim, self._embedder)
        fp = dict(fingerprint) if fingerprint is not None else embedder_fingerprint(self._embedder)
        self._check_quantization(self.quantization, dim)
        self._create(Schema(dim, wanted, fp, self.quantization))
        self._dim, self._fields, self._fingerprint, self._known = dim, wanted, fp, True
        self._quantization = self.quantization
        log.info("created %s collection %r (dim=%d, fields=%s)", self.backend, self.collection, dim, sorted(wanted))

    def _check_quantization(self, precision: str, dim: int) -> None:
        """Raise QuantizationUnsupportedError unless ``create`` can honour ``precision`` (a store adds its limits)."""
        if precision not in self.quantizations:
            raise unsupported(self.backend, precision, self.quantizations)

    def _require_collection(self, *, recheck: bool = False) -> None:
        """Raise NotFoundError unless the collection exists (``recheck``: ask the database again,
        as before a write, since another handle may have dropped it)."""
        self._check_open()
        if self._known and recheck:
            try:
                self._known = bool(self._exists())
            except Exception:  # noqa: BLE001 - cannot tell now (the database is away): the write reports it
                log.debug("checking that %r exists failed", self.collection, exc_info=True)
        if not self._known:
            if not self.open_existing():
                raise NotFoundError(f"collection {self.collection!r} does not exist; call store.create() first")

    def _on_collection(self, call: Callable[[], Any]) -> Any:
        """``call()``, a primitive on the collection; when it fails because another handle dropped the
        collection, the error every store gives for that: NotFoundError."""
        try:
            return call()
        except Exception as exc:
            try:
                gone = isinstance(exc, NotFoundError) or not self._exists()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                gone = False
            if gone:
                self._known = False
                raise NotFoundError(f"collection {self.collection!r} does not exist (it was dropped); "
                                    "call store.create() first") from exc
            raise

    # ------------------------------------------------------------------ writing
    def upsert(self, rows: Iterable[Mapping[str, Any]], *, batch_size: int = 256, max_bytes: int | None = None,
               show_progress: bool = False) -> UpsertReport:
        """Embed and write rows; a row with an existing id is replaced (idempotent).

        Each row is a dict with ``id`` (optional: a stable content hash otherwise), ``text``,
        ``image``, ``video`` (any combination gives one fused vector) or a precomputed
        ``vector`` at the store's dim, ``metadata`` (a JSON dict) and the declared fields;
        any other top-level key goes into ``metadata``. Embedding one batch overlaps writing
        the previous one. Duplicate ids in one batch are merged (the last one wins).

        Args:
            rows: the rows (any iterable; consumed once).
            batch_size: rows embedded per step.
            max_bytes: estimated bytes per write request (default: the database's).
            show_progress: show a progress bar.

        Returns:
            :class:`~connectors.core.UpsertReport`: ``written`` ids and ``failed``
            :class:`~connectors.core.Failure` values; every input row is in exactly one of them.

        Raises:
            NotFoundError: the collection does not exist (nothing was written).
            InputError: ``batch_size`` or ``max_bytes`` is not a positive integer.
        """
        for name, value in (("batch_size", batch_size), ("max_bytes", max_bytes)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        self._require_collection(recheck=True)
        self._before_upsert()
        stream = self._write_stream if type(self)._write_stream is not BaseStore._write_stream else None
        report = pipelined_upsert(rows, embedder=self._embedder, dim=self.dim, write=self._write,
                                  write_stream=stream, batch_rows=batch_size,
                                  max_bytes=self._request_budget(max_bytes or self.max_bytes),
                                  declared_fields=self._fields, show_progress=show_progress,
                                  desc=f"{self.backend}:{self.collection}")
        self._after_upsert(report)
        return report

    def write_rows(self, rows: Sequence[Row], vectors: np.ndarray, *, max_bytes: int | None = None) -> UpsertReport:
        """Write rows that are already normalised (with this store's fields) and embedded: the
        write half of :meth:`upsert`, for pipelines that embed on their own (``qvl ingest``, the
        sync worker), so a row is normalised once.

        Vectors that cannot be stored (NaN, all zeros) fail their rows; an id given twice keeps
        its last row. Returns the same report as ``upsert``.
        """
        self._require_collection(recheck=True)
        self._before_upsert()
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(rows), -1)
        if len(rows) and vectors.shape[1] != self.dim:
            raise InputError(f"vectors have {vectors.shape[1]} dims, the store has {self.dim}")
        last = {row.id: i for i, row in enumerate(rows)}
        keep = [i for i in last.values() if not problems[i]] if (problems := vector_problems(vectors)).any() \
            else list(last.values())
        failed = [Failure(rows[i].id, bad_vector_reason(vectors[i]) or NONFINITE_VECTOR, "validate")
                  for i in last.values() if problems[i]]
        written, errs = write_in_batches(self._write, [rows[i] for i in keep], vectors[keep], dim=self.dim,
                                         max_bytes=self._request_budget(max_bytes or self.max_bytes))
        report = UpsertReport(written=written, failed=failed + errs)
        self._after_upsert(report)
        return report

    def _request_budget(self, max_bytes: int) -> int:
        """The byte budget the pipeline counts against (a store with more per row scales it)."""
        return max_bytes

    def _before_upsert(self) -> None:
        """Hook run before an upsert writes anything (e.g. check that the collection is still there)."""

    def _after_upsert(self, report: UpsertReport) -> None:
        """Hook run after an upsert (e.g. a flush)."""

    def _write_stream(self, rows: Iterator[Row]) -> list[tuple[str, str]]:  # pragma: no cover - optional
        raise NotImplementedError

    # ------------------------------------------------------------------ search
    def search(self, query: Any, k: int = 10, *, filter: Any = None, rerank: RerankerLike | None = None,
               candidates: int | None = None, instruction: str | None = None, **options: Any) -> list[Hit]:
        """Find the rows nearest to a query, optionally reranked.

        Args:
            query: any item (text, image, video, fused dict), embedded as a query; or a
                precomputed query vector at the store's dim.
            k: the number of hits returned.
            filter: the portable filter dict (``{"color": "red", "year": {"$gte": 2020}}``, see
                :mod:`connectors.filters`), compiled with every value bound: the safe form for
                untrusted input. Or the database's native form (see the store), for trusted input.
            rerank: a ``Reranker`` (or ``RemoteReranker``): the best ``candidates`` vector hits
                are reranked and the best ``k`` returned with ``rerank_score`` set. A candidate
                whose document cannot be loaded keeps its vector rank after the reranked ones.
            candidates: how many vector hits to rerank (default ``max(4 * k, 20)``, every store).
            instruction: the query instruction (default: the embedder's).
            **options: the database's own search options (see the store).

        Returns:
            Hits, best first: ``score`` is the cosine similarity (higher is better).

        Raises:
            InputError: bad ``k``/``candidates``/filter, a query vector of the wrong dim, or
                ``rerank`` with a query vector (the reranker reads the query).
            NotFoundError: the collection does not exist.
        """
        self._check_open()
        limit = self.max_k
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 or (limit and k > limit):
            raise InputError(f"k must be an integer from 1 to {limit}, got {k!r}" if limit
                             else f"k must be a positive integer, got {k!r}")
        k = int(k)
        n = rerank_candidates(k, candidates, limit=limit) if rerank is not None else k
        if rerank is None and candidates is not None:
            rerank_candidates(k, candidates, limit=limit)  # checked even when unused
        check_rerank_query(query, rerank)
        self._require_collection()
        where = self._filter(filter)
        vec = self._query_vector(query, instruction, **options)
        hits = self._on_collection(lambda: self._nearest(vec, n, where, content=rerank is not None, **options))
        if rerank is None:
            return hits[:k]
        return rerank_hits(rerank, query, hits, k=k, document_of=self._document_of).hits

    def _query_vector(self, query: Any, instruction: str | None, **options: Any) -> np.ndarray:
        """The query's vector: an item embedded at ``dim``, or a given vector checked (a store
        whose vectors come at several dims accepts more, e.g. Weaviate's target vector)."""
        return query_vector(self._embedder, query, self.dim, instruction)

    def _filter(self, flt: Any) -> Any:
        if flt is None:
            return None
        if isinstance(flt, Mapping):
            return self._compile(parse(flt, self._fields))
        return self._native_filter(flt)

    def _native_filter(self, flt: Any) -> Any:
        """The escape hatch: check a native filter and return it (default: none is accepted)."""
        raise InputError(f"filter must be a dict (the portable filter) or {self.native_filter}, "
                         f"got {type(flt).__name__}")

    def _document_of(self, hit: Hit) -> Any:
        """The reranker's document for a hit: its stored text and media reference."""
        return document_item(hit.fields)

    # ------------------------------------------------------------------ reading, deleting
    def existing_ids(self, ids: Sequence[Any]) -> set[str]:
        """Which of ``ids`` the collection holds (an id that cannot be stored is not there)."""
        self._require_collection()
        wanted = list(dict.fromkeys(str(i) for i in ids if utf8_storable(str(i))))
        return set(self._on_collection(lambda: self._existing(wanted))) if wanted else set()

    def delete(self, ids: Sequence[Any]) -> None:
        """Delete rows by id (ids that are not there are ignored)."""
        self._require_collection()
        wanted = list(dict.fromkeys(str(i) for i in ids if utf8_storable(str(i))))
        if wanted:
            self._on_collection(lambda: self._delete(wanted))

    def count(self) -> int:
        """The number of rows.

        Raises:
            NotFoundError: the collection does not exist.
        """
        self._require_collection()
        return int(self._on_collection(self._count))

    def drop(self) -> None:
        """Drop the collection and its data (no error when it does not exist)."""
        self._check_open()
        self._drop()
        self._fields, self._fingerprint, self._known = {}, None, False

    def scan(self, *, page_size: int = PAGE_ROWS,
             cursor: str | None = None) -> Iterator[tuple[list[StoredRow], str | None]]:
        """Every stored row with its vector, page by page: ``(rows, cursor)`` pairs.

        ``cursor`` (opaque, a string) resumes after the page it was returned with; the last
        page's cursor is None.
        """
        self._require_collection()
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise InputError(f"page_size must be a positive integer, got {page_size!r}")
        while True:
            rows, cursor = self._on_collection(lambda: self._page(cursor, page_size))
            yield rows, cursor
            if cursor is None or not rows:
                return

    # ------------------------------------------------------------------ lifecycle
    def _check_open(self) -> None:
        if self._closed:
            raise ConnectorError(f"the {self.backend} store for {self.collection!r} is closed")

    def close(self) -> None:
        """Release the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._close()
        except Exception:  # noqa: BLE001 - closing must not raise
            log.debug("closing the %s client failed", self.backend, exc_info=True)

    def __enter__(self) -> "BaseStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(collection={self.collection!r}, dim={self._dim}, fields={_names(self._fields)})"

    # ------------------------------------------------------------------ primitives
    @abc.abstractmethod
    def _exists(self) -> bool: ...

    @abc.abstractmethod
    def _describe(self) -> Schema: ...

    @abc.abstractmethod
    def _create(self, schema: Schema) -> None: ...

    @abc.abstractmethod
    def _check_fields(self, fields: Mapping[str, Any] | None) -> dict[str, type]: ...

    @abc.abstractmethod
    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[tuple[str, str]]: ...

    @abc.abstractmethod
    def _nearest(self, vector: np.ndarray, n: int, where: Any, *, content: bool, **options: Any) -> list[Hit]: ...

    @abc.abstractmethod
    def _compile(self, node: Node) -> Any: ...

    @abc.abstractmethod
    def _existing(self, ids: list[str]) -> Iterable[str]: ...

    @abc.abstractmethod
    def _delete(self, ids: list[str]) -> None: ...

    @abc.abstractmethod
    def _count(self) -> int: ...

    @abc.abstractmethod
    def _drop(self) -> None: ...

    @abc.abstractmethod
    def _page(self, cursor: str | None, limit: int) -> tuple[list[StoredRow], str | None]: ...

    def _close(self) -> None:
        """Release the client (default: nothing to release)."""


def _names(fields: Mapping[str, Any]) -> dict[str, str]:
    return {k: getattr(v, "__name__", str(v)) for k, v in fields.items()}


FIELD_TYPES = (str, int, float, bool)


def check_field_types(fields: Mapping[str, Any] | None, *, reserved: Iterable[str] = (),
                      valid_name: Any = None) -> dict[str, type]:
    """Declared fields checked the same way on every store: ``{name: str | int | float | bool}``.

    Raises:
        InputError: not a dict, a reserved or invalid name, or another type (the message lists the allowed).
    """
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise InputError(f"fields must be a dict {{name: type}}, got {type(fields).__name__}")
    reserved = set(reserved)
    out: dict[str, type] = {}
    for name, typ in fields.items():
        if not isinstance(name, str) or not name or name in reserved or (valid_name and not valid_name(name)):
            raise InputError(f"field name {name!r} is not allowed: use letters, digits and '_' (not starting with a "
                             f"digit), not one of {sorted(reserved)}")
        if typ not in FIELD_TYPES:
            raise InputError(f"field {name!r} has type {typ!r}; allowed are str, int, float, bool")
        out[name] = typ
    return out

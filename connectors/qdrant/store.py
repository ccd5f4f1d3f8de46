"""The Qdrant store: :class:`QdrantStore` on the store skeleton, and :func:`open_store`.

:class:`connectors.base.BaseStore` does create/upsert/search/rerank/existing_ids/delete/count/
drop/scan and the checks; this module holds what is Qdrant's own: the named vectors (``full``,
and an optional ``coarse`` MRL prefix searched first with the Query API's ``prefetch``), the
collection metadata holding the schema and fingerprint, payload indexes, the ``quantization=``
option (float16 vectors, scalar int8 or binary quantization with re-scoring), and point ids
derived from row ids.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from embedder.contracts import EmbedderLike
from embedder.embedder import mrl
from embedder.errors import InputError, NotFoundError, SchemaMismatchError, UnavailableError

from ..base import BaseStore, Schema, StoredRow, check_field_types
from ..core import Failure, Hit, Row, utf8_storable
from ..filters import Node, matches
from ..quantization import PRECISIONS, RESCORE_OVERSAMPLING, check_precision
from .wire import (COLLECTION_RE, QdrantTarget, acquire_local, as_filter, compile_condition, driver_errors,
                   parse_target, point_id, qdrant_models, release_local, translate)

if TYPE_CHECKING:  # pragma: no cover
    from qdrant_client import QdrantClient

log = logging.getLogger(__name__)

VECTOR = "full"          # the named vector at the store's dim
COARSE = "coarse"        # the optional named vector at coarse_dim (the renormalised MRL prefix)
METADATA_KEY = "qvl"     # the collection metadata entry holding our schema and fingerprint
NORM_KEY = "_norm"       # payload: the vector's norm (Qdrant stores cosine vectors normalised)
CONTENT_FIELDS = ("text", "media", "modality")
RESERVED = ("id", *CONTENT_FIELDS, "metadata", "vector", "image", "video", "instruction")
FIELD_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
QUANTIZATION = PRECISIONS
#: Qdrant's own names for the options, accepted too ("scalar" was this store's name for int8).
QUANTIZATION_ALIASES = {"scalar": "int8"}
IDS_PER_REQUEST = 1000
MAX_FETCH = 100_000      # the most points one filtered search asks for while it tops up post-checked hits
#: Estimated bytes per upsert request (the pipeline counts 4 bytes a dim; JSON takes ~4x that):
#: well under the server's default 32 MB request limit.
DEFAULT_MAX_BYTES = 4 * 1024 * 1024
_TYPE_NAMES = {"str": str, "int": int, "float": float, "bool": bool}
_INDEX_TYPES = {str: "keyword", int: "integer", float: "float", bool: "bool"}


class QdrantStore(BaseStore):
    """A Qdrant collection of Qwen3-VL vectors (local mode or a server).

    Build one with :func:`open_store` or ``connectors.connect("qdrant:./folder")``; the shared
    behaviour is documented on :class:`connectors.base.BaseStore`. Qdrant specifics:

    - ``filter`` also takes a ``qdrant_client.models.Filter`` (trusted input), passed through.
    - search options: ``using`` (``"full"`` or ``"coarse"``: search that vector alone; default:
      with a coarse vector, coarse-to-fine in one Query API call), ``coarse_candidates`` (the
      coarse shortlist, default ``max(4n, 50)``), ``exact`` (a full scan instead of HNSW),
      ``hnsw_ef``, ``rescore`` and ``oversampling`` (with int8 or binary quantization; binary
      oversamples ``RESCORE_OVERSAMPLING`` times unless told).

    Attributes:
        collection: the collection name.
        target: where the store lives (:class:`~connectors.qdrant.wire.QdrantTarget`).
        coarse_dim: dim of the ``coarse`` named vector, or None.
        quantization: ``float32``, ``float16``, ``int8`` or ``binary`` (see :func:`open_store`).
    """

    backend = "qdrant"
    max_bytes = DEFAULT_MAX_BYTES
    native_filter = "a qdrant_client.models.Filter"
    quantizations = PRECISIONS

    def __init__(self, client: "QdrantClient", target: QdrantTarget, *, collection: str,
                 embedder: EmbedderLike | None = None, dim: int | None = None, coarse_dim: int | None = None,
                 allow_mismatch: bool = False, quantization: str | None = None,
                 hnsw: Mapping[str, Any] | None = None, on_disk: bool = False, exact: bool = False,
                 lock: Any = None, owns_client: bool = True) -> None:
        super().__init__(collection=collection, embedder=embedder, dim=dim, allow_mismatch=allow_mismatch,
                         quantization=quantization)
        self._client = client
        self.target = target
        self.coarse_dim = coarse_dim
        self.hnsw = dict(hnsw or {})
        self.on_disk = bool(on_disk)
        self.exact = bool(exact)
        self._lock = lock if lock is not None else contextlib.nullcontext()
        self._owns_client = owns_client
        self.open_existing()

    @property
    def client(self) -> "QdrantClient":
        """The native ``qdrant_client.QdrantClient`` (in local mode shared by this process' stores on the folder)."""
        return self._client

    def __repr__(self) -> str:
        return (f"QdrantStore({str(self.target)!r}, collection={self.collection!r}, dim={self._dim}, "
                f"coarse_dim={self.coarse_dim}, quantization={self.quantization})")

    @contextlib.contextmanager
    def _calling(self, what: str) -> Any:
        with self._lock, driver_errors(f"{what} ({self.collection})"):
            yield

    def _translate(self, exc: BaseException, what: str) -> BaseException:
        return translate(exc, what)

    # ------------------------------------------------------------------ schema
    def _exists(self) -> bool:
        with self._calling("collection_exists"):
            return bool(self._client.collection_exists(self.collection))

    def _check_fields(self, fields: Mapping[str, Any] | None) -> dict[str, type]:
        return check_field_types(fields, reserved=RESERVED, valid_name=FIELD_NAME_RE.match)

    def _describe(self) -> Schema:
        """The collection's dims, fields and fingerprint: from our entry in the collection's
        metadata, else (a collection made elsewhere, or a server before 1.16) from its vectors
        config and payload indexes, without a fingerprint."""
        m = qdrant_models()
        with self._calling("get_collection"):
            info = self._client.get_collection(self.collection)
        vectors = info.config.params.vectors
        if not isinstance(vectors, Mapping) or VECTOR not in vectors:
            names = sorted(vectors) if isinstance(vectors, Mapping) else ["(one unnamed vector)"]
            raise SchemaMismatchError(f"collection {self.collection!r} has no named vector {VECTOR!r} (it has "
                                      f"{names}): it was not created by this connector")
        problems = [f"vector {name!r} uses {v.distance}, not Cosine" for name, v in vectors.items()
                    if name in (VECTOR, COARSE) and v.distance != m.Distance.COSINE]
        coarse = vectors[COARSE].size if COARSE in vectors else None
        if self.coarse_dim is not None and self.coarse_dim != coarse:
            problems.append(f"it has coarse_dim={coarse}, but coarse_dim={self.coarse_dim} was requested")
        if problems:
            raise SchemaMismatchError(f"collection {self.collection!r} does not match: " + "; ".join(problems))
        self.coarse_dim = coarse
        entry = (getattr(info.config, "metadata", None) or {}).get(METADATA_KEY)
        if isinstance(entry, Mapping):
            fields = {k: _TYPE_NAMES[t] for k, t in (entry.get("fields") or {}).items() if t in _TYPE_NAMES}
            fingerprint = entry.get("fingerprint") if isinstance(entry.get("fingerprint"), dict) else None
            stored_q = entry.get("quantization") or _quantization_name(None, vectors[VECTOR])
        else:
            by_index = {v: k for k, v in _INDEX_TYPES.items()}
            fields = {k: by_index[str(getattr(s.data_type, "value", s.data_type))]
                      for k, s in (info.payload_schema or {}).items()
                      if "." not in k and str(getattr(s.data_type, "value", s.data_type)) in by_index}
            fingerprint, stored_q = None, _quantization_name(info.config.quantization_config, vectors[VECTOR])
        stored_q = QUANTIZATION_ALIASES.get(stored_q, stored_q)
        return Schema(int(vectors[VECTOR].size), fields, fingerprint, stored_q)

    def _create(self, schema: Schema) -> None:
        m = qdrant_models()
        if self.coarse_dim is not None and not 1 <= self.coarse_dim < schema.dim:
            raise InputError(f"coarse_dim must be smaller than dim={schema.dim}, got {self.coarse_dim}")
        datatype = m.Datatype.FLOAT16 if schema.quantization == "float16" else None
        vectors = {VECTOR: m.VectorParams(size=schema.dim, distance=m.Distance.COSINE, on_disk=self.on_disk or None,
                                          datatype=datatype)}
        if self.coarse_dim is not None:
            vectors[COARSE] = m.VectorParams(size=self.coarse_dim, distance=m.Distance.COSINE,
                                             on_disk=self.on_disk or None, datatype=datatype)
        entry = {"version": 1, "dim": schema.dim, "coarse_dim": self.coarse_dim, "quantization": schema.quantization,
                 "fields": {k: t.__name__ for k, t in schema.fields.items()}, "fingerprint": schema.fingerprint}
        try:
            hnsw = m.HnswConfigDiff(**self.hnsw) if self.hnsw else None
        except ValueError as exc:
            raise InputError(f"hnsw: {exc}") from None
        with self._calling("create_collection"):
            self._client.create_collection(self.collection, vectors_config=vectors, hnsw_config=hnsw,
                                           quantization_config=_quantization_config(schema.quantization),
                                           metadata={METADATA_KEY: entry})
        with self._calling("get_collection"):
            kept = (getattr(self._client.get_collection(self.collection).config, "metadata", None) or {})
        if METADATA_KEY not in kept:
            log.warning("Qdrant collection %r keeps no collection metadata (qdrant-client or server older than "
                        "1.16): its embedding fingerprint is not recorded", self.collection)
        if not self.target.local:  # local mode has no payload indexes (it scans; it only warns about them)
            for name, typ in schema.fields.items():
                with self._calling("create_payload_index"):
                    self._client.create_payload_index(self.collection, name, field_schema=m.PayloadSchemaType(_INDEX_TYPES[typ]),
                                                      wait=True)
        log.info("Qdrant collection %r: dim=%d, coarse_dim=%s, quantization=%s", self.collection, schema.dim,
                 self.coarse_dim, self.quantization)

    def _drop(self) -> None:
        try:
            with self._calling("delete_collection"):
                self._client.delete_collection(self.collection)
        except NotFoundError:
            pass

    def _close(self) -> None:
        if not self._owns_client:
            return
        if self.target.local:
            release_local(self._client)
        else:
            self._client.close()

    # ------------------------------------------------------------------ writing
    def _request_budget(self, max_bytes: int) -> int:
        # core.row_bytes counts the full vector only; scale the budget for the coarse one.
        return max_bytes if self.coarse_dim is None else max(1, max_bytes * self.dim // (self.dim + self.coarse_dim))

    def _payload(self, row: Row, norm: float) -> dict[str, Any]:
        """A row's payload; ValueError names what cannot be stored."""
        meta = json.dumps(row.metadata, ensure_ascii=False, default=str) if row.metadata else None
        for name, value in (("id", row.id), ("text", row.text), ("media", row.media), ("metadata", meta),
                            *((k, v) for k, v in row.fields.items() if isinstance(v, str))):
            if value is not None and not utf8_storable(value):
                raise ValueError(f"{name} {value!r} is not valid Unicode (a lone surrogate, e.g. from an undecodable "
                                 "file name); Qdrant stores UTF-8 text only")
        payload: dict[str, Any] = {"id": row.id, "text": row.text, "media": row.media, "modality": row.modality,
                                   "metadata": dict(row.metadata), NORM_KEY: norm}
        for name, typ in self._fields.items():
            payload[name] = _coerce(name, row.fields.get(name), typ)
        return payload

    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[tuple[str, str]]:
        """Upsert one batch; a batch Qdrant refuses is retried row by row so only the culprits fail."""
        m = qdrant_models()
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1)
        coarse = mrl(vectors, self.coarse_dim) if self.coarse_dim is not None else None
        failed: list[tuple[str, str]] = []  # Failure values
        keep: list[int] = []
        payloads: list[dict] = []
        for i, row in enumerate(rows):
            try:
                if coarse is not None and not np.asarray(vectors[i, :self.coarse_dim]).any():
                    raise ValueError(f"the vector's first {self.coarse_dim} dims (the coarse vector) are all zeros "
                                     "(cosine similarity is undefined)")
                payloads.append(self._payload(row, float(norms[i])))
                keep.append(i)
            except ValueError as exc:
                failed.append(Failure(row.id, str(exc), "write"))
        if not keep:
            return failed

        def batch(idx: list[int], pay: list[dict]) -> Any:
            named = {VECTOR: vectors[idx].tolist()}
            if coarse is not None:
                named[COARSE] = coarse[idx].tolist()
            return m.Batch(ids=[point_id(rows[i].id) for i in idx], vectors=named, payloads=pay)

        try:
            with self._calling("upsert"):
                self._client.upsert(self.collection, points=batch(keep, payloads), wait=True)
            return failed
        except (UnavailableError, NotFoundError):
            raise
        except Exception as exc:  # noqa: BLE001 - find the culprit(s): the others still land
            if len(keep) == 1:
                return failed + [Failure(rows[keep[0]].id, f"Qdrant rejected the row: {exc.__cause__ or exc}", "write")]
            log.warning("qdrant upsert of %d rows failed (%s); retrying row by row", len(keep), exc)
        for i, pay in zip(keep, payloads):
            try:
                with self._calling("upsert"):
                    self._client.upsert(self.collection, points=batch([i], [pay]), wait=True)
            except Exception as exc:  # noqa: BLE001 - reported per row
                failed.append(Failure(rows[i].id, f"Qdrant rejected the row: {exc.__cause__ or exc}", "write",
                                      isinstance(exc, UnavailableError)))
        return failed

    # ------------------------------------------------------------------ searching
    def _compile(self, node: Node) -> tuple[Any, Node | None, bool]:
        """``(Filter or None, the tree to check the hits with, exact)`` (see :func:`compile_condition`)."""
        condition, exact = compile_condition(node)
        return as_filter(condition), node, exact

    def _native_filter(self, flt: Any) -> tuple[Any, Node | None, bool]:
        if not isinstance(flt, qdrant_models().Filter):
            return super()._native_filter(flt)
        return flt, None, True

    def _search_params(self, exact: bool | None, hnsw_ef: int | None, rescore: bool | None,
                       oversampling: float | None) -> Any:
        m = qdrant_models()
        quant = None
        if self.quantization in ("int8", "binary"):
            if oversampling is None and self.quantization == "binary":
                oversampling = float(RESCORE_OVERSAMPLING)
            quant = m.QuantizationSearchParams(rescore=True if rescore is None else bool(rescore),
                                               oversampling=oversampling)
        elif rescore is not None or oversampling is not None:
            raise InputError(f"rescore and oversampling apply to a quantized collection (int8 or binary); this one "
                             f"is {self.quantization}")
        exact = self.exact if exact is None else bool(exact)
        if not exact and hnsw_ef is None and quant is None:
            return None
        return m.SearchParams(hnsw_ef=hnsw_ef, exact=exact, quantization=quant)

    def _nearest(self, vector: np.ndarray, n: int, where: Any, *, content: bool, using: str | None = None,
                 coarse_candidates: int | None = None, exact: bool | None = None, hnsw_ef: int | None = None,
                 rescore: bool | None = None, oversampling: float | None = None, **unknown: Any) -> list[Hit]:
        if unknown:
            raise InputError(f"unknown search option(s) {sorted(unknown)}; Qdrant takes using, coarse_candidates, "
                             "exact, hnsw_ef, rescore and oversampling")
        allowed = [VECTOR] + ([COARSE] if self.coarse_dim is not None else [])
        if using is not None and using not in allowed:
            raise InputError(f"using must be one of {allowed}, got {using!r}")
        if coarse_candidates is not None and (isinstance(coarse_candidates, bool) or not isinstance(
                coarse_candidates, int) or coarse_candidates < n):
            raise InputError(f"coarse_candidates must be an integer of at least {n}, got {coarse_candidates!r}")
        native, post, exact_filter = where if where is not None else (None, None, True)
        params = self._search_params(exact, hnsw_ef, rescore, oversampling)
        if self.target.local:
            params = None  # local mode always searches exactly (and warns about search params)
        full = np.asarray(vector, dtype=np.float32).reshape(-1)
        cq = None
        if self.coarse_dim is not None and using != VECTOR:
            cq = mrl(full, self.coarse_dim)[0]
            if not cq.any():
                raise InputError(f"the query vector's first {self.coarse_dim} dims (the coarse vector) are all zeros "
                                 "(cosine similarity is undefined)")
        fetch = n if exact_filter else min(MAX_FETCH, max(4 * n, 100))
        while True:
            points = self._query(full, cq, using, fetch, native, params, coarse_candidates)
            hits = [_hit(p) for p in points]
            if post is None:
                return hits[:n]
            kept = [h for h in hits if matches(post, h.fields)]
            if len(kept) >= n or len(points) < fetch or fetch >= MAX_FETCH:
                return kept[:n]
            fetch = min(MAX_FETCH, fetch * 4)

    def _query(self, full: np.ndarray, cq: np.ndarray | None, using: str | None, limit: int, flt: Any,
               params: Any, coarse_candidates: int | None) -> list[Any]:
        m = qdrant_models()
        kwargs: dict[str, Any] = {"limit": limit, "with_payload": True, "search_params": params}
        if using == COARSE:
            kwargs.update(query=cq.tolist(), using=COARSE, query_filter=flt)  # type: ignore[union-attr]
        elif cq is not None:  # coarse-to-fine in one call: the coarse shortlist, re-scored at full dim
            shortlist = max(coarse_candidates or max(4 * limit, 50), limit)
            kwargs.update(prefetch=m.Prefetch(query=cq.tolist(), using=COARSE, limit=shortlist, filter=flt,
                                              params=params), query=full.tolist(), using=VECTOR)
        else:
            kwargs.update(query=full.tolist(), using=VECTOR, query_filter=flt)
        with self._calling("query_points"):
            return list(self._client.query_points(self.collection, **kwargs).points)

    # ------------------------------------------------------------------ reading, deleting
    def _existing(self, ids: list[str]) -> Iterable[str]:
        by_point = {point_id(i): i for i in ids}
        points = list(by_point)
        found: list[str] = []
        for start in range(0, len(points), IDS_PER_REQUEST):
            with self._calling("retrieve"):
                got = self._client.retrieve(self.collection, ids=points[start:start + IDS_PER_REQUEST],
                                            with_payload=False, with_vectors=False)
            found += [by_point[str(p.id)] for p in got if str(p.id) in by_point]
        return found

    def _delete(self, ids: list[str]) -> None:
        m = qdrant_models()
        points = [point_id(i) for i in ids]
        for start in range(0, len(points), IDS_PER_REQUEST):
            with self._calling("delete"):
                self._client.delete(self.collection, points_selector=m.PointIdsList(
                    points=points[start:start + IDS_PER_REQUEST]), wait=True)

    def _count(self) -> int:
        with self._calling("count"):
            return int(self._client.count(self.collection, exact=True).count)

    def _page(self, cursor: str | None, limit: int) -> tuple[list[StoredRow], str | None]:
        """One page in point id order (Qdrant's scroll); the cursor is the next page's first point id."""
        limit = max(1, min(limit, self.max_bytes // (4 * self.dim + 256)))
        with self._calling("scroll"):
            records, nxt = self._client.scroll(self.collection, limit=limit, offset=cursor, with_payload=True,
                                               with_vectors=[VECTOR])
        rows = []
        for rec in records:
            hit = _hit(rec)
            vec = rec.vector[VECTOR] if isinstance(rec.vector, Mapping) else rec.vector
            norm = (rec.payload or {}).get(NORM_KEY)
            rows.append(StoredRow(hit.id, np.asarray(vec, dtype=np.float32) * np.float32(norm or 1.0), hit.fields))
        return rows, (str(nxt) if nxt is not None else None)


def _hit(point: Any) -> Hit:
    """A returned point as a hit: the row id from the payload, the payload as its fields."""
    fields = dict(point.payload or {})
    rid = fields.pop("id", None)
    fields.pop(NORM_KEY, None)
    return Hit(id=str(rid if rid is not None else point.id), score=float(getattr(point, "score", 0.0) or 0.0),
               fields=fields)


def _quantization_config(kind: str | None) -> Any:
    m = qdrant_models()
    if kind == "int8":
        return m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8, quantile=0.99,
                                                                      always_ram=True))
    if kind == "binary":
        return m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True))
    return None


def _quantization_name(config: Any, vector: Any) -> str:
    """The option a collection made elsewhere amounts to: its quantization config, else its vectors' datatype."""
    if getattr(config, "scalar", None) is not None:
        return "int8"
    if getattr(config, "binary", None) is not None:
        return "binary"
    datatype = getattr(vector, "datatype", None)
    return "float16" if str(getattr(datatype, "value", datatype)) == "float16" else "float32"


def _coerce(name: str, value: Any, typ: type) -> Any:
    """A declared field's value, checked against its type (None stays None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return None
    if typ is bool and isinstance(value, bool):
        return value
    if typ is int and isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63:
        return value
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value):
        return float(value)
    if typ is str and isinstance(value, str):
        return value
    raise ValueError(f"field {name!r} must be {typ.__name__} (or None), got {type(value).__name__} {value!r}")


def open_store(target: str, *, collection: str, embedder: EmbedderLike | None = None, dim: int | None = None,
               allow_mismatch: bool = False, api_key: str | None = None, coarse_dim: int | None = None,
               quantization: str | None = None, hnsw: Mapping[str, Any] | None = None, on_disk: bool = False,
               exact: bool = False, timeout: int | None = None, client: "QdrantClient | None" = None,
               **client_kwargs: Any) -> QdrantStore:
    """Open a Qdrant collection as a store (it is created by :meth:`QdrantStore.create`).

    Args:
        target: ``qdrant:./folder`` (local mode: in-process, persisted to the folder; one
            process per folder), ``qdrant://host:6333`` or ``qdrant+https://host:6333`` (a server).
        collection: the collection name (letters, digits, ``_``, ``-``, ``.``).
        embedder: an ``Embedder`` or ``RemoteEmbedder`` (None: precomputed vectors only).
        dim: the vector dim (an MRL dim of the embedder); default: the existing collection's,
            else the embedder's full dim.
        allow_mismatch: open a collection whose vectors were made another way than ``embedder``
            makes them (see :class:`connectors.base.BaseStore`).
        api_key: the server's API key (default: ``$QDRANT_API_KEY``).
        coarse_dim: add a ``coarse`` named vector (the MRL prefix at this dim): search then
            shortlists on it and re-scores the shortlist at full dim, in one Query API call.
        quantization: ``"float32"`` (default: an existing collection's), ``"float16"`` (the vectors'
            ``datatype``), ``"int8"`` (scalar quantization, quantile 0.99; ``"scalar"`` is accepted
            too) or ``"binary"`` (binary quantization, ``RESCORE_OVERSAMPLING`` times oversampled):
            Qdrant keeps the quantized vectors in RAM and searches them, then re-scores with the
            originals (``rescore``). Recorded in the collection's metadata. A server feature: local
            mode records the setting and searches the float vectors exactly.
        hnsw: HNSW settings (``m``, ``ef_construct``, ``full_scan_threshold``, ...).
        on_disk: keep the original vectors on disk (memmap) on a server.
        exact: every search is exact (a full scan, no HNSW); local mode always is.
        timeout: request timeout in seconds (a server).
        client: an existing ``QdrantClient`` to use (not closed by the store); ``target`` then
            only says whether it is local mode.
        **client_kwargs: passed to ``qdrant_client.QdrantClient`` (``prefer_grpc``, ``headers``...).

    Raises:
        InputError: a bad target, name, dim, coarse_dim or quantization.
        UnavailableError: the server cannot be reached, or another process has the folder open.
        SchemaMismatchError: the collection exists with another dim, coarse dim, quantization or fingerprint.
    """
    parsed = parse_target(target)
    if not isinstance(collection, str) or not COLLECTION_RE.match(collection):
        raise InputError(f"collection name {collection!r} is invalid: use letters, digits, '_', '-' and '.' "
                         "(not first), at most 255 characters")
    for name, value in (("dim", dim), ("coarse_dim", coarse_dim)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if coarse_dim is not None and dim is not None and coarse_dim >= dim:
        raise InputError(f"coarse_dim must be smaller than dim={dim}, got {coarse_dim}")
    if quantization is not None and QUANTIZATION_ALIASES.get(quantization, quantization) not in PRECISIONS:
        raise InputError(f"quantization must be one of {', '.join(PRECISIONS)} (or 'scalar', Qdrant's name for "
                         f"int8), got {quantization!r}")
    if quantization is not None:
        quantization = check_precision(QUANTIZATION_ALIASES.get(quantization, quantization))
    if hnsw is not None and not isinstance(hnsw, Mapping):
        raise InputError(f"hnsw must be a dict, got {type(hnsw).__name__}")
    qdrant_models()
    lock: Any = None
    owns = client is None
    if client is None and parsed.local:
        client, lock = acquire_local(parsed.path, **client_kwargs)  # type: ignore[arg-type]
    elif client is None:
        from qdrant_client import QdrantClient

        client_kwargs.setdefault("check_compatibility", False)  # one request less; errors come on first use
        client = QdrantClient(url=parsed.url, api_key=api_key or os.environ.get("QDRANT_API_KEY") or None,
                              timeout=timeout, **client_kwargs)
    elif parsed.local:
        lock = threading.RLock()
    try:
        return QdrantStore(client, parsed, collection=collection, embedder=embedder,
                           dim=int(dim) if dim is not None else None,
                           coarse_dim=int(coarse_dim) if coarse_dim is not None else None,
                           allow_mismatch=allow_mismatch, quantization=quantization, hnsw=hnsw, on_disk=on_disk,
                           exact=exact, lock=lock, owns_client=owns)
    except BaseException:
        if owns:
            release_local(client) if parsed.local else client.close()
        raise

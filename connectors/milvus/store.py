"""The Milvus store: :class:`MilvusStore` on the store skeleton, and :func:`open_store`.

:class:`connectors.base.BaseStore` does create/upsert/search/rerank/existing_ids/delete/
count/drop/scan and the checks; this module holds what is Milvus' own: the collection
layout (an optional coarse MRL field and its two-step search), the index and metric, load
on open, the flush after a write on Milvus Lite, :meth:`MilvusStore.refresh_index`, ids as
escaped expression literals, the embedding fingerprint and the quantization (``HNSW_SQ`` /
``IVF_SQ8``, see :func:`open_store`) in the collection's properties.
"""
from __future__ import annotations

import json
import logging
import pathlib
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from embedder.embedder import mrl
from embedder.contracts import EmbedderLike
from embedder.errors import ConnectorError, InputError, QVLError, SchemaMismatchError, UnavailableError

from ..base import BaseStore, Schema, StoredRow, check_field_types
from ..core import Failure, Hit, Row, UpsertReport, utf8_storable
from ..filters import Node
from ..quantization import unsupported
from .wire import (FIELD_TYPES, NAME_RE, MilvusTarget, check_name, check_vector_dim, compile_filter, driver_errors,
                   dtype_name, field_dim, fields_by_name, ids_filter, is_not_found, is_unavailable, lite_lock_conflict,
                   lite_locked_message, parse_target, pymilvus, string_literal, translate, translated)

if TYPE_CHECKING:  # pragma: no cover
    from pymilvus import CollectionSchema, MilvusClient

log = logging.getLogger(__name__)

INDEX_TYPES = ("HNSW", "AUTOINDEX", "IVF_FLAT", "FLAT")
METRICS = ("COSINE", "IP")
#: Bytes per upsert request: well under Milvus' 64 MB gRPC limit (room for protobuf overhead).
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
MAX_VARCHAR = 65535          # Milvus' VARCHAR limit, in bytes
ID_MAX_LENGTH = 512
MAX_TOPK = 16384             # Milvus' limit on ``limit`` of one search
VECTOR_FIELD = "vector"
COARSE_FIELD = "coarse_vector"
CONTENT_FIELDS = ("text", "media", "modality")
BASE_FIELDS = ("id", VECTOR_FIELD, *CONTENT_FIELDS, "metadata")
LAYOUT = {"id": "VARCHAR", VECTOR_FIELD: "FLOAT_VECTOR", "text": "VARCHAR", "media": "VARCHAR",
          "modality": "VARCHAR", "metadata": "JSON"}
DEFAULT_INDEX_PARAMS: dict[str, dict[str, Any]] = {
    "HNSW": {"M": 16, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 128},
    "FLAT": {},
    "AUTOINDEX": {},
}
IDS_PER_REQUEST = 1000       # ids per get/delete expression
#: The collection property holding the embedding fingerprint (JSON). A property, not the
#: description: Milvus Lite does not keep a collection's description.
FINGERPRINT_PROPERTY = "qvl.fingerprint"
QUANTIZATION_PROPERTY = "qvl.quantization"
#: quantization -> Milvus' scalar quantizer of HNSW_SQ (float32 keeps the requested index)
SQ_TYPES = {"float16": "FP16", "int8": "SQ8"}
# What pymilvus' query_iterator sends so that a query's page holds the smallest primary keys
# matching the filter, in order (a plain query with a limit promises neither, and Milvus Lite
# ignores order_by). _page sends them with its own escaped ``id > "<cursor>"`` expression:
# query_iterator itself writes the last id into its next expression unescaped.
_PK_ORDER = {"iterator": "True", "reduce_stop_for_best": "True"}


class MilvusStore(BaseStore):
    """A Milvus (or Milvus Lite) collection holding Qwen3-VL vectors and the content to rerank.

    Build one with :func:`open_store` or ``connectors.connect``; the shared behaviour is
    documented on :class:`connectors.base.BaseStore`. Milvus specifics:

    - ``filter`` also takes a Milvus boolean expression string (trusted input), passed through;
      a filter Milvus rejects raises ``InputError`` with Milvus' message.
    - ``search(..., output_fields=[...])`` limits the returned fields; ``search_params=``
      passes index search params (default ``ef=max(64, n)`` for HNSW, ``nprobe`` for IVF);
      ``coarse_candidates=`` sizes the coarse pass' shortlist (default ``max(4n, 50)``).
    - ``k`` and ``candidates`` are at most 16,384 (Milvus' limit).

    Attributes:
        collection: the collection name.
        target: where the store lives (:class:`MilvusTarget`).
        metric: ``COSINE`` or ``IP``.
        index: the index type used when creating the collection.
        coarse_dim: dim of the coarse MRL field, or None.
    """

    backend = "milvus"
    max_k = MAX_TOPK
    max_bytes = DEFAULT_MAX_BYTES
    native_filter = "a Milvus expression string"
    text_filter = True
    quantizations = ("float32", "float16", "int8")

    def __init__(self, client: "MilvusClient", target: MilvusTarget, *, collection: str, embedder: EmbedderLike | None,
                 dim: int | None, metric: str, index: str, index_params: Mapping[str, Any] | None,
                 coarse_dim: int | None, allow_mismatch: bool = False, quantization: str | None = None) -> None:
        super().__init__(collection=collection, embedder=embedder, dim=dim, allow_mismatch=allow_mismatch,
                         quantization=quantization)
        self._client = client
        self.target = target
        self.metric = metric
        self.index = index
        self.index_params = dict(index_params) if index_params is not None else dict(DEFAULT_INDEX_PARAMS[index])
        self.coarse_dim = coarse_dim
        self.open_existing()

    @property
    def client(self) -> "MilvusClient":
        """The native ``pymilvus.MilvusClient``, for everything this class does not wrap."""
        return self._client

    def _translating(self, what: str, *, filter: str | None = None) -> Any:
        return translated(what, collection=self.collection, filter=filter)

    def _translate(self, exc: BaseException, what: str) -> QVLError:
        """A pymilvus error as ours (``UnavailableError`` for a lost connection, a timeout, overload)."""
        return translate(exc, what, collection=self.collection)

    # ------------------------------------------------------------------ schema
    def _exists(self) -> bool:
        with self._translating("has_collection"):
            return bool(self._client.has_collection(self.collection))

    def _describe(self) -> Schema:
        """The collection's schema, checked against this connector's layout and the requested
        coarse dim and metric; the collection is loaded if it is not (a new process finds it
        released), so that an opened store can search at once."""
        with self._translating("describe_collection"):
            desc = self._client.describe_collection(self.collection)
        have = fields_by_name(desc)
        vec = have.get(VECTOR_FIELD)
        if vec is None or dtype_name(vec["type"]) != "FLOAT_VECTOR":
            raise SchemaMismatchError(
                f"collection {self.collection!r} has no FLOAT_VECTOR field {VECTOR_FIELD!r} "
                f"(fields: {sorted(have)}): it was not created by this connector")
        coarse = field_dim(have.get(COARSE_FIELD))
        if self.coarse_dim is not None and self.coarse_dim != coarse:
            raise SchemaMismatchError(f"collection {self.collection!r} has coarse_dim={coarse}, but "
                                      f"coarse_dim={self.coarse_dim} was requested")
        self.coarse_dim = coarse
        expected = {**LAYOUT, **({COARSE_FIELD: "FLOAT_VECTOR"} if coarse is not None else {})}
        problems = [f"field {name!r} ({typ}) is missing" if name not in have else
                    f"field {name!r} is {dtype_name(have[name]['type'])}, expected {typ}"
                    for name, typ in expected.items()
                    if name not in have or dtype_name(have[name]["type"]) != typ]
        if "id" in have and not have["id"].get("is_primary"):
            problems.append("field 'id' is not the primary key")
        if problems:
            raise SchemaMismatchError(f"collection {self.collection!r} does not match this connector's layout: "
                                      + "; ".join(problems))
        quantization = str((desc.get("properties") or {}).get(QUANTIZATION_PROPERTY) or "float32")
        self._check_index(quantization)
        self._ensure_loaded()
        by_type = {v: k for k, v in FIELD_TYPES.items()}
        fields = {name: by_type[dtype_name(info["type"])] for name, info in have.items()
                  if name not in (*BASE_FIELDS, COARSE_FIELD) and dtype_name(info["type"]) in by_type}
        return Schema(field_dim(vec) or 0, fields, self._stored_fingerprint(desc), quantization)

    def _stored_fingerprint(self, desc: Mapping[str, Any]) -> dict | None:
        raw = (desc.get("properties") or {}).get(FINGERPRINT_PROPERTY)
        if not raw:
            return None  # created without an embedder, or before fingerprints were recorded
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            log.warning("collection %r: property %s is not a JSON object; ignored", self.collection,
                        FINGERPRINT_PROPERTY)
            return None
        return value

    def index_spec(self, quantization: str | None = None) -> tuple[str, dict[str, Any]]:
        """The index type and build params that store the vectors at ``quantization`` (default: the store's)."""
        quantization = quantization or self.quantization
        if quantization not in SQ_TYPES:
            return self.index, dict(self.index_params)
        if quantization == "int8" and self.index == "IVF_FLAT":
            return "IVF_SQ8", dict(self.index_params)
        hnsw = self.index_params if self.index == "HNSW" else DEFAULT_INDEX_PARAMS["HNSW"]
        return "HNSW_SQ", {**hnsw, "sq_type": SQ_TYPES[quantization]}

    def _check_quantization(self, precision: str, dim: int) -> None:
        if precision == "binary":
            raise unsupported("milvus", precision, self.quantizations, "Milvus Lite has no BINARY_VECTOR field type"
                              if self.target.lite else "this connector does not use a server's BINARY_VECTOR yet")
        super()._check_quantization(precision, dim)

    def _check_index(self, quantization: str = "float32") -> None:
        with self._translating("describe_index"):
            info = self._client.describe_index(self.collection, VECTOR_FIELD) or {}
        metric = str(info.get("metric_type", "")).upper()
        if metric and metric != self.metric:
            raise SchemaMismatchError(f"collection {self.collection!r} is indexed with metric {metric}, "
                                      f"but metric={self.metric!r} was requested")
        index_type = str(info.get("index_type", "")).upper()
        if quantization != "float32" or index_type in ("HNSW_SQ", "IVF_SQ8"):
            return  # a quantized index: what it is follows from the recorded quantization
        if index_type and index_type != self.index:
            log.info("collection %r has index %s (requested %s); keeping the existing index",
                     self.collection, index_type, self.index)
            if index_type in INDEX_TYPES:
                self.index = index_type
                self.index_params = dict(DEFAULT_INDEX_PARAMS[index_type])

    def _check_fields(self, fields: Mapping[str, Any] | None) -> dict[str, type]:
        reserved = (*BASE_FIELDS, COARSE_FIELD, "image", "video", "instruction")
        return check_field_types(fields, reserved=reserved, valid_name=NAME_RE.match)

    def _create(self, schema: Schema) -> None:
        """Create the collection (fingerprint in its properties), build its index and load it."""
        if self.coarse_dim is not None and not 1 <= self.coarse_dim < schema.dim:
            raise InputError(f"coarse_dim must be smaller than dim={schema.dim}, got {self.coarse_dim}")
        index_params = self._client.prepare_index_params()
        index_type, params = self.index_spec(schema.quantization)
        for name in (VECTOR_FIELD, *([COARSE_FIELD] if self.coarse_dim is not None else [])):
            index_params.add_index(name, index_type=index_type, metric_type=self.metric, params=dict(params))
        properties = {FINGERPRINT_PROPERTY: json.dumps(schema.fingerprint, sort_keys=True)} \
            if schema.fingerprint else {}
        if schema.quantization != "float32":
            properties[QUANTIZATION_PROPERTY] = schema.quantization
        with self._translating("create_collection"):
            self._client.create_collection(self.collection, schema=self._milvus_schema(schema),
                                           consistency_level="Strong", properties=properties)
            # Milvus Lite builds indexes synchronously and lacks the RPC pymilvus polls with
            # (AllocTimestamp): waiting there only logs errors and sleeps.
            self._client.create_index(self.collection, index_params, sync=not self.target.lite)
        self._load()
        log.info("Milvus collection %r: coarse_dim=%s, index=%s, metric=%s", self.collection, self.coarse_dim,
                 index_type, self.metric)

    def _milvus_schema(self, schema: Schema) -> "CollectionSchema":
        from pymilvus import DataType

        out = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        out.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
        out.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=schema.dim)
        if self.coarse_dim is not None:
            out.add_field(COARSE_FIELD, DataType.FLOAT_VECTOR, dim=self.coarse_dim)
        for name in CONTENT_FIELDS:
            out.add_field(name, DataType.VARCHAR, max_length=MAX_VARCHAR, nullable=True)
        out.add_field("metadata", DataType.JSON)
        for name, typ in schema.fields.items():
            extra = {"max_length": MAX_VARCHAR} if typ is str else {}
            out.add_field(name, getattr(DataType, FIELD_TYPES[typ]), nullable=True, **extra)
        return out

    def _load(self) -> None:
        with self._translating("load_collection"):
            self._client.load_collection(self.collection)

    def _ensure_loaded(self) -> None:
        """Load the collection unless it is loaded (Milvus Lite releases every collection when
        its process ends; a server may have released it): search, get and query fail until it
        is. A loaded one is left as it is (see :meth:`refresh_index`)."""
        with self._translating("get_load_state"):
            state = (self._client.get_load_state(self.collection) or {}).get("state")
        if getattr(state, "name", str(state)).rsplit(".", 1)[-1] != "Loaded":
            self._load()

    def refresh_index(self) -> None:
        """Make searches use the index for every row written so far.

        Milvus Lite (3.x) searches rows written into a loaded collection by brute force
        until the collection is loaded again, which builds the index of the new segments
        only (about 1 s per 1,000 new rows at dim 1024 on 2 CPU cores; instant when
        nothing is new). Call this after a bulk load, before latency matters; results are
        the same either way. On a Milvus server it only flushes: the server indexes sealed
        segments and serves their indexes by itself.

        Raises:
            NotFoundError: the collection does not exist.

        Example:
            >>> store.upsert(rows); store.refresh_index()  # doctest: +SKIP
        """
        self._require_collection()
        with self._translating("flush"):
            self._client.flush(self.collection)
        if self.target.lite:
            with self._translating("release_collection"):
                self._client.release_collection(self.collection)
            self._load()

    # ------------------------------------------------------------------ writing
    def _request_budget(self, max_bytes: int) -> int:
        # core.row_bytes counts the main vector only; scale the budget for the coarse one.
        return max_bytes if self.coarse_dim is None else max(1, max_bytes * self.dim // (self.dim + self.coarse_dim))

    def _after_upsert(self, report: UpsertReport) -> None:
        if report.written and self.target.lite:
            # Milvus Lite: flush seals the segments written (durable, counted). Their index is
            # built when the collection is next loaded: see refresh_index().
            with self._translating("flush"):
                self._client.flush(self.collection)

    def _entity(self, row: Row, vector: np.ndarray) -> dict[str, Any]:
        """The Milvus entity for a row; ValueError names what does not fit."""
        if not utf8_storable(row.id):
            raise ValueError(f"id {row.id!r} is not valid Unicode (a lone surrogate, e.g. from an undecodable "
                             "file name); Milvus stores UTF-8 text only")
        if len(row.id.encode()) > ID_MAX_LENGTH:
            raise ValueError(f"id is longer than {ID_MAX_LENGTH} bytes")
        entity: dict[str, Any] = {"id": row.id, VECTOR_FIELD: np.asarray(vector, dtype=np.float32)}
        if self.coarse_dim is not None:
            entity[COARSE_FIELD] = mrl(entity[VECTOR_FIELD], self.coarse_dim)[0]
            if not entity[COARSE_FIELD].any():
                raise ValueError(f"the vector's first {self.coarse_dim} dims (the coarse field) are all zeros "
                                 "(cosine similarity is undefined)")
        for name, value in (("text", row.text), ("media", row.media), ("modality", row.modality)):
            if value is not None and len(value.encode()) > MAX_VARCHAR:
                raise ValueError(f"{name} is {len(value.encode())} bytes; Milvus VARCHAR holds at most {MAX_VARCHAR}")
            entity[name] = value
        entity["metadata"] = row.metadata
        for name, typ in self._fields.items():
            entity[name] = _coerce(name, row.fields.get(name), typ)
        return entity

    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[Failure]:
        failed: list[Failure] = []
        entities: list[dict[str, Any]] = []
        ids: list[str] = []
        for row, vec in zip(rows, vectors):
            try:
                entities.append(self._entity(row, vec))
                ids.append(row.id)
            except ValueError as exc:
                failed.append(Failure(row.id, str(exc), "write"))
        if not entities:
            return failed
        log.debug("milvus upsert: %d rows into %r", len(entities), self.collection)
        try:
            self._client.upsert(self.collection, entities)
        except driver_errors() as exc:
            if is_unavailable(exc) or is_not_found(exc) or len(entities) == 1:
                raise self._translate(exc, "upsert") from exc
            # Find the culprit(s): the others still land.
            log.warning("milvus upsert of %d rows failed (%s); retrying row by row", len(entities), exc)
            for rid, entity in zip(ids, entities):
                try:
                    self._client.upsert(self.collection, [entity])
                except driver_errors() as one:
                    err = self._translate(one, "upsert")
                    failed.append(Failure(rid, f"Milvus rejected the row: {getattr(one, 'message', one)}", "write",
                                          isinstance(err, UnavailableError)))
        return failed

    # ------------------------------------------------------------------ reading, deleting
    def _get(self, ids: Sequence[str], output_fields: Sequence[str]) -> list[dict[str, Any]]:
        """Rows by id (not ``client.get``, which splices ids into the expression unescaped)."""
        rows: list[dict[str, Any]] = []
        with self._translating("get"):
            for start in range(0, len(ids), IDS_PER_REQUEST):
                rows += self._client.query(self.collection, filter=ids_filter(ids[start:start + IDS_PER_REQUEST]),
                                           output_fields=list(output_fields))
        return rows

    def _existing(self, ids: list[str]) -> list[str]:
        return [str(r["id"]) for r in self._get(ids, ["id"])]

    def _delete(self, ids: list[str]) -> None:
        with self._translating("delete"):
            for start in range(0, len(ids), IDS_PER_REQUEST):
                # not delete(ids=...): pymilvus splices those into the expression unescaped
                self._client.delete(self.collection, filter=ids_filter(ids[start:start + IDS_PER_REQUEST]))

    def _count(self) -> int:
        with self._translating("count"):
            res = self._client.query(self.collection, filter="", output_fields=["count(*)"],
                                     consistency_level="Strong")
        return int(res[0]["count(*)"]) if res else 0

    def _drop(self) -> None:
        with self._translating("drop_collection"):
            self._client.drop_collection(self.collection)

    def _close(self) -> None:
        self._client.close()

    def _page(self, cursor: str | None, limit: int) -> tuple[list[StoredRow], str | None]:
        """The ``limit`` rows with the smallest ids above ``cursor`` (the last id of the previous page).

        One query per page with the primary-key order query_iterator relies on (see
        ``_PK_ORDER``), one row more than the page to know whether another follows. A page
        that comes back out of order (a server that ignores it) is an error, never a row skipped.
        A page is also kept under Milvus' query limit (16,384 rows) and about ``max_bytes`` of vectors.
        """
        limit = max(1, min(limit, MAX_TOPK - 1, self.max_bytes // (4 * self.dim + 256)))
        fields = [*CONTENT_FIELDS, "metadata", *self._fields]
        expr = 'id >= ""' if cursor is None else f"id > {string_literal(cursor)}"
        with self._translating("query"):
            res = self._client.query(self.collection, filter=expr, output_fields=["id", VECTOR_FIELD, *fields],
                                     limit=limit + 1, consistency_level="Strong", **_PK_ORDER)
        ids = [str(r["id"]) for r in res]
        if ids != sorted(ids):
            raise ConnectorError(f"Milvus returned the rows of {self.collection!r} out of primary-key order; "
                                 "this server cannot page through a collection")
        rows = [StoredRow(rid, np.asarray(r[VECTOR_FIELD], dtype=np.float32), {f: r.get(f) for f in fields})
                for rid, r in zip(ids[:limit], res)]
        return rows, (ids[limit - 1] if len(ids) > limit else None)

    # ------------------------------------------------------------------ search
    def _compile(self, node: Node) -> str:
        return compile_filter(node)

    def _native_filter(self, flt: Any) -> str:
        if not isinstance(flt, str):
            return super()._native_filter(flt)
        return flt

    def _nearest(self, vector: np.ndarray, n: int, where: str | None, *, content: bool,
                 output_fields: Sequence[str] | None = None, search_params: Mapping[str, Any] | None = None,
                 coarse_candidates: int | None = None, **unknown: Any) -> list[Hit]:
        if unknown:
            raise InputError(f"unknown search option(s) {sorted(unknown)}; Milvus takes output_fields, "
                             "search_params and coarse_candidates")
        fields = self._output_fields(output_fields, need_content=content)
        if self.coarse_dim is not None:
            return self._two_step(vector, n, filter=where, fields=fields, coarse_candidates=coarse_candidates,
                                  search_params=search_params)
        return self._ann(VECTOR_FIELD, vector, n, filter=where, fields=fields, search_params=search_params)

    def _output_fields(self, requested: Sequence[str] | None, *, need_content: bool) -> list[str]:
        allowed = [*CONTENT_FIELDS, "metadata", *self._fields]
        if requested is None:
            fields = list(allowed)
        else:
            if isinstance(requested, str):
                requested = [requested]
            bad = [f for f in requested if f not in allowed and f not in ("id", VECTOR_FIELD, COARSE_FIELD)]
            if bad:
                raise InputError(f"unknown output field(s) {bad}; allowed are {allowed + [VECTOR_FIELD]}")
            fields = [f for f in requested if f != "id"]
        if need_content:
            fields += [f for f in CONTENT_FIELDS if f not in fields]
        return fields

    def _search_params(self, n: int, given: Mapping[str, Any] | None) -> dict[str, Any]:
        index_type = self.index_spec()[0]
        if given is not None:
            params = dict(given)
        elif index_type in ("HNSW", "HNSW_SQ"):
            params = {"ef": max(64, n)}
        elif index_type in ("IVF_FLAT", "IVF_SQ8"):
            params = {"nprobe": min(int(self.index_params.get("nlist", 128)), 32)}
        else:
            params = {}
        return {"metric_type": self.metric, "params": params}

    def _ann(self, anns_field: str, qvec: np.ndarray, n: int, *, filter: str | None, fields: list[str],
             search_params: Mapping[str, Any] | None) -> list[Hit]:
        with self._translating("search", filter=filter):
            res = self._client.search(self.collection, data=[np.asarray(qvec, np.float32).tolist()],
                                      anns_field=anns_field, limit=n, filter=filter or "",
                                      output_fields=fields, search_params=self._search_params(n, search_params),
                                      consistency_level="Strong")
        return [Hit(id=str(h["id"]), score=float(h["distance"]), fields=dict(h.get("entity") or {}))
                for h in (res[0] if res else [])]

    def _two_step(self, qvec: np.ndarray, n: int, *, filter: str | None, fields: list[str],
                  coarse_candidates: int | None, search_params: Mapping[str, Any] | None) -> list[Hit]:
        """Coarse MRL prefix search for a shortlist, then exact re-scoring at full dim."""
        assert self.coarse_dim is not None
        shortlist_n = coarse_candidates or min(MAX_TOPK, max(4 * n, 50))
        if shortlist_n < n:
            raise InputError(f"coarse_candidates must be at least {n}, got {shortlist_n}")
        cq = mrl(qvec, self.coarse_dim)[0]
        if not cq.any():
            raise InputError(f"the query vector's first {self.coarse_dim} dims (the coarse field) are all zeros "
                             "(cosine similarity is undefined)")
        shortlist = self._ann(COARSE_FIELD, cq, shortlist_n, filter=filter, fields=[], search_params=search_params)
        if not shortlist:
            return []
        ids = [h.id for h in shortlist]
        by_id = {str(r["id"]): r for r in self._get(ids, [VECTOR_FIELD, *fields])}
        ids = [i for i in ids if i in by_id]
        mat = np.asarray([by_id[i][VECTOR_FIELD] for i in ids], dtype=np.float32)
        q = np.asarray(qvec, np.float32)
        scores = mat @ q
        if self.metric == "COSINE":
            denom = np.linalg.norm(mat, axis=1) * (np.linalg.norm(q) or 1.0)
            scores = scores / np.where(denom == 0, 1.0, denom)
        order = sorted(range(len(ids)), key=lambda j: (-float(scores[j]), j))[:n]
        keep = set(fields)
        return [Hit(id=ids[j], score=float(scores[j]),
                    fields={f: v for f, v in by_id[ids[j]].items() if f in keep}) for j in order]

    def __repr__(self) -> str:
        return (f"MilvusStore({self.target.uri!r}, collection={self.collection!r}, dim={self._dim}, "
                f"coarse_dim={self.coarse_dim}, index={self.index}, metric={self.metric}, "
                f"quantization={self.quantization})")


def _coerce(name: str, value: Any, typ: type) -> Any:
    """A declared field's value, checked against its type (None stays None: fields are nullable)."""
    if value is None:
        return None
    if typ is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
    elif typ is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            if -2**63 <= int(value) < 2**63:
                return int(value)
    elif typ is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
            return float(value)
    elif typ is str:
        if isinstance(value, str):
            if len(value.encode()) > MAX_VARCHAR:
                raise ValueError(f"field {name!r} is longer than {MAX_VARCHAR} bytes")
            return value
    raise ValueError(f"field {name!r} must be {typ.__name__} (or None), got {type(value).__name__} {value!r}")


def open_store(target: str | pathlib.Path, *, collection: str, embedder: EmbedderLike | None = None,
               dim: int | None = None,
               metric: str = "COSINE", index: str = "HNSW", index_params: Mapping[str, Any] | None = None,
               coarse_dim: int | None = None, allow_mismatch: bool = False, token: str | None = None,
               user: str | None = None, password: str | None = None, db_name: str | None = None,
               timeout: float | None = None, quantization: str | None = None, **client_kwargs: Any) -> MilvusStore:
    """Open a Milvus store (the collection may not exist yet: call ``create``).

    Args:
        target: ``milvus:./file.db`` or ``./file.db`` (Milvus Lite), ``milvus://host:19530``,
            ``milvus+https://host``, ``http(s)://host:19530``.
        collection: collection name (letters, digits, ``_``).
        embedder: an ``Embedder`` or ``RemoteEmbedder`` for rows and queries; None for a
            vector-only store (rows and queries then carry vectors).
        dim: vector dim (an MRL dim of the embedder). Default: the existing collection's,
            else the embedder's full dim.
        metric: ``COSINE`` (default) or ``IP``.
        index: ``HNSW`` (default), ``AUTOINDEX``, ``IVF_FLAT`` or ``FLAT``.
        index_params: index build params (default: M=16, efConstruction=200 for HNSW;
            nlist=128 for IVF_FLAT).
        coarse_dim: add a ``coarse_vector`` field holding the MRL prefix at this dim; search
            then shortlists on it and re-scores the shortlist at full dim.
        allow_mismatch: open a collection whose vectors another embedder made (see
            :class:`connectors.base.BaseStore`).
        quantization: ``float32`` (default: the collection's), ``float16`` or ``int8``: the index becomes
            ``HNSW_SQ`` with ``sq_type`` ``FP16`` / ``SQ8`` (int8 with ``index="IVF_FLAT"``: ``IVF_SQ8``);
            ``binary`` is refused at ``create`` (Milvus Lite has no ``BINARY_VECTOR`` field).
        token, user, password, db_name, timeout: Milvus server connection settings.
        **client_kwargs: passed to ``pymilvus.MilvusClient``.

    Returns:
        A :class:`MilvusStore`.

    Raises:
        InputError: a bad target, metric, index, dim or collection name (the message lists
            the allowed values).
        SchemaMismatchError: the collection exists with another dim, coarse dim, metric,
            layout, quantization or embedding fingerprint.
        UnavailableError: the server cannot be reached, or another process has the Milvus
            Lite file open (Milvus Lite allows one process per file, until that process exits).
        MissingDependencyError: pymilvus is not installed.

    An existing collection is loaded if it is not loaded yet, so the store can search at once.

    Example:
        >>> store = open_store("milvus:./photos.db", collection="photos", embedder=emb, dim=1024)  # doctest: +SKIP
        >>> store.create(fields={"color": str}, exist_ok=True)                                    # doctest: +SKIP
    """
    parsed = parse_target(target)
    check_name("collection", collection)
    metric_u = str(metric).upper()
    if metric_u not in METRICS:
        raise InputError(f"metric {metric!r} is not supported; allowed are {list(METRICS)}")
    index_u = str(index).upper()
    if index_u not in INDEX_TYPES:
        raise InputError(f"index {index!r} is not supported; allowed are {list(INDEX_TYPES)}")
    if dim is not None:
        dim = check_vector_dim("dim", dim)
    if coarse_dim is not None:
        coarse_dim = check_vector_dim("coarse_dim", coarse_dim)
        if dim is not None and coarse_dim >= dim:
            raise InputError(f"coarse_dim must be smaller than dim={dim}, got {coarse_dim}")
    if index_params is not None and not isinstance(index_params, Mapping):
        raise InputError(f"index_params must be a dict, got {type(index_params).__name__}")
    module = pymilvus()
    if parsed.lite:
        pathlib.Path(parsed.uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        locked = lite_lock_conflict(parsed.uri)  # before pymilvus, which would log a traceback
        if locked is not None:
            raise UnavailableError(lite_locked_message(parsed.uri)) from locked
    try:
        client = module.MilvusClient(uri=parsed.uri, token=token or "", user=user or "", password=password or "",
                                     db_name=db_name or "", timeout=timeout, **client_kwargs)
    except driver_errors() as exc:
        if parsed.lite and lite_lock_conflict(parsed.uri) is not None:  # taken since the check
            raise UnavailableError(lite_locked_message(parsed.uri)) from exc
        raise UnavailableError(f"cannot connect to Milvus at {parsed.uri!r}: "
                               f"{getattr(exc, 'message', exc)}") from exc
    try:
        return MilvusStore(client, parsed, collection=collection, embedder=embedder, dim=dim, metric=metric_u,
                           index=index_u, index_params=index_params, coarse_dim=coarse_dim,
                           allow_mismatch=allow_mismatch, quantization=quantization)
    except BaseException:
        client.close()
        raise

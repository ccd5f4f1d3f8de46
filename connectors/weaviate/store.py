"""The Weaviate store: client-side Qwen3-VL vectors in named vectors at several MRL dims,
on the store skeleton (:class:`connectors.base.BaseStore`)."""
from __future__ import annotations

import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np

from embedder.embedder import mrl
from embedder.contracts import EmbedderLike
from embedder.errors import InputError, NotFoundError, SchemaMismatchError

from ..base import BaseStore, Schema, StoredRow
from ..core import Hit, Row, bad_vector_reason, check_dim, utf8_storable, vector_problems
from ..quantization import unsupported
from ..search import is_query_vector, query_vector
from ..filters import And, Node, Or, matches
from .client import (NAME_RE, WeaviateTarget, collection_name, connect_client, driver_errors, row_uuid,
                     translate)
from .schema import (CORE_PROPERTIES, SCALAR_TYPES, StoreSchema, check_fields, core_properties, data_type_name,
                     index_config, python_type, quantization_of, quantizer, user_property, weaviate_data_type)

if TYPE_CHECKING:  # pragma: no cover
    import weaviate

log = logging.getLogger(__name__)

_CHUNK = 1000  # ids per delete / lookup request
MAX_QUERY_RESULTS = 10000  # Weaviate's default QUERY_MAXIMUM_RESULTS: the most objects one search returns
#: ``insert_many``: one synchronous gRPC batch request per byte-budget batch (the fastest
#: here: no background threads); ``fixed_size`` / ``dynamic``: the client's batchers.
BATCHING = ("insert_many", "fixed_size", "dynamic")


@dataclass(frozen=True)
class _Where:
    """A compiled filter: the ``Filter`` Weaviate applies (None: none), and the portable tree
    to check on the returned objects when Weaviate cannot apply it exactly."""

    native: Any
    post: Node | None = None


class WeaviateStore(BaseStore):
    """A Weaviate collection of Qwen3-VL vectors (see :mod:`connectors.weaviate`).

    Build one with :func:`open_store` or ``connectors.connect("weaviate://...")``.

    Attributes:
        client: the native ``weaviate.WeaviateClient`` (for everything not wrapped here).
        collection: the collection name (as Weaviate stores it, first letter upper-case);
            ``name`` is the same.
        weaviate_collection: the native ``weaviate.collections.Collection``.
        dim: the largest named vector's dimension; precomputed row vectors have this size.
        named_vectors: named vector -> dimension.
        fields: the declared fields, ``{name: python type}`` (``str``, ``int``, ``float``,
            ``bool``, ``datetime``, ``list[str]``...).

    Search options (``store.search(..., **options)``): ``target_vector`` (a named vector, or
    several for Weaviate's multi-target search; default the largest) and
    ``return_properties`` (the properties hits carry; default all). The native filter is a
    ``weaviate.classes.query.Filter``.
    """

    backend = "weaviate"
    max_k = MAX_QUERY_RESULTS
    native_filter = "a weaviate Filter (weaviate.classes.query.Filter)"
    quantizations = ("float32", "int8", "binary")  # RQ-8 and BQ; Weaviate keeps no half-precision vectors

    def __init__(self, client: "weaviate.WeaviateClient", collection: str, *, embedder: EmbedderLike | None = None,
                 dim: int | None = None, named_vectors: Mapping[str, int] | None = None,
                 allow_mismatch: bool = False, owns_client: bool = True, index: str = "hnsw",
                 index_params: Mapping[str, Any] | None = None, metadata_fields: Mapping[str, Any] | None = None,
                 batching: str = "insert_many", batch_size: int = 256, concurrent_requests: int = 2,
                 quantization: str | None = None) -> None:
        if named_vectors is not None:
            if not named_vectors:
                raise InputError("named_vectors must name at least one vector, e.g. {'default': 1024}")
            for vname, vdim in named_vectors.items():
                if not isinstance(vname, str) or not NAME_RE.match(vname):
                    raise InputError(f"named vector {vname!r} must start with a letter and contain only letters, "
                                     "digits and underscores")
                if isinstance(vdim, bool) or not isinstance(vdim, (int, np.integer)) or vdim < 1:
                    raise InputError(f"named vector {vname!r}: dim must be a positive integer, got {vdim!r}")
            named_vectors = {k: int(v) for k, v in named_vectors.items()}
            if dim is not None and dim != max(named_vectors.values()):
                raise InputError(f"dim={dim} differs from the largest named vector ({max(named_vectors.values())})")
        elif dim is not None:
            named_vectors = {"default": int(dim)}
        if index not in ("hnsw", "flat"):
            raise InputError(f"index must be 'hnsw' or 'flat', got {index!r}")
        if batching not in BATCHING:
            raise InputError(f"batching must be one of {list(BATCHING)}, got {batching!r}")
        super().__init__(collection=collection_name(collection), embedder=embedder,
                         dim=max(named_vectors.values()) if named_vectors else None, allow_mismatch=allow_mismatch,
                         quantization=quantization)
        if quantization not in (None, "float32") and "quantizer" in (index_params or {}):
            raise InputError("pass quantization= or index_params['quantizer'] (Weaviate's own compression), not both")
        self._client = client
        self._owns_client = owns_client
        self._named = named_vectors  # None: adopted from the collection, else {"default": dim}
        self._named_asked = named_vectors is not None
        self.index = index
        self.index_params = dict(index_params or {})
        self._metadata_asked = metadata_fields is not None
        self.metadata_fields = ({k: data_type_name(weaviate_data_type(v, k)) for k, v in metadata_fields.items()}
                                if metadata_fields is not None else None)
        self.batching = batching
        self.batch_size = int(batch_size)
        self.concurrent_requests = int(concurrent_requests)
        self._write_lock = threading.Lock()
        self.open_existing()

    # ------------------------------------------------------------------ properties
    @property
    def client(self) -> "weaviate.WeaviateClient":
        """The native ``weaviate.WeaviateClient``."""
        return self._client

    @property
    def name(self) -> str:
        """The collection name (the same as ``collection``)."""
        return self.collection

    @property
    def weaviate_collection(self) -> Any:
        """The native ``weaviate.collections.Collection``."""
        return self._client.collections.get(self.collection)

    @property
    def named_vectors(self) -> dict[str, int]:
        """Named vector -> dimension (``{"default": dim}`` unless given or recorded)."""
        return dict(self._named) if self._named else {"default": self.dim}

    @property
    def default_vector(self) -> str:
        """The named vector searched by default: the largest."""
        named = self.named_vectors
        return max(named, key=lambda k: named[k])

    def exists(self) -> bool:
        """Whether the collection exists."""
        self._check_open()
        return self._exists()

    def __repr__(self) -> str:
        return f"WeaviateStore({self.collection!r}, named_vectors={self._named})"

    # ------------------------------------------------------------------ schema primitives
    def _translate(self, exc: BaseException, what: str) -> BaseException:
        return translate(exc, what)

    def _exists(self) -> bool:
        with driver_errors(f"checking collection {self.collection}"):
            return bool(self._client.collections.exists(self.collection))

    def _check_fields(self, fields: Mapping[str, Any] | None) -> dict[str, Any]:
        return check_fields(fields)

    def _describe(self) -> Schema:
        """Check the collection's named vectors (recorded dims) and properties, adopt them."""
        with driver_errors(f"reading the schema of {self.collection}"):
            config = self.weaviate_collection.config.get()
        recorded = StoreSchema.read(config.description)
        dims = recorded.vectors if recorded is not None else self._sampled_dims()
        if self._named_asked or dims:
            named = self._named if self._named_asked else dict(dims)
        elif self._dim is not None or self._embedder is not None:
            named = {"default": self.dim}
        else:
            raise InputError(f"collection {self.collection} records no vector dims: pass dim= or named_vectors=")
        problems: list[str] = []
        vectors = config.vector_config or {}
        missing = [v for v in named if v not in vectors]
        if missing:
            problems.append(f"named vectors {missing} are missing (it has {sorted(vectors)})")
        main = max(named, key=lambda v: named[v])  # its dim is the store's: checked as every store's is
        for vname, vdim in named.items():
            have = dims.get(vname)
            if have is not None and have != vdim and vname != main:
                problems.append(f"vector {vname!r} has {have} dims, not {vdim}")
        props = {p.name: p for p in config.properties}
        problems += [f"property {core!r} is missing" for core in CORE_PROPERTIES if core not in props]
        meta = props.get("metadata")
        meta_type = data_type_name(meta.data_type) if meta is not None else None
        want_meta = "object" if self.metadata_fields is not None else "text"
        if meta_type is not None and meta_type != want_meta and self._metadata_asked:
            problems.append(f"property 'metadata' is {meta_type}, not {want_meta}")
        if problems:
            raise SchemaMismatchError(f"collection {self.collection} does not match: " + "; ".join(problems))
        if not self._metadata_asked and meta_type == "object":  # adopted, as the named vectors are
            self.metadata_fields = {p.name: data_type_name(p.data_type) for p in (meta.nested_properties or [])}
        self._named = named
        fields = {k: python_type(p.data_type) for k, p in props.items() if k not in CORE_PROPERTIES}
        quantization = recorded.quantization if recorded is not None else \
            quantization_of(getattr(vectors.get(main), "vector_index_config", None))
        return Schema(dims.get(main, named[main]), fields, recorded.fingerprint if recorded is not None else None,
                      quantization)

    def _check_quantization(self, precision: str, dim: int) -> None:
        if precision == "float16":
            raise unsupported(self.backend, precision, self.quantizations, "Weaviate keeps no half-precision "
                              "vectors (its compression is RQ, SQ, BQ, PQ)")
        super()._check_quantization(precision, dim)

    def _sampled_dims(self) -> dict[str, int]:
        """Vector dims of one stored object (for collections created without our marker)."""
        with driver_errors(f"sampling {self.collection}"):
            res = self.weaviate_collection.query.fetch_objects(limit=1, include_vector=True)
        if not res.objects:
            return {}
        return {k: len(v) for k, v in (res.objects[0].vector or {}).items() if isinstance(v, list)}

    def _create(self, schema: Schema) -> None:
        from weaviate.classes.config import Configure

        named = self._named or {"default": schema.dim}
        for vname, vdim in named.items():
            try:
                check_dim(vdim, self._embedder)
            except InputError as exc:
                raise InputError(exc.reason if list(named) == ["default"]
                                 else f"named vector {vname!r}: {exc.reason}") from None
        properties = core_properties(self.metadata_fields) + [user_property(k, v) for k, v in schema.fields.items()]
        compression = quantizer(schema.quantization)
        params = {**self.index_params, **({"quantizer": compression} if compression is not None else {})}
        vector_config = [Configure.Vectors.self_provided(
            name=vname, vector_index_config=index_config(self.index, params)) for vname in named]
        marker = StoreSchema(named, schema.fingerprint, schema.quantization).marker()
        with driver_errors(f"creating collection {self.collection}"):
            self._client.collections.create(
                self.collection, description=marker, properties=properties,
                vector_config=vector_config, inverted_index_config=Configure.inverted_index(index_null_state=True))
        self._named = named

    def _drop(self) -> None:
        with driver_errors(f"dropping {self.collection}"):
            self._client.collections.delete(self.collection)

    def _close(self) -> None:
        if self._owns_client:
            self._client.close()

    # ------------------------------------------------------------------ writing
    def _before_upsert(self) -> None:
        # Weaviate's auto-schema would silently recreate a collection dropped by another handle.
        if not self._exists():
            self._known = False
            raise NotFoundError(f"collection {self.collection!r} does not exist; call store.create() first")

    def _properties(self, row: Row) -> dict[str, Any]:
        props: dict[str, Any] = {"row_id": row.id, "text": row.text, "media": row.media, "modality": row.modality,
                                 "metadata": row.metadata if self.metadata_fields is not None
                                 else json.dumps(row.metadata, ensure_ascii=False, sort_keys=True)}
        for key, value in row.fields.items():
            props[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return props

    def _refused(self, row: Row) -> str | None:
        """Why Weaviate would refuse a row, or mangle it, or fail its whole request for it (None: fine)."""
        if self.metadata_fields is not None and row.metadata:
            # auto-schema would add an undeclared key as a new nested property, typed by guess (3 -> 3.0)
            extra = sorted(k for k in row.metadata if k not in self.metadata_fields)
            if extra:
                return (f"metadata key(s) {extra} are not among metadata_fields {sorted(self.metadata_fields)} "
                        "(the collection stores metadata as an object with these fields)")
        return _unencodable(row)

    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[tuple[str, str]]:
        """Write one batch (every named vector cut from ``vectors``); return ``(row id, reason)`` failures."""
        # A smaller named vector is a prefix of the full one: it can be all zeros on its own.
        named = {vname: (vectors if vdim == self.dim else mrl(vectors, vdim))
                 for vname, vdim in self.named_vectors.items()}
        bad = {i: reason for i, row in enumerate(rows) if (reason := self._refused(row)) is not None}
        for vname, vecs in named.items():
            if vecs is not vectors:
                for i in np.flatnonzero(vector_problems(vecs)):
                    bad.setdefault(int(i), f"the vector's first {self.named_vectors[vname]} dims (named "
                                           f"vector {vname!r}) are all zeros (cosine similarity is undefined)")
        failed = [(rows[i].id, reason) for i, reason in sorted(bad.items())]
        keep = [i for i in range(len(rows)) if i not in bad]
        if not keep:
            return failed
        if bad:
            rows, named = [rows[i] for i in keep], {k: v[keep] for k, v in named.items()}
        by_uuid = {row_uuid(r.id): r.id for r in rows}
        collection = self.weaviate_collection
        with self._write_lock, driver_errors(f"writing to {self.collection}"):
            if self.batching == "insert_many":
                from weaviate.classes.data import DataObject

                objects = [DataObject(properties=self._properties(row), uuid=row_uuid(row.id),
                                      vector={vname: vecs[i].tolist() for vname, vecs in named.items()})
                           for i, row in enumerate(rows)]
                # ``concurrent_requests`` parallel requests keep the server's cores busy.
                step = max(1, -(-len(objects) // max(1, self.concurrent_requests)))
                parts = [objects[i:i + step] for i in range(0, len(objects), step)]
                if len(parts) == 1:
                    results = [collection.data.insert_many(parts[0])]
                else:
                    with ThreadPoolExecutor(max_workers=len(parts), thread_name_prefix="qvl-weaviate") as pool:
                        results = list(pool.map(collection.data.insert_many, parts))
                failed_objects = [err for res in results for err in res.errors.values()]
            else:
                # Equal-sized requests: the client's batcher waits a second for a short tail.
                n_requests = -(-len(rows) // self.batch_size)
                manager = (collection.batch.dynamic() if self.batching == "dynamic" else
                           collection.batch.fixed_size(batch_size=-(-len(rows) // n_requests),
                                                       concurrent_requests=self.concurrent_requests))
                with manager as batch:
                    for i, row in enumerate(rows):
                        batch.add_object(properties=self._properties(row), uuid=row_uuid(row.id),
                                         vector={vname: vecs[i].tolist() for vname, vecs in named.items()})
                failed_objects = list(collection.batch.failed_objects)
        for err in failed_objects:  # Weaviate's per-object errors
            obj_uuid = str(getattr(err.object_, "uuid", "") or err.original_uuid or "")
            rid = by_uuid.get(obj_uuid) or (err.object_.properties or {}).get("row_id") or obj_uuid
            failed.append((str(rid), err.message))
        return failed

    # ------------------------------------------------------------------ searching
    def _targets(self, target_vector: str | Sequence[str] | None) -> list[str]:
        names = [target_vector] if isinstance(target_vector, str) else list(target_vector or [self.default_vector])
        unknown = [n for n in names if n not in self.named_vectors]
        if unknown:
            raise InputError(f"unknown target vector(s) {unknown}; this store has {sorted(self.named_vectors)}")
        return names

    def _query_vector(self, query: Any, instruction: str | None, *, target_vector: Any = None,
                      **_: Any) -> np.ndarray:
        """An item embedded at ``dim``, or a given vector at ``dim`` or at the one target's dim."""
        names = self._targets(target_vector)
        if not is_query_vector(query):
            return query_vector(self._embedder, query, self.dim, instruction)
        vec = np.asarray(query, dtype=np.float32).reshape(-1)
        dims = {self.named_vectors[n] for n in names}
        if vec.shape[0] != self.dim and not (len(dims) == 1 and vec.shape[0] in dims):
            raise InputError(f"query vector has {vec.shape[0]} dims; the store has {self.dim}"
                             + (f" ({names[0]!r} has {dims.pop()})" if len(dims) == 1 else ""))
        reason = bad_vector_reason(vec)
        if reason is not None:
            raise InputError(f"query {reason}")
        return vec

    def _nearest(self, vector: np.ndarray, n: int, where: Any, *, content: bool,
                 target_vector: str | Sequence[str] | None = None,
                 return_properties: Sequence[str] | None = None) -> list[Hit]:
        from weaviate.classes.query import MetadataQuery

        names = self._targets(target_vector)
        near: dict[str, list[float]] = {}
        for name in names:
            d = self.named_vectors[name]
            cut = vector if vector.shape[0] == d else mrl(vector, d)[0]
            if not cut.any():
                raise InputError(f"the query vector's first {d} dims (named vector {name!r}) are all zeros "
                                 "(cosine similarity is undefined)")
            near[name] = cut.astype(np.float32).tolist()
        native, post = (where.native, where.post) if where is not None else (None, None)
        props = list(return_properties) if return_properties is not None else None
        if props is not None:  # the hit's id, what the reranker reads, what the post-filter reads
            extra = ["row_id"] + (["text", "media", "modality"] if content else [])
            extra += sorted(_filter_properties(post)) if post is not None else []
            props += [p for p in extra if p not in props]
        fetch = n if post is None else min(MAX_QUERY_RESULTS, max(4 * n, 100))
        while True:
            with driver_errors(f"searching {self.collection}"):
                res = self.weaviate_collection.query.near_vector(
                    near_vector=near[names[0]] if len(names) == 1 else near, limit=fetch, filters=native,
                    target_vector=names[0] if len(names) == 1 else names,
                    return_metadata=MetadataQuery(distance=True), return_properties=props)
            hits = [self._hit(obj) for obj in res.objects]
            if post is None:
                break
            hits = [h for h in hits if matches(post, h.fields)]
            if len(hits) >= n or len(res.objects) < fetch or fetch >= MAX_QUERY_RESULTS:
                if len(hits) < n and fetch >= MAX_QUERY_RESULTS:
                    log.warning("weaviate: only %d of the %d nearest objects match the filter", len(hits), fetch)
                break
            fetch = min(MAX_QUERY_RESULTS, fetch * 4)
        if post is not None and return_properties is not None:
            keep = set(return_properties) | ({"text", "media", "modality"} if content else set())
            for h in hits:
                for unwanted in [f for f in h.fields if f not in keep]:
                    del h.fields[unwanted]
        return hits[:n]

    def _native_filter(self, flt: Any) -> _Where:
        from weaviate.collections.classes.filters import _Filters

        if not isinstance(flt, _Filters):
            return super()._native_filter(flt)
        return _Where(flt)

    def _compile(self, node: Node) -> _Where:
        """Weaviate ``Filter`` objects for what Weaviate evaluates exactly, the rest checked on the hits."""
        native, exact = self._compile_node(node)
        return _Where(native, None if exact else node)

    def _compile_node(self, node: Node) -> tuple[Any, bool]:
        """``(Filter or None, exact)``: a filter selecting a superset of ``node``'s matches
        (None: no constraint), and whether it selects exactly them."""
        from weaviate.classes.query import Filter

        if isinstance(node, (And, Or)):
            compiled = [self._compile_node(p) for p in node.parts]
            exact = all(e for _, e in compiled)
            if isinstance(node, Or):
                if not compiled or any(f is None for f, _ in compiled):
                    return None, False
                return Filter.any_of([f for f, _ in compiled]), exact
            parts = [f for f, _ in compiled if f is not None]
            if not parts:
                return None, exact and not compiled
            return (parts[0] if len(parts) == 1 else Filter.all_of(parts)), exact
        if node.metadata:
            return None, False  # metadata is JSON text (or a nested object): Weaviate cannot filter it
        ftype = self._fields.get(node.key, str)
        if ftype not in SCALAR_TYPES:
            raise InputError(f"filter key {node.key!r}: the property is {getattr(ftype, '__name__', ftype)}; the "
                             "portable filter compares str, int, float and bool properties (pass a Filter for others)")

        def cast(v: Any) -> Any:
            if ftype is float:
                return float(v)
            if ftype is int:
                if float(v) != int(v):
                    raise ValueError(v)
                return int(v)
            return v

        try:
            value = tuple(cast(v) for v in node.value) if node.op == "$in" else cast(node.value)
        except ValueError:  # a fractional value for an int property: matched on the hits
            return None, False
        prop = Filter.by_property(node.key)
        # user text properties are tokenized as one value (exact); the built-ins by word
        exact = node.key in self._fields and node.op != "$ne"  # not_equal also matches a missing value
        if node.op == "$in":
            return prop.contains_any(list(value)), exact
        method = {"$eq": prop.equal, "$ne": prop.not_equal, "$gt": prop.greater_than,
                  "$gte": prop.greater_or_equal, "$lt": prop.less_than, "$lte": prop.less_or_equal}[node.op]
        return method(value), exact

    def _hit(self, obj: Any) -> Hit:
        rid, fields = _fields_of(obj)
        distance = obj.metadata.distance if obj.metadata is not None else None
        return Hit(id=rid, score=1.0 - float(distance) if distance is not None else float("nan"), fields=fields)

    # ------------------------------------------------------------------ reading, deleting
    def _existing(self, ids: list[str]) -> Iterable[str]:
        from weaviate.classes.query import Filter

        by_uuid = {row_uuid(i): i for i in ids}
        uuids = list(by_uuid)
        found: list[str] = []
        with driver_errors(f"looking up ids in {self.collection}"):
            for start in range(0, len(uuids), _CHUNK):
                chunk = uuids[start:start + _CHUNK]
                res = self.weaviate_collection.query.fetch_objects(filters=Filter.by_id().contains_any(chunk),
                                                                   limit=len(chunk), return_properties=[])
                found += [by_uuid[str(o.uuid)] for o in res.objects]
        return found

    def _delete(self, ids: list[str]) -> None:
        from weaviate.classes.query import Filter

        uuids = [row_uuid(i) for i in ids]
        with driver_errors(f"deleting from {self.collection}"):
            for start in range(0, len(uuids), _CHUNK):
                self.weaviate_collection.data.delete_many(
                    where=Filter.by_id().contains_any(uuids[start:start + _CHUNK]))

    def _count(self) -> int:
        with driver_errors(f"counting {self.collection}"):
            return int(self.weaviate_collection.aggregate.over_all(total_count=True).total_count or 0)

    def _page(self, cursor: str | None, limit: int) -> tuple[list[StoredRow], str | None]:
        """One page in UUID order (Weaviate's cursor); the cursor is the page's last UUID."""
        vname = self.default_vector
        with driver_errors(f"reading {self.collection}"):
            res = self.weaviate_collection.query.fetch_objects(limit=limit, after=cursor, include_vector=[vname])
        rows = []
        for obj in res.objects:
            rid, fields = _fields_of(obj)
            rows.append(StoredRow(rid, np.asarray((obj.vector or {})[vname], dtype=np.float32), fields))
        return rows, (str(res.objects[-1].uuid) if len(res.objects) == limit else None)


def _fields_of(obj: Any) -> tuple[str, dict]:
    """A returned object's row id and fields (``metadata`` decoded from its JSON text)."""
    props = dict(obj.properties or {})
    rid = props.pop("row_id", None) or str(obj.uuid)
    meta = props.get("metadata")
    if isinstance(meta, str):
        try:
            props["metadata"] = json.loads(meta)
        except ValueError:
            pass
    return str(rid), props


def _filter_properties(node: Node) -> set[str]:
    """The properties a post-filter reads."""
    if isinstance(node, (And, Or)):
        return set().union(*(_filter_properties(p) for p in node.parts))
    return {"metadata" if node.metadata else node.key}


def _unencodable(row: Row) -> str | None:
    """Why a row's strings cannot be sent to Weaviate (UTF-8 only), or None: a lone surrogate (e.g.
    from an undecodable file name) would fail the whole request, so it fails its row."""
    strings = {"id": row.id, "text": row.text, "media": row.media,
               "metadata": json.dumps(row.metadata, ensure_ascii=False, default=str) if row.metadata else None}
    strings.update((k, v) for k, v in row.fields.items() if isinstance(v, str))
    for name, value in strings.items():
        if value is not None and not utf8_storable(value):
            return (f"{name} {value!r} is not valid Unicode (a lone surrogate, e.g. from an undecodable file "
                    "name); Weaviate stores UTF-8 text only")
    return None


def open_store(target: str, *, collection: str, embedder: EmbedderLike | None = None, dim: int | None = None,
               named_vectors: Mapping[str, int] | None = None, allow_mismatch: bool = False,
               api_key: str | None = None, grpc_port: int | None = None, headers: Mapping[str, str] | None = None,
               client: "weaviate.WeaviateClient | None" = None, index: str = "hnsw",
               index_params: Mapping[str, Any] | None = None, metadata_fields: Mapping[str, Any] | None = None,
               batching: str = "insert_many", batch_size: int = 256, concurrent_requests: int = 2,
               timeout: tuple[int, int] = (60, 300), skip_init_checks: bool = True,
               quantization: str | None = None) -> WeaviateStore:
    """Open a Weaviate collection as a store (it is created by :meth:`WeaviateStore.create`).

    Args:
        target: ``weaviate://host:8080`` (``?grpc=PORT`` for a non-default gRPC port;
            ``weaviate+https://`` for TLS).
        collection: collection name (Weaviate upper-cases its first letter).
        embedder: an ``Embedder`` or ``RemoteEmbedder`` (None: precomputed vectors only).
        dim: the vector dimension when ``named_vectors`` is not given (default: the
            existing collection's recorded dims, else the embedder's full dim); the store
            then has one named vector ``default``.
        named_vectors: named vector -> MRL dim, e.g. ``{"full": 1024, "coarse": 256}``.
        allow_mismatch: open a collection whose vectors were made another way than
            ``embedder`` makes them (see :class:`connectors.base.BaseStore`).
        api_key: Weaviate API key.
        grpc_port: gRPC port (overrides ``?grpc=``; default 50051).
        headers: extra HTTP headers (e.g. module API keys).
        client: an already connected ``weaviate.WeaviateClient`` to use (not closed by
            :meth:`WeaviateStore.close`); ``target`` is then ignored.
        index: ``hnsw`` (default) or ``flat`` (exact search).
        index_params: extra vector index settings (``ef``, ``ef_construction``,
            ``max_connections``, ``quantizer``...), passed to ``Configure.VectorIndex``.
        metadata_fields: store ``metadata`` as an OBJECT with these nested fields
            (filterable) instead of TEXT holding JSON (default: as the existing collection does).
        batching: ``insert_many`` (default: one synchronous gRPC batch request per
            byte-budget batch), or the client's ``fixed_size`` / ``dynamic`` batchers.
        batch_size: the request size of the ``fixed_size`` batcher (rows embedded together
            are ``upsert(batch_size=)``).
        concurrent_requests: parallel write requests per batch.
        timeout: (query, insert) timeouts in seconds.
        skip_init_checks: skip the client's start-up checks (they include a PyPI request).
        quantization: ``float32`` (default: the collection's), ``int8`` (RQ, 8 bits) or ``binary``
            (BQ, re-scored with the uncompressed vectors), on every named vector; ``float16`` is
            refused at ``create`` (Weaviate has no half-precision vectors).

    Raises:
        UnavailableError: the server cannot be reached.
        SchemaMismatchError: the collection exists with other dims, properties, quantization or fingerprint.
    """
    owns = client is None
    if client is None:
        client = connect_client(WeaviateTarget.parse(target, grpc_port=grpc_port), api_key=api_key,
                                headers=headers, timeout=timeout, skip_init_checks=skip_init_checks)
    try:
        return WeaviateStore(client, collection, embedder=embedder, dim=dim, named_vectors=named_vectors,
                             allow_mismatch=allow_mismatch, owns_client=owns, index=index, index_params=index_params,
                             metadata_fields=metadata_fields, batching=batching, batch_size=batch_size,
                             concurrent_requests=concurrent_requests, quantization=quantization)
    except BaseException:
        if owns:
            client.close()
        raise

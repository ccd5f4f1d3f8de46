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

The Weaviate client is imported lazily (``pip install -e ".[weaviate]"``).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
import urllib.parse
import uuid as _uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from embedder.embedder import mrl
from embedder.errors import (ConnectorError, InputError, MissingDependencyError, NotFoundError,
                             SchemaMismatchError, UnavailableError)

from .core import (Hit, Row, UpsertReport, bad_vector_reason, check_dim, check_rerank_query, pipelined_upsert,
                   query_vector, rerank_candidates, rerank_hits, utf8_storable, vector_problems)
from .filters import And, Cond, Node, Or, matches, parse

if TYPE_CHECKING:  # pragma: no cover
    import weaviate

log = logging.getLogger(__name__)

#: Properties every store has; everything else is a user field.
CORE_PROPERTIES = ("row_id", "text", "media", "modality", "metadata")
DEFAULT_PORT = 8080
DEFAULT_GRPC_PORT = 50051
DESCRIPTION_PREFIX = "qvl:"
_NAME_RE = re.compile(r"^[A-Za-z][_0-9A-Za-z]*$")
_DELETE_CHUNK = 1000
MAX_QUERY_RESULTS = 10000  # Weaviate's default QUERY_MAXIMUM_RESULTS: the most objects one search returns
_SCALAR_TYPES = {"text": str, "int": int, "number": float, "boolean": bool}
#: ``insert_many``: one synchronous gRPC batch request per byte-budget batch (the fastest
#: here: no background threads); ``fixed_size`` / ``dynamic``: the client's batchers.
BATCHING = ("insert_many", "fixed_size", "dynamic")


# ---------------------------------------------------------------------------- small helpers
def _import_weaviate() -> Any:
    try:
        import weaviate
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("weaviate-client", "weaviate", "The Weaviate connector") from exc
    return weaviate


def row_uuid(row_id: str) -> str:
    """The object UUID of a row id: ``uuid5(NAMESPACE_DNS, row_id)``.

    This equals ``weaviate.util.generate_uuid5(row_id)``, so other tools can find a row.
    """
    return str(_uuid.uuid5(_uuid.NAMESPACE_DNS, str(row_id)))


def collection_name(name: str) -> str:
    """A Weaviate collection name: first letter upper-case (as Weaviate stores it).

    Raises:
        InputError: the name has characters Weaviate does not allow.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(f"collection name {name!r} must start with a letter and contain only "
                         "letters, digits and underscores")
    return name[0].upper() + name[1:]


@dataclass(frozen=True)
class WeaviateTarget:
    """Where a Weaviate server is: parsed from ``weaviate://host:8080?grpc=50051``.

    ``weaviate+https://`` (or ``?secure=true``) uses TLS for HTTP and gRPC.
    """

    host: str = "localhost"
    port: int = DEFAULT_PORT
    grpc_port: int = DEFAULT_GRPC_PORT
    secure: bool = False

    @classmethod
    def parse(cls, target: str, *, grpc_port: int | None = None) -> "WeaviateTarget":
        """Parse a target URL (``weaviate://``, ``weaviate+https://``, ``http(s)://``)."""
        parts = urllib.parse.urlsplit(target)
        scheme = parts.scheme.lower()
        if scheme not in ("weaviate", "weaviate+http", "weaviate+https", "http", "https"):
            raise InputError(f"not a Weaviate target: {target!r} (expected weaviate://host:port)")
        query = urllib.parse.parse_qs(parts.query)
        secure = scheme.endswith("https") or query.get("secure", ["false"])[0].lower() in ("1", "true", "yes")
        try:
            port = parts.port or (443 if secure else DEFAULT_PORT)
            grpc = grpc_port or int(query.get("grpc", [DEFAULT_GRPC_PORT])[0])
        except ValueError as exc:
            raise InputError(f"bad port in Weaviate target {target!r}: {exc}") from exc
        return cls(host=parts.hostname or "localhost", port=port, grpc_port=grpc, secure=secure)


def connect_client(target: WeaviateTarget, *, api_key: str | None = None, headers: Mapping[str, str] | None = None,
                   timeout: tuple[int, int] = (60, 300), skip_init_checks: bool = True) -> "weaviate.WeaviateClient":
    """A connected ``weaviate.WeaviateClient`` for ``target``.

    ``skip_init_checks`` (default True) skips the client's start-up checks, which include a
    request to PyPI; readiness is checked with ``/v1/.well-known/ready`` instead.

    Raises:
        UnavailableError: the server cannot be reached or is not ready.
    """
    weaviate = _import_weaviate()
    from weaviate.classes.init import AdditionalConfig, Auth, Timeout

    try:
        client = weaviate.connect_to_custom(
            http_host=target.host, http_port=target.port, http_secure=target.secure,
            grpc_host=target.host, grpc_port=target.grpc_port, grpc_secure=target.secure,
            headers=dict(headers or {}), auth_credentials=Auth.api_key(api_key) if api_key else None,
            additional_config=AdditionalConfig(timeout=Timeout(init=30, query=timeout[0], insert=timeout[1])),
            skip_init_checks=skip_init_checks)
    except Exception as exc:  # noqa: BLE001 - every connect failure means "unavailable"
        raise UnavailableError(f"cannot connect to Weaviate at {target.host}:{target.port} "
                               f"(gRPC {target.grpc_port}): {exc}") from exc
    try:
        ready = client.is_ready()
    except Exception:  # noqa: BLE001
        ready = False
    if not ready:
        client.close()
        raise UnavailableError(f"Weaviate at {target.host}:{target.port} is not ready")
    return client


@contextlib.contextmanager
def driver_errors(what: str) -> Iterator[None]:
    """Translate weaviate-client exceptions into this project's connector errors."""
    try:
        yield
    except (ConnectorError, InputError):
        raise
    except Exception as exc:
        from weaviate import exceptions as wex

        text = str(exc)
        if isinstance(exc, (wex.WeaviateConnectionError, wex.WeaviateGRPCUnavailableError, ConnectionError,
                            wex.WeaviateTimeoutError)):
            raise UnavailableError(f"{what}: Weaviate is unavailable: {text}") from exc
        if isinstance(exc, wex.UnexpectedStatusCodeError) and exc.status_code == 404 \
                or re.search(r"(class|collection) .*(not found|does not exist|could not find)|no such class"
                             r"|could not find (class|collection)", text, re.I):
            raise NotFoundError(f"{what}: {text}") from exc
        if isinstance(exc, wex.WeaviateBaseError):
            raise ConnectorError(f"{what}: {text}") from exc
        raise


# ---------------------------------------------------------------------------- field types
def weaviate_data_type(kind: Any, name: str = "") -> Any:
    """The Weaviate ``DataType`` for a Python type (``str``, ``int``, ``float``, ``bool``,
    ``datetime``, ``list[str]``...), a type name (``"text"``, ``"int"``...) or a ``DataType``.

    Raises:
        InputError: the type has no Weaviate equivalent (names the allowed ones).
    """
    from weaviate.classes.config import DataType

    if isinstance(kind, DataType):
        return kind
    table = {str: DataType.TEXT, int: DataType.INT, float: DataType.NUMBER, bool: DataType.BOOL,
             _dt.datetime: DataType.DATE, _dt.date: DataType.DATE, bytes: DataType.BLOB,
             list: DataType.TEXT_ARRAY, "text": DataType.TEXT, "str": DataType.TEXT, "string": DataType.TEXT,
             "int": DataType.INT, "float": DataType.NUMBER, "number": DataType.NUMBER, "bool": DataType.BOOL,
             "date": DataType.DATE, "datetime": DataType.DATE, "text[]": DataType.TEXT_ARRAY,
             "int[]": DataType.INT_ARRAY, "number[]": DataType.NUMBER_ARRAY, "float[]": DataType.NUMBER_ARRAY,
             "bool[]": DataType.BOOL_ARRAY, "uuid": DataType.UUID, "blob": DataType.BLOB}
    args = getattr(kind, "__args__", None)
    if getattr(kind, "__origin__", None) is list and args:
        table_list = {str: DataType.TEXT_ARRAY, int: DataType.INT_ARRAY, float: DataType.NUMBER_ARRAY,
                      bool: DataType.BOOL_ARRAY, _dt.datetime: DataType.DATE_ARRAY}
        if args[0] in table_list:
            return table_list[args[0]]
    key = kind.lower() if isinstance(kind, str) else kind
    try:
        return table[key]
    except (KeyError, TypeError):
        raise InputError(f"field {name!r}: type {kind!r} is not supported; use str, int, float, bool, datetime, "
                         "bytes, list[str], list[int], list[float], list[bool], a type name "
                         "(text, int, number, bool, date, text[], ...) or a weaviate DataType") from None


def _property(name: str, data_type: Any, **kwargs: Any) -> Any:
    from weaviate.classes.config import Property, Tokenization

    if str(data_type.value).startswith("text"):
        kwargs.setdefault("tokenization", Tokenization.WORD)
    return Property(name=name, data_type=data_type, **kwargs)


def _user_property(name: str, type_name: str) -> Any:
    """A user field: text is tokenized as one whole value, so ``filter={"color": "red"}`` is
    exact equality (word tokenization made it match "dark red", and "x or a" match "x")."""
    from weaviate.classes.config import DataType, Tokenization

    if type_name.startswith("text"):
        return _property(name, DataType(type_name), tokenization=Tokenization.FIELD)
    return _property(name, DataType(type_name))


def _data_type_name(dt: Any) -> str:
    return str(getattr(dt, "value", dt))


# ---------------------------------------------------------------------------- the store
@dataclass(frozen=True)
class StoreSchema:
    """What a store expects of its collection.

    Attributes:
        vectors: named vector -> dimension (the largest is the store's ``dim``).
        fields: user field -> Weaviate data type name.
        metadata_fields: when set, ``metadata`` is an OBJECT with these nested fields
            (name -> data type name); otherwise it is TEXT holding JSON.
    """

    vectors: Mapping[str, int]
    fields: Mapping[str, str] = field(default_factory=dict)
    metadata_fields: Mapping[str, str] | None = None

    def marker(self) -> str:
        """The collection description recording the vector dims (Weaviate keeps none)."""
        return DESCRIPTION_PREFIX + json.dumps({"vectors": dict(self.vectors)}, sort_keys=True)


class WeaviateStore:
    """A Weaviate collection of Qwen3-VL vectors (see the module docstring).

    Build one with :func:`open_store` or ``connectors.connect("weaviate://...")``.

    Attributes:
        client: the native ``weaviate.WeaviateClient`` (for everything not wrapped here).
        name: the collection name (as Weaviate stores it, first letter upper-case).
        dim: the largest named vector's dimension; precomputed row vectors have this size.
        named_vectors: named vector -> dimension.
        embedder: the embedder for rows and queries (None: vectors only).
    """

    def __init__(self, client: "weaviate.WeaviateClient", name: str, *, embedder: Any = None,
                 named_vectors: Mapping[str, int], owns_client: bool = True, index: str = "hnsw",
                 index_params: Mapping[str, Any] | None = None, metadata_fields: Mapping[str, Any] | None = None,
                 batching: str = "insert_many", batch_size: int = 256, concurrent_requests: int = 2,
                 show_progress: bool = False) -> None:
        if not named_vectors:
            raise InputError("named_vectors must name at least one vector, e.g. {'default': 1024}")
        for vname, vdim in named_vectors.items():
            if not isinstance(vname, str) or not _NAME_RE.match(vname):
                raise InputError(f"named vector {vname!r} must start with a letter and contain only letters, "
                                 "digits and underscores")
            if isinstance(vdim, bool) or not isinstance(vdim, (int, np.integer)) or vdim < 1:
                raise InputError(f"named vector {vname!r}: dim must be a positive integer, got {vdim!r}")
        if index not in ("hnsw", "flat"):
            raise InputError(f"index must be 'hnsw' or 'flat', got {index!r}")
        if batching not in BATCHING:
            raise InputError(f"batching must be one of {list(BATCHING)}, got {batching!r}")
        self.client = client
        self.name = collection_name(name)
        self.embedder = embedder
        self.named_vectors: dict[str, int] = {k: int(v) for k, v in named_vectors.items()}
        self.dim = max(self.named_vectors.values())
        self.default_vector = max(self.named_vectors, key=lambda k: self.named_vectors[k])
        self.index = index
        self.index_params = dict(index_params or {})
        self.metadata_fields = ({k: _data_type_name(weaviate_data_type(v, k)) for k, v in metadata_fields.items()}
                                if metadata_fields is not None else None)
        self.batching = batching
        self.batch_size = int(batch_size)
        self.concurrent_requests = int(concurrent_requests)
        self.show_progress = show_progress
        self._owns_client = owns_client
        self._fields: dict[str, str] = {}
        self._write_lock = threading.Lock()
        self._closed = False
        if embedder is not None and getattr(embedder, "dim", self.dim) < self.dim:
            raise InputError(f"dim must be an integer from 64 to {embedder.dim} (the model's full dim), got "
                             f"{self.dim}" + ("" if list(self.named_vectors) == ["default"] else
                                              f" (named vector {self.default_vector!r})"))
        if self.exists():
            self._fields = self._check_existing(None)

    # ------------------------------------------------------------------ schema
    @property
    def collection(self) -> Any:
        """The native ``weaviate.collections.Collection``."""
        return self.client.collections.get(self.name)

    @property
    def fields(self) -> dict[str, str]:
        """User fields of the collection: name -> Weaviate data type name."""
        return dict(self._fields)

    def exists(self) -> bool:
        """Whether the collection exists."""
        with driver_errors(f"checking collection {self.name}"):
            return bool(self.client.collections.exists(self.name))

    def create(self, fields: Mapping[str, Any] | None = None, *, exist_ok: bool = False) -> None:
        """Create the collection: one named vector per MRL dim, core properties, user fields.

        Args:
            fields: user fields, name -> type (``str``, ``int``, ``float``, ``bool``,
                ``datetime``, ``list[str]``..., a type name, or a Weaviate ``DataType``).
            exist_ok: an existing collection is checked (dims, properties) and kept.

        Raises:
            SchemaMismatchError: the existing collection differs (names what differs).
            ConnectorError: the collection exists and ``exist_ok`` is False.
            InputError: a reserved or invalid field name, or a named vector's dim outside
                64..the embedder's full dim (checked before anything is created).
        """
        from weaviate.classes.config import Configure, DataType, Tokenization

        wanted = {k: _data_type_name(weaviate_data_type(v, k)) for k, v in (fields or {}).items()}
        for fname in wanted:
            if fname in CORE_PROPERTIES or fname in ("id", "vector", "image", "video", "instruction") \
                    or not _NAME_RE.match(fname):
                raise InputError(f"field name {fname!r} is reserved or invalid; reserved: "
                                 f"{sorted(set(CORE_PROPERTIES) | {'id', 'vector', 'image', 'video', 'instruction'})}")
        if self.exists():
            if not exist_ok:
                raise ConnectorError(f"collection {self.name} already exists (pass exist_ok=True to keep it)")
            self._fields = self._check_existing(wanted)
            return
        for vname, vdim in self.named_vectors.items():
            try:
                check_dim(vdim, self.embedder)
            except InputError as exc:
                raise InputError(exc.reason if list(self.named_vectors) == ["default"]
                                 else f"named vector {vname!r}: {exc.reason}") from None
        schema = self.schema(wanted)
        if self.metadata_fields is not None:
            meta_prop = _property("metadata", DataType.OBJECT, nested_properties=[
                _nested(k, v) for k, v in self.metadata_fields.items()])
        else:
            meta_prop = _property("metadata", DataType.TEXT, index_filterable=False, index_searchable=False)
        properties = [
            _property("row_id", DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False),
            _property("text", DataType.TEXT),
            _property("media", DataType.TEXT, tokenization=Tokenization.FIELD),
            _property("modality", DataType.TEXT, tokenization=Tokenization.FIELD),
            meta_prop,
        ] + [_user_property(k, v) for k, v in wanted.items()]
        vector_config = [Configure.Vectors.self_provided(name=vname, vector_index_config=self._index_config())
                         for vname in self.named_vectors]
        with driver_errors(f"creating collection {self.name}"):
            self.client.collections.create(self.name, description=schema.marker(), properties=properties,
                                           vector_config=vector_config,
                                           inverted_index_config=Configure.inverted_index(index_null_state=True))
        self._fields = wanted
        log.info("created Weaviate collection %s with vectors %s", self.name, self.named_vectors)

    def schema(self, fields: Mapping[str, str] | None = None) -> StoreSchema:
        """The schema this store expects."""
        return StoreSchema(vectors=dict(self.named_vectors), fields=dict(fields or self._fields),
                           metadata_fields=self.metadata_fields)

    def _index_config(self) -> Any:
        from weaviate.classes.config import Configure, VectorDistances

        params = {"distance_metric": VectorDistances.COSINE, **self.index_params}
        if self.index == "flat":
            return Configure.VectorIndex.flat(**params)
        params.setdefault("ef_construction", 128)
        params.setdefault("max_connections", 32)
        return Configure.VectorIndex.hnsw(**params)

    def _check_existing(self, wanted: Mapping[str, str] | None) -> dict[str, str]:
        """Check vectors and properties of the existing collection; return its user fields."""
        with driver_errors(f"reading the schema of {self.name}"):
            config = self.collection.config.get()
        problems: list[str] = []
        vectors = config.vector_config or {}
        missing = [v for v in self.named_vectors if v not in vectors]
        if missing:
            problems.append(f"named vectors {missing} are missing (it has {sorted(vectors)})")
        recorded = _recorded_dims(config.description)
        if recorded is None:
            recorded = self._sampled_dims()
        for vname, vdim in self.named_vectors.items():
            have = recorded.get(vname)
            if have is not None and have != vdim:
                problems.append(f"vector {vname!r} has {have} dims, not {vdim}")
        props = {p.name: _data_type_name(p.data_type) for p in config.properties}
        for core in CORE_PROPERTIES:
            if core not in props:
                problems.append(f"property {core!r} is missing")
        want_meta = "object" if self.metadata_fields is not None else "text"
        if "metadata" in props and props["metadata"] != want_meta:
            problems.append(f"property 'metadata' is {props['metadata']}, not {want_meta}")
        for fname, ftype in (wanted or {}).items():
            if fname not in props:
                problems.append(f"field {fname!r} is missing")
            elif props[fname] != ftype:
                problems.append(f"field {fname!r} is {props[fname]}, not {ftype}")
        if problems:
            raise SchemaMismatchError(f"collection {self.name} does not match: " + "; ".join(problems))
        return {k: v for k, v in props.items() if k not in CORE_PROPERTIES}

    def _sampled_dims(self) -> dict[str, int]:
        """Vector dims of one stored object (for collections created without our marker)."""
        with driver_errors(f"sampling {self.name}"):
            res = self.collection.query.fetch_objects(limit=1, include_vector=True)
        if not res.objects:
            return {}
        return {k: len(v) for k, v in (res.objects[0].vector or {}).items() if isinstance(v, list)}

    # ------------------------------------------------------------------ writing
    def upsert(self, rows: Iterable[Mapping[str, Any]], *, show_progress: bool | None = None,
               batch_size: int | None = None) -> UpsertReport:
        """Embed (unless a row has a ``vector``) and write rows; re-running is idempotent.

        Rows are dicts with ``id``, ``text``, ``image``, ``video``, ``vector`` (precomputed,
        at ``dim``; smaller named vectors get its MRL truncation), ``metadata`` and user
        fields (any other top-level key goes into ``metadata``, as on every store). Each row's
        object UUID is ``uuid5`` of its id (:func:`row_uuid`).

        Returns:
            an :class:`UpsertReport`: every row is in ``written`` or in ``failed`` with the
            reason (client-side validation, embedding, or Weaviate's ``failed_objects``).

        Raises:
            NotFoundError: the collection does not exist (call :meth:`create`).
        """
        self._check_open()
        if not self.exists():
            raise NotFoundError(f"collection {self.name} does not exist; call create() first")
        return pipelined_upsert(rows, embedder=self.embedder,
                                dim=self.dim, write=self._write, batch_rows=batch_size or self.batch_size,
                                declared_fields=list(self._fields),
                                show_progress=self.show_progress if show_progress is None else show_progress,
                                desc=f"weaviate:{self.name}")

    def _properties(self, row: Row) -> dict[str, Any]:
        props: dict[str, Any] = {"row_id": row.id, "text": row.text, "media": row.media, "modality": row.modality,
                                 "metadata": row.metadata if self.metadata_fields is not None
                                 else json.dumps(row.metadata, ensure_ascii=False, sort_keys=True)}
        for key, value in row.fields.items():
            props[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return props

    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[tuple[str, str]]:
        """Write one batch with the client's batcher; return ``(row id, reason)`` failures."""
        # A string that is not valid Unicode (a lone surrogate, e.g. from an undecodable file
        # name) cannot travel as UTF-8: it would fail the whole request, so it fails its row here.
        unencodable = {i: reason for i, row in enumerate(rows) if (reason := _unencodable(row)) is not None}
        if unencodable:
            keep = [i for i in range(len(rows)) if i not in unencodable]
            failed_rows = [(rows[i].id, reason) for i, reason in unencodable.items()]
            return failed_rows + (self._write([rows[i] for i in keep], vectors[keep]) if keep else [])
        named = {vname: (vectors if vdim == self.dim else mrl(vectors, vdim))
                 for vname, vdim in self.named_vectors.items()}
        # A smaller named vector is a prefix of the full one: it can be all zeros on its own.
        zero_prefix: dict[int, str] = {}
        for vname, vecs in named.items():
            if vecs is not vectors:
                for i in np.flatnonzero(vector_problems(vecs)):
                    zero_prefix.setdefault(int(i), f"the vector's first {self.named_vectors[vname]} dims (named "
                                                   f"vector {vname!r}) are all zeros (cosine similarity is undefined)")
        if zero_prefix:
            keep = [i for i in range(len(rows)) if i not in zero_prefix]
            failed_rows = [(rows[i].id, reason) for i, reason in zero_prefix.items()]
            if not keep:
                return failed_rows
            return failed_rows + self._write([rows[i] for i in keep], vectors[keep])
        by_uuid = {row_uuid(r.id): r.id for r in rows}
        collection = self.collection
        with self._write_lock, driver_errors(f"writing to {self.name}"):
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
        failed: list[tuple[str, str]] = []
        for err in failed_objects:
            obj_uuid = str(getattr(err.object_, "uuid", "") or err.original_uuid or "")
            rid = by_uuid.get(obj_uuid) or (err.object_.properties or {}).get("row_id") or obj_uuid
            failed.append((str(rid), err.message))
        return failed

    # ------------------------------------------------------------------ reading
    def search(self, query: Any, k: int = 10, *, filter: Any = None, target_vector: str | Sequence[str] | None = None,
               rerank: Any = None, candidates: int | None = None, instruction: str | None = None,
               rerank_instruction: str | None = None, return_properties: Sequence[str] | None = None) -> list[Hit]:
        """The ``k`` nearest objects to ``query``, best first, optionally reranked.

        Args:
            query: an item (text, image, video, fused dict), embedded as a query; or a
                precomputed query vector (at ``dim``, or at the target vector's dim).
            k: number of hits.
            filter: the portable filter dict (``{"color": "red", "year": {"$gte": 2020}}``, see
                :mod:`connectors.filters`), compiled to ``Filter`` objects with the values
                passed as values; conditions Weaviate cannot evaluate exactly (``metadata``
                keys, which it stores as JSON text; ``$ne``, which Weaviate lets match a
                missing value) are checked on the returned objects, fetching more nearest
                neighbours until ``k`` match (up to 10,000). Or a
                ``weaviate.classes.query.Filter``, passed through (the native form).
            target_vector: the named vector to search (default: the largest); several
                names search them together (Weaviate's multi-target search).
            rerank: a ``Reranker`` (or ``RemoteReranker``): the best ``candidates`` by
                vector are rescored and the best ``k`` returned with both scores.
            candidates: how many vector hits to rerank (default ``max(4 * k, 20)``, as on every
                store; at least ``k``).
            instruction: the query instruction for the embedder.
            rerank_instruction: the reranker's instruction (default: its own).
            return_properties: properties to return (default: all).

        Returns:
            :class:`Hit` list; ``score`` is the cosine similarity, ``rerank_score`` the
            reranker's score or None.
        """
        from weaviate.classes.query import MetadataQuery

        self._check_open()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        names = [target_vector] if isinstance(target_vector, str) else list(target_vector or [self.default_vector])
        unknown = [n for n in names if n not in self.named_vectors]
        if unknown:
            raise InputError(f"unknown target vector(s) {unknown}; this store has {sorted(self.named_vectors)}")
        fetch = rerank_candidates(k, candidates)  # one policy, in core; checks a given value
        limit = fetch if rerank is not None else k
        check_rerank_query(query, rerank)
        node = self._parse_filter(filter) if isinstance(filter, Mapping) else None
        vectors = self._query_vectors(query, names, instruction)
        near: Any = vectors[names[0]] if len(names) == 1 else vectors
        native, exact = self._compile_filter(node) if node is not None else (filter, True)
        props = list(return_properties) if return_properties is not None else None
        if props is not None and "row_id" not in props:  # the hit's id
            props.append("row_id")
        if not exact and props is not None:  # the post-filter reads these
            props += [p for p in self._filter_properties(node) if p not in props]  # type: ignore[arg-type]
        fetch = limit if exact else min(MAX_QUERY_RESULTS, max(4 * limit, 100))
        while True:
            with driver_errors(f"searching {self.name}"):
                res = self.collection.query.near_vector(
                    near_vector=near, limit=fetch, filters=native,
                    target_vector=names[0] if len(names) == 1 else names,
                    return_metadata=MetadataQuery(distance=True), return_properties=props)
            hits = [self._hit(obj) for obj in res.objects]
            if exact:
                break
            hits = [h for h in hits if matches(node, h.fields)]  # type: ignore[arg-type]
            if len(hits) >= limit or len(res.objects) < fetch or fetch >= MAX_QUERY_RESULTS:
                if len(hits) < limit and fetch >= MAX_QUERY_RESULTS:
                    log.warning("weaviate: only %d of the %d nearest objects match the filter %s", len(hits),
                                fetch, filter)
                break
            fetch = min(MAX_QUERY_RESULTS, fetch * 4)
        if not exact and return_properties is not None:
            keep = set(return_properties)
            for h in hits:
                for extra in [f for f in h.fields if f not in keep]:
                    del h.fields[extra]
        hits = hits[:limit]
        if rerank is None:
            return hits[:k]
        outcome = rerank_hits(rerank, query, hits, k=k, instruction=rerank_instruction)
        return outcome.hits

    def _query_vectors(self, query: Any, names: list[str], instruction: str | None) -> dict[str, list[float]]:
        if not _is_item(query):
            vec = np.asarray(query, dtype=np.float32).reshape(-1)
            dims = {self.named_vectors[n] for n in names}
            if vec.shape[0] != self.dim and not (len(dims) == 1 and vec.shape[0] in dims):
                raise InputError(f"query vector has {vec.shape[0]} dims; the store has {self.dim}"
                                 + (f" ({names[0]!r} has {dims.pop()})" if len(dims) == 1 else ""))
            reason = bad_vector_reason(vec)
            if reason is not None:
                raise InputError(f"query {reason}")
        else:
            vec = np.asarray(query_vector(self.embedder, query, self.dim, instruction), dtype=np.float32)
        out = {}
        for n in names:
            d = self.named_vectors[n]
            cut = vec if vec.shape[0] == d else mrl(vec, d)[0]
            if not cut.any():
                raise InputError(f"the query vector's first {d} dims (named vector {n!r}) are all zeros "
                                 "(cosine similarity is undefined)")
            out[n] = cut.astype(np.float32).tolist()
        return out

    def _parse_filter(self, flt: Mapping[str, Any]) -> Node:
        """Validate a portable filter against the declared properties (see :mod:`connectors.filters`)."""
        node = parse(flt, {n: _SCALAR_TYPES.get(t) for n, t in self._fields.items()})

        def check(n: Node) -> None:
            if isinstance(n, (And, Or)):
                for p in n.parts:
                    check(p)
            elif not n.metadata and n.key in self._fields and self._fields[n.key] not in _SCALAR_TYPES:
                raise InputError(f"filter key {n.key!r}: the property is {self._fields[n.key]}; the portable filter "
                                 f"compares {list(_SCALAR_TYPES)} properties (pass a Filter for others)")
        check(node)
        return node

    @staticmethod
    def _filter_properties(node: Node) -> set[str]:
        """The properties a post-filter reads."""
        if isinstance(node, (And, Or)):
            return set().union(*(WeaviateStore._filter_properties(p) for p in node.parts))
        return {"metadata" if node.metadata else node.key}

    def _compile_filter(self, node: Node) -> tuple[Any, bool]:
        """``(Filter or None, exact)``: a Weaviate filter selecting a superset of ``node``'s
        matches (None: no constraint), and whether it selects exactly them."""
        from weaviate.classes.query import Filter

        if isinstance(node, (And, Or)):
            compiled = [self._compile_filter(p) for p in node.parts]
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
        ftype = _SCALAR_TYPES.get(self._fields.get(node.key, "text"), str)

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
        props = dict(obj.properties or {})
        rid = props.pop("row_id", None) or str(obj.uuid)
        meta = props.get("metadata")
        if isinstance(meta, str):
            try:
                props["metadata"] = json.loads(meta)
            except ValueError:
                pass
        distance = obj.metadata.distance if obj.metadata is not None else None
        score = 1.0 - float(distance) if distance is not None else float("nan")
        return Hit(id=str(rid), score=score, fields=props)

    # ------------------------------------------------------------------ the rest
    def delete(self, ids: Sequence[str]) -> None:
        """Delete rows by id (missing ids are ignored)."""
        from weaviate.classes.query import Filter

        self._check_open()
        uuids = [row_uuid(str(i)) for i in ids if utf8_storable(str(i))]  # others cannot be stored
        with driver_errors(f"deleting from {self.name}"):
            for start in range(0, len(uuids), _DELETE_CHUNK):
                chunk = uuids[start:start + _DELETE_CHUNK]
                self.collection.data.delete_many(where=Filter.by_id().contains_any(chunk))

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the collection holds (looked up by their uuid5)."""
        from weaviate.classes.query import Filter

        self._check_open()
        by_uuid = {row_uuid(str(i)): str(i) for i in ids if utf8_storable(str(i))}  # others cannot be stored
        found: set[str] = set()
        uuids = list(by_uuid)
        with driver_errors(f"looking up ids in {self.name}"):
            for start in range(0, len(uuids), _DELETE_CHUNK):
                chunk = uuids[start:start + _DELETE_CHUNK]
                res = self.collection.query.fetch_objects(filters=Filter.by_id().contains_any(chunk),
                                                          limit=len(chunk), return_properties=[])
                found.update(by_uuid[str(o.uuid)] for o in res.objects)
        return found

    def count(self) -> int:
        """Number of objects in the collection."""
        self._check_open()
        with driver_errors(f"counting {self.name}"):
            return int(self.collection.aggregate.over_all(total_count=True).total_count or 0)

    def drop(self) -> None:
        """Delete the collection and its objects (no error if it does not exist)."""
        self._check_open()
        with driver_errors(f"dropping {self.name}"):
            self.client.collections.delete(self.name)
        self._fields = {}

    def close(self) -> None:
        """Close the client if this store opened it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            self.client.close()

    def _check_open(self) -> None:
        if self._closed:
            raise ConnectorError(f"store {self.name} is closed")

    def __enter__(self) -> "WeaviateStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WeaviateStore({self.name!r}, named_vectors={self.named_vectors})"



def _unencodable(row: Row) -> str | None:
    """Why a row's strings cannot be sent to Weaviate (UTF-8 only), or None."""
    strings = {"id": row.id, "text": row.text, "media": row.media,
               "metadata": json.dumps(row.metadata, ensure_ascii=False, default=str) if row.metadata else None}
    strings.update((k, v) for k, v in row.fields.items() if isinstance(v, str))
    for name, value in strings.items():
        if value is not None and not utf8_storable(value):
            return (f"{name} {value!r} is not valid Unicode (a lone surrogate, e.g. from an undecodable file "
                    "name); Weaviate stores UTF-8 text only")
    return None


def _is_item(query: Any) -> bool:
    if isinstance(query, np.ndarray):
        return False
    if isinstance(query, (list, tuple)) and query and isinstance(query[0], (int, float, np.floating)):
        return False
    return True


def _existing_named_vectors(client: "weaviate.WeaviateClient", name: str) -> dict[str, int] | None:
    """The named vectors recorded by this connector on an existing collection, if any."""
    with driver_errors(f"reading the schema of {name}"):
        if not client.collections.exists(name):
            return None
        return _recorded_dims(client.collections.get(name).config.get().description)


def _recorded_dims(description: str | None) -> dict[str, int] | None:
    if not description or not description.startswith(DESCRIPTION_PREFIX):
        return None
    try:
        return {k: int(v) for k, v in json.loads(description[len(DESCRIPTION_PREFIX):])["vectors"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _nested(name: str, type_name: str) -> Any:
    from weaviate.classes.config import DataType, Property

    return Property(name=name, data_type=DataType(type_name))


# ---------------------------------------------------------------------------- factory
def open_store(target: str, *, collection: str, embedder: Any = None, dim: int | None = None,
               named_vectors: Mapping[str, int] | None = None, api_key: str | None = None,
               grpc_port: int | None = None, headers: Mapping[str, str] | None = None,
               client: "weaviate.WeaviateClient | None" = None, index: str = "hnsw",
               index_params: Mapping[str, Any] | None = None, metadata_fields: Mapping[str, Any] | None = None,
               batching: str = "insert_many", batch_size: int = 256, concurrent_requests: int = 2,
               timeout: tuple[int, int] = (60, 300), skip_init_checks: bool = True,
               show_progress: bool = False) -> WeaviateStore:
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
        api_key: Weaviate API key.
        grpc_port: gRPC port (overrides ``?grpc=``; default 50051).
        headers: extra HTTP headers (e.g. module API keys).
        client: an already connected ``weaviate.WeaviateClient`` to use (not closed by
            :meth:`WeaviateStore.close`); ``target`` is then ignored.
        index: ``hnsw`` (default) or ``flat`` (exact search).
        index_params: extra vector index settings (``ef``, ``ef_construction``,
            ``max_connections``, ``quantizer``...), passed to ``Configure.VectorIndex``.
        metadata_fields: store ``metadata`` as an OBJECT with these nested fields
            (filterable) instead of TEXT holding JSON.
        batching: ``insert_many`` (default: one synchronous gRPC batch request per
            byte-budget batch), or the client's ``fixed_size`` / ``dynamic`` batchers.
        batch_size: rows embedded and written together (the embedding of the next batch
            overlaps the write of this one); also the request size of ``fixed_size``.
        concurrent_requests: parallel write requests per batch.
        timeout: (query, insert) timeouts in seconds.
        skip_init_checks: skip the client's start-up checks (they include a PyPI request).
        show_progress: progress bars for upserts.

    Raises:
        UnavailableError: the server cannot be reached.
        SchemaMismatchError: the collection exists with other dims or properties.
    """
    if named_vectors is not None and dim is not None and dim != max(named_vectors.values()):
        raise InputError(f"dim={dim} differs from the largest named vector ({max(named_vectors.values())})")
    owns = client is None
    if client is None:
        client = connect_client(WeaviateTarget.parse(target, grpc_port=grpc_port), api_key=api_key,
                                headers=headers, timeout=timeout, skip_init_checks=skip_init_checks)
    try:
        if named_vectors is None and dim is None:
            # An existing collection made by this connector says its own dims.
            named_vectors = _existing_named_vectors(client, collection)
        if named_vectors is None:
            if dim is None:
                if embedder is None:
                    raise InputError("give dim (or named_vectors, or an embedder to take its full dim)")
                dim = int(embedder.dim)
            named_vectors = {"default": int(dim)}
        return WeaviateStore(client, collection, embedder=embedder, named_vectors=named_vectors, owns_client=owns,
                             index=index, index_params=index_params, metadata_fields=metadata_fields,
                             batching=batching, batch_size=batch_size, concurrent_requests=concurrent_requests,
                             show_progress=show_progress)
    except BaseException:
        if owns:
            client.close()
        raise


# ---------------------------------------------------------------------------- server-side modules
def create_server_vectorized_collection(
        client: "weaviate.WeaviateClient", name: str, *, inference_url: str | None = None,
        image_fields: Sequence[str] = ("image",), text_fields: Sequence[str] = ("text",),
        weights: Mapping[str, float] | None = None, clip_vector: str | None = "multimodal",
        text2vec_vector: str | None = None, text2vec_dimensions: int | None = None,
        reranker: bool = True, extra_properties: Mapping[str, Any] | None = None,
        index: str = "hnsw", index_params: Mapping[str, Any] | None = None,
        self_provided: Mapping[str, int] | None = None, exist_ok: bool = False) -> Any:
    """Create a collection that Weaviate vectorizes by calling ``qvl serve``.

    * ``multi2vec-clip`` (named vector ``clip_vector``) embeds ``image_fields`` (BLOB,
      base64 images) and ``text_fields`` (TEXT); an object's vector is Weaviate's weighted
      mean of its fields' vectors (``weights``: field -> weight; default equal).
      ``near_text`` and ``near_image`` queries go through the same service.
    * ``text2vec-transformers`` (named vector ``text2vec_vector``, enabled when a name or
      ``text2vec_dimensions`` is given) embeds the text fields with the query/passage
      distinction, at ``text2vec_dimensions`` (MRL) or the service's default.
    * ``reranker-transformers`` (``reranker=True``) makes ``rerank=`` in queries call the
      service's Qwen3-VL reranker. Its URL is the server's ``RERANKER_INFERENCE_API``;
      Weaviate has no per-collection reranker URL.
    * ``self_provided``: extra named vectors (name -> dim) for client-side vectors, e.g.
      videos, which cannot travel through Weaviate's modules.

    ``inference_url`` (the ``qvl serve`` base URL as Weaviate reaches it) overrides the
    server's ``CLIP_INFERENCE_API`` / ``TRANSFORMERS_INFERENCE_API`` for this collection.

    Returns:
        the native ``weaviate.collections.Collection``.

    Raises:
        ConnectorError: the collection exists and ``exist_ok`` is False, or Weaviate
            refused the configuration (e.g. a module is not enabled).
    """
    from weaviate.classes.config import Configure, DataType, Multi2VecField, VectorDistances

    cname = collection_name(name)
    if clip_vector is None and text2vec_vector is None and text2vec_dimensions is None:
        raise InputError("enable multi2vec-clip (clip_vector) and/or text2vec-transformers "
                         "(text2vec_vector or text2vec_dimensions)")
    weights = dict(weights or {})
    unknown = set(weights) - set(image_fields) - set(text_fields)
    if unknown:
        raise InputError(f"weights name unknown fields {sorted(unknown)}; fields are "
                         f"{sorted(set(image_fields) | set(text_fields))}")

    def index_config() -> Any:
        params = {"distance_metric": VectorDistances.COSINE, **dict(index_params or {})}
        return (Configure.VectorIndex.flat(**params) if index == "flat" else Configure.VectorIndex.hnsw(**params))

    def fields(names: Sequence[str]) -> list[Any]:
        return [Multi2VecField(name=n, weight=weights[n]) if weights else n for n in names]  # type: ignore[misc]

    properties = [_property(f, DataType.BLOB) for f in image_fields]
    properties += [_property(f, DataType.TEXT) for f in text_fields if f not in image_fields]
    properties += [_property(k, weaviate_data_type(v, k)) for k, v in (extra_properties or {}).items()]
    vectors = []
    if clip_vector is not None:
        vectors.append(Configure.Vectors.multi2vec_clip(
            name=clip_vector, inference_url=inference_url, image_fields=fields(image_fields) or None,
            text_fields=fields(text_fields) or None, vector_index_config=index_config()))
    if text2vec_vector is not None or text2vec_dimensions is not None:
        vectors.append(Configure.Vectors.text2vec_transformers(
            name=text2vec_vector or "text", inference_url=inference_url, dimensions=text2vec_dimensions,
            source_properties=list(text_fields), vectorize_collection_name=False,
            vector_index_config=index_config()))
    for vname, _vdim in (self_provided or {}).items():
        vectors.append(Configure.Vectors.self_provided(name=vname, vector_index_config=index_config()))
    with driver_errors(f"creating collection {cname}"):
        if client.collections.exists(cname):
            if not exist_ok:
                raise ConnectorError(f"collection {cname} already exists (pass exist_ok=True to keep it)")
            return client.collections.get(cname)
        return client.collections.create(
            cname, properties=properties, vector_config=vectors,
            reranker_config=Configure.Reranker.transformers() if reranker else None)


__all__ = ["WeaviateStore", "WeaviateTarget", "StoreSchema", "open_store", "connect_client",
           "create_server_vectorized_collection", "row_uuid", "collection_name",
           "weaviate_data_type", "driver_errors", "CORE_PROPERTIES"]

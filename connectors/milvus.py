"""Milvus connector: Qwen3-VL vectors in Milvus (server) or Milvus Lite (an embedded file).

Open a store with :func:`open_store` (or ``connectors.connect``)::

    import connectors
    from embedder import Embedder

    emb = Embedder.from_pretrained("Qwen/Qwen3-VL-Embedding-2B")
    with connectors.connect("milvus:./photos.db", collection="photos", embedder=emb, dim=1024) as store:
        store.create(fields={"color": str, "price": float}, exist_ok=True)
        report = store.upsert([{"id": "p1", "image": "cat.jpg", "text": "a cat", "color": "red"}])
        hits = store.search("a red cat", k=5, filter='color == "red"')

Target forms: ``milvus:./file.db`` or a bare ``file.db`` path (Milvus Lite, in-process; one
process per file: the first to open it keeps it until it exits),
``milvus://host:19530`` (plain gRPC/HTTP), ``milvus+https://host:443``, and
``http(s)://host:19530``.

The collection layout is: ``id`` (VARCHAR primary key), ``vector`` (FLOAT_VECTOR(dim)),
optionally ``coarse_vector`` (FLOAT_VECTOR(coarse_dim), the renormalised MRL prefix of
``vector``), ``text``, ``media``, ``modality`` (VARCHAR, nullable), ``metadata`` (JSON)
and the user's declared scalar fields (nullable).

Also here, for people who already use pymilvus directly:

- :class:`QwenVLEmbeddingFunction`, a ``pymilvus.model``-style embedding function.
- :func:`text_embedding_function` and :func:`add_text_embedding_function`, which make
  Milvus itself call our OpenAI-compatible service (``qvl serve``) through a
  ``TEXT_EMBEDDING`` function.

pymilvus is imported lazily, so ``import connectors`` never needs it.
"""
from __future__ import annotations

import logging
import os
import pathlib
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from embedder.embedder import mrl
from embedder.errors import (ConnectorError, InputError, MissingDependencyError, NotFoundError,
                             SchemaMismatchError, UnavailableError)

from .core import (Hit, Row, UpsertReport, check_dim, check_rerank_query, pipelined_upsert, query_vector,
                   rerank_candidates, rerank_hits, utf8_storable)
from .filters import And, Node, Or, parse

if TYPE_CHECKING:  # pragma: no cover
    from pymilvus import CollectionSchema, Function, MilvusClient

log = logging.getLogger(__name__)

__all__ = [
    "MilvusStore", "MilvusTarget", "QwenVLEmbeddingFunction", "open_store", "parse_target",
    "text_embedding_function", "add_text_embedding_function",
    "INDEX_TYPES", "METRICS", "FIELD_TYPES", "DEFAULT_MAX_BYTES", "string_literal", "ids_filter",
    "compile_filter",
]

INDEX_TYPES = ("HNSW", "AUTOINDEX", "IVF_FLAT", "FLAT")
METRICS = ("COSINE", "IP")
#: Python type of a user-declared field -> Milvus data type name.
FIELD_TYPES: dict[type, str] = {str: "VARCHAR", int: "INT64", float: "DOUBLE", bool: "BOOL"}
#: Bytes per upsert request: well under Milvus' 64 MB gRPC limit (room for protobuf overhead).
DEFAULT_MAX_BYTES = 16 * 1024 * 1024
DEFAULT_BATCH_ROWS = 256
MAX_VECTOR_DIM = 32768
MAX_VARCHAR = 65535          # Milvus' VARCHAR limit, in bytes
ID_MAX_LENGTH = 512
MAX_TOPK = 16384             # Milvus' limit on ``limit`` of one search
VECTOR_FIELD = "vector"
COARSE_FIELD = "coarse_vector"
CONTENT_FIELDS = ("text", "media", "modality")
BASE_FIELDS = ("id", VECTOR_FIELD, *CONTENT_FIELDS, "metadata")
DEFAULT_INDEX_PARAMS: dict[str, dict[str, Any]] = {
    "HNSW": {"M": 16, "efConstruction": 200},
    "IVF_FLAT": {"nlist": 128},
    "FLAT": {},
    "AUTOINDEX": {},
}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
_LITE_VERSION_PREFIX = "milvus_lite"
IDS_PER_REQUEST = 1000       # ids per get/delete expression
# Escapes for a string literal that both Milvus' parser (Go, strconv-style) and Milvus
# Lite's (Python; it knows only these escapes and refuses raw line breaks) read back as
# the original text. Milvus Lite has no expression templates (``filter_params``), so ids
# are written as escaped literals rather than bound.
_LITERAL_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


# ---------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class MilvusTarget:
    """Where a store lives.

    Attributes:
        uri: what ``MilvusClient(uri=...)`` takes: a ``.db`` path or an ``http(s)://`` URL.
        lite: True for a Milvus Lite file (in-process, nothing to start).
    """

    uri: str
    lite: bool


def parse_target(target: str | pathlib.Path) -> MilvusTarget:
    """Turn a target string into a :class:`MilvusTarget`.

    Args:
        target: ``milvus:./file.db``, ``./file.db``, ``milvus:///abs/file.db``,
            ``milvus://host:19530``, ``milvus+https://host:443``, ``http://host:19530`` or
            ``https://host:19530``.

    Returns:
        The URI for ``MilvusClient`` and whether it is Milvus Lite.

    Raises:
        InputError: the target has none of the forms above.

    Example:
        >>> parse_target("milvus://localhost:19530")
        MilvusTarget(uri='http://localhost:19530', lite=False)
    """
    text = str(target)
    lower = text.lower()
    allowed = ("'milvus:./file.db', './file.db', 'milvus://host:19530', 'milvus+https://host:443', "
               "'http://host:19530' or 'https://host:19530'")
    if lower.startswith(("http://", "https://")):
        return MilvusTarget(text, lite=False)
    if lower.startswith("milvus+https://"):
        return MilvusTarget("https://" + text[len("milvus+https://"):], lite=False)
    if lower.startswith("milvus+http://"):
        return MilvusTarget("http://" + text[len("milvus+http://"):], lite=False)
    rest = text[len("milvus:"):] if lower.startswith("milvus:") else text
    if rest.startswith("///"):
        rest = rest[2:]  # milvus:///abs/path.db -> /abs/path.db
    elif rest.startswith("//") and lower.startswith("milvus:"):
        return MilvusTarget("http://" + rest[2:], lite=False)
    if rest.endswith(".db") and rest:
        return MilvusTarget(rest, lite=True)
    raise InputError(f"unsupported Milvus target {text!r}: use {allowed} (a Milvus Lite file must end in .db)")


# ---------------------------------------------------------------------------- expressions
def string_literal(value: str) -> str:
    """A Milvus expression string literal that reads back as exactly ``value``.

    Every quote, backslash and line break is escaped, so no value can end the literal
    and add to the expression (``x"] or id != ["y`` stays one id).

    Example:
        >>> print(string_literal('say "hi"'))
        "say \\"hi\\""
    """
    return '"' + value.translate(_LITERAL_ESCAPES) + '"'


def ids_filter(ids: Sequence[str]) -> str:
    """The expression ``id in [...]`` for these ids, each an escaped literal (never spliced).

    Example:
        >>> print(ids_filter(["a", "it's"]))
        id in ["a", "it's"]
    """
    return "id in [" + ", ".join(string_literal(str(i)) for i in ids) + "]"


_MILVUS_OPS = {"$eq": "==", "$ne": "!=", "$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _value_literal(value: Any) -> str:
    """A filter value as a Milvus literal: strings escaped (:func:`string_literal`), numbers by repr."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return string_literal(value)
    return repr(int(value)) if isinstance(value, int) else repr(float(value))


def compile_filter(node: Node) -> str:
    """A portable filter tree (:func:`connectors.filters.parse`) as a Milvus boolean expression.

    Every value is an escaped literal (Milvus Lite has no expression templates) and every
    metadata key a JSON path ``metadata["key"]`` with the key escaped too; declared fields are
    checked names. ``$in`` on a metadata key becomes ``==`` joined by ``or`` (Milvus Lite
    accepts ``in`` on fields only).

    Example:
        >>> from connectors.filters import parse
        >>> print(compile_filter(parse({"color": {"$in": ["red", 'a"b']}, "year": {"$gte": 2020}}, {"color": str})))
        (color in ["red", "a\\"b"]) and (metadata["year"] >= 2020)
    """
    if isinstance(node, (And, Or)):
        if not node.parts:
            return ""  # {}: no condition
        joiner = " and " if isinstance(node, And) else " or "
        return joiner.join(f"({compile_filter(p)})" for p in node.parts)
    target = f"metadata[{string_literal(node.key)}]" if node.metadata else node.key
    if not node.metadata and not _NAME_RE.match(node.key):
        raise InputError(f"filter key {node.key!r} is not a valid Milvus field name")
    if node.op == "$in":
        if node.metadata:
            return " or ".join(f"{target} == {_value_literal(v)}" for v in node.value)
        return f"{target} in [" + ", ".join(_value_literal(v) for v in node.value) + "]"
    return f"{target} {_MILVUS_OPS[node.op]} {_value_literal(node.value)}"


# ---------------------------------------------------------------------------- errors
def _pymilvus() -> Any:
    try:
        import pymilvus
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError("pymilvus", "milvus", "The Milvus connector") from exc
    return pymilvus


def _exception_types() -> tuple[type[BaseException], ...]:
    from pymilvus.exceptions import MilvusException

    return (MilvusException,)


def _is_unavailable(exc: BaseException) -> bool:
    code = getattr(exc, "code", None)
    msg = str(getattr(exc, "message", exc)).lower()
    return code == 2 or "fail connecting" in msg or "unavailable" in msg or "deadline" in msg


def _is_not_found(exc: BaseException) -> bool:
    msg = str(getattr(exc, "message", exc)).lower()
    return getattr(exc, "code", None) == 100 or ("collection" in msg and ("not exist" in msg or "not found" in msg))


@contextmanager
def _translated(what: str, *, collection: str | None = None, filter: str | None = None) -> Iterator[None]:
    """Turn pymilvus errors into our exception tree (``raise ... from exc``)."""
    try:
        yield
    except _exception_types() as exc:
        msg = getattr(exc, "message", None) or str(exc)
        if _is_unavailable(exc):
            raise UnavailableError(f"Milvus {what} failed: server unavailable: {msg}") from exc
        if _is_not_found(exc):
            raise NotFoundError(f"Milvus {what} failed: collection {collection!r} does not exist") from exc
        if filter is not None and getattr(exc, "code", None) in (6, 1100, 65535):
            raise InputError(f"Milvus rejected the filter {filter!r}: {msg}") from exc
        raise ConnectorError(f"Milvus {what} failed: {msg}") from exc


# ---------------------------------------------------------------------------- schema helpers
def _check_name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InputError(f"{kind} name {name!r} is invalid: Milvus names start with a letter or '_' and "
                         "contain only letters, digits and '_' (at most 255 characters)")
    return name


def _check_dim(kind: str, dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= int(dim) <= MAX_VECTOR_DIM:
        raise InputError(f"{kind} must be an integer from 1 to {MAX_VECTOR_DIM}, got {dim!r}")
    return int(dim)


def _check_fields(fields: Mapping[str, type] | None) -> dict[str, type]:
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise InputError(f"fields must be a dict of name -> type, got {type(fields).__name__}")
    reserved = {*BASE_FIELDS, COARSE_FIELD, "vector", "image", "video", "instruction"}
    out: dict[str, type] = {}
    for name, typ in fields.items():
        _check_name("field", name)
        if name in reserved:
            raise InputError(f"field name {name!r} is reserved; reserved names are {sorted(reserved)}")
        if typ not in FIELD_TYPES:
            raise InputError(f"field {name!r} has type {typ!r}; allowed types are "
                             f"{[t.__name__ for t in FIELD_TYPES]}")
        out[name] = typ
    return out


def _dtype_name(raw: Any) -> str:
    return getattr(raw, "name", str(raw))


def _describe_fields(desc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in desc.get("fields", [])}


def _field_dim(info: Mapping[str, Any]) -> int | None:
    dim = (info.get("params") or {}).get("dim")
    return int(dim) if dim is not None else None


@dataclass(frozen=True)
class _Layout:
    """What a store expects of its collection."""

    dim: int
    coarse_dim: int | None
    fields: dict[str, type] = field(default_factory=dict)


def _compare_layout(desc: Mapping[str, Any], want: _Layout, *, check_user_fields: bool) -> list[str]:
    """Differences between an existing collection and the requested layout (empty when it matches)."""
    have = _describe_fields(desc)
    problems: list[str] = []
    expected = {"id": "VARCHAR", VECTOR_FIELD: "FLOAT_VECTOR", "text": "VARCHAR", "media": "VARCHAR",
                "modality": "VARCHAR", "metadata": "JSON"}
    if want.coarse_dim is not None:
        expected[COARSE_FIELD] = "FLOAT_VECTOR"
    for fname, tname in expected.items():
        if fname not in have:
            problems.append(f"field {fname!r} ({tname}) is missing")
        elif _dtype_name(have[fname]["type"]) != tname:
            problems.append(f"field {fname!r} is {_dtype_name(have[fname]['type'])}, expected {tname}")
    if "id" in have and not have["id"].get("is_primary"):
        problems.append("field 'id' is not the primary key")
    if VECTOR_FIELD in have and _field_dim(have[VECTOR_FIELD]) != want.dim:
        problems.append(f"vector dim is {_field_dim(have[VECTOR_FIELD])}, requested dim={want.dim}")
    if want.coarse_dim is not None and COARSE_FIELD in have and _field_dim(have[COARSE_FIELD]) != want.coarse_dim:
        problems.append(f"coarse vector dim is {_field_dim(have[COARSE_FIELD])}, "
                        f"requested coarse_dim={want.coarse_dim}")
    if check_user_fields:
        existing = {n: _dtype_name(f["type"]) for n, f in have.items() if n not in (*BASE_FIELDS, COARSE_FIELD)}
        requested = {n: FIELD_TYPES[t] for n, t in want.fields.items()}
        if existing != requested:
            problems.append(f"user fields are {existing}, requested {requested}")
    return problems


def _user_fields_of(desc: Mapping[str, Any]) -> dict[str, type]:
    by_name = {v: k for k, v in FIELD_TYPES.items()}
    out: dict[str, type] = {}
    for name, info in _describe_fields(desc).items():
        if name in (*BASE_FIELDS, COARSE_FIELD):
            continue
        typ = by_name.get(_dtype_name(info["type"]))
        if typ is not None:
            out[name] = typ
    return out


# ---------------------------------------------------------------------------- the store
class MilvusStore:
    """A Milvus (or Milvus Lite) collection holding Qwen3-VL vectors and the content to rerank.

    Build one with :func:`open_store` or ``connectors.connect``. See DESIGN.md for the
    store interface shared by every connector.

    Attributes:
        collection: the collection name.
        target: where the store lives (:class:`MilvusTarget`).
        metric: ``COSINE`` or ``IP``.
        index: the index type used when creating the collection.
        coarse_dim: dim of the coarse MRL field, or None.
    """

    def __init__(self, client: "MilvusClient", target: MilvusTarget, *, collection: str, embedder: Any,
                 dim: int | None, metric: str, index: str, index_params: Mapping[str, Any] | None,
                 coarse_dim: int | None) -> None:
        self._client = client
        self.target = target
        self.collection = collection
        self._embedder = embedder
        self._dim = dim
        self.metric = metric
        self.index = index
        self.index_params = dict(index_params) if index_params is not None else dict(DEFAULT_INDEX_PARAMS[index])
        self.coarse_dim = coarse_dim
        self._fields: dict[str, type] = {}
        self._closed = False
        if self._exists():
            self._adopt_existing()
            self._ensure_loaded()

    # ------------------------------------------------------------------ properties
    @property
    def client(self) -> "MilvusClient":
        """The native ``pymilvus.MilvusClient``, for everything this class does not wrap."""
        return self._client

    @property
    def dim(self) -> int:
        """The dimension of the ``vector`` field.

        Raises:
            InputError: the collection does not exist yet and no dim (nor embedder) was given.
        """
        if self._dim is None:
            raise InputError(f"collection {self.collection!r} does not exist and no dim was given: "
                             "pass dim=... (or an embedder) to open_store")
        return self._dim

    @property
    def fields(self) -> dict[str, type]:
        """The user-declared scalar fields, ``{name: python type}``."""
        return dict(self._fields)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def embedder(self) -> Any:
        """The embedder used for rows and queries (None for vector-only stores)."""
        return self._embedder

    # ------------------------------------------------------------------ schema
    def _exists(self) -> bool:
        self._check_open()
        with _translated("has_collection", collection=self.collection):
            return bool(self._client.has_collection(self.collection))

    def _describe(self) -> dict[str, Any]:
        with _translated("describe_collection", collection=self.collection):
            return self._client.describe_collection(self.collection)

    def _adopt_existing(self) -> None:
        """Check an existing collection against what was asked; adopt what was not given."""
        desc = self._describe()
        have = _describe_fields(desc)
        vec = have.get(VECTOR_FIELD)
        if vec is None or _dtype_name(vec["type"]) != "FLOAT_VECTOR":
            raise SchemaMismatchError(
                f"collection {self.collection!r} has no FLOAT_VECTOR field {VECTOR_FIELD!r} "
                f"(fields: {sorted(have)}): it was not created by this connector")
        existing_dim = _field_dim(vec)
        if self._dim is not None and self._dim != existing_dim:
            raise SchemaMismatchError(
                f"collection {self.collection!r} stores vectors of dim {existing_dim}, but dim={self._dim} "
                f"was requested; open it with dim={existing_dim} or use another collection")
        self._dim = existing_dim
        coarse = have.get(COARSE_FIELD)
        existing_coarse = _field_dim(coarse) if coarse is not None else None
        if self.coarse_dim is not None and self.coarse_dim != existing_coarse:
            raise SchemaMismatchError(
                f"collection {self.collection!r} has coarse_dim={existing_coarse}, but coarse_dim={self.coarse_dim} "
                "was requested")
        self.coarse_dim = existing_coarse
        problems = _compare_layout(desc, _Layout(self.dim, self.coarse_dim), check_user_fields=False)
        if problems:
            raise SchemaMismatchError(f"collection {self.collection!r} does not match this connector's layout: "
                                      + "; ".join(problems))
        self._check_metric()
        self._fields = _user_fields_of(desc)

    def _check_metric(self) -> None:
        with _translated("describe_index", collection=self.collection):
            info = self._client.describe_index(self.collection, VECTOR_FIELD) or {}
        metric = str(info.get("metric_type", "")).upper()
        if metric and metric != self.metric:
            raise SchemaMismatchError(f"collection {self.collection!r} is indexed with metric {metric}, "
                                      f"but metric={self.metric!r} was requested")
        index_type = str(info.get("index_type", "")).upper()
        if index_type and index_type != self.index:
            log.info("collection %r has index %s (requested %s); keeping the existing index",
                     self.collection, index_type, self.index)
            if index_type in INDEX_TYPES:
                self.index = index_type
                self.index_params = dict(DEFAULT_INDEX_PARAMS[index_type])

    def create(self, fields: Mapping[str, type] | None = None, *, exist_ok: bool = False) -> None:
        """Create the collection at the store's dim, build its index and load it.

        Args:
            fields: user scalar fields, ``{name: str | int | float | bool}`` (stored as
                nullable VARCHAR / INT64 / DOUBLE / BOOL; filterable).
            exist_ok: reuse an existing collection after checking that its dim, fields and
                metric match; without it an existing collection is an error.

        Raises:
            SchemaMismatchError: the existing collection differs (the message lists how).
            ConnectorError: the collection exists and ``exist_ok`` is False.
            InputError: a bad field name or type, no dim known, or a dim outside 64..the
                embedder's full dim (checked before anything is created).

        Example:
            >>> store.create(fields={"color": str, "price": float}, exist_ok=True)  # doctest: +SKIP
        """
        wanted = _check_fields(fields)
        if self._exists():
            if not exist_ok:
                raise ConnectorError(f"collection {self.collection!r} already exists; pass exist_ok=True "
                                     "to reuse it (its schema is checked)")
            self._adopt_existing()
            if fields is not None:
                problems = _compare_layout(self._describe(), _Layout(self.dim, self.coarse_dim, wanted),
                                           check_user_fields=True)
                if problems:
                    raise SchemaMismatchError(f"collection {self.collection!r} exists with another schema: "
                                              + "; ".join(problems))
            self._ensure_loaded()
            return
        dim = check_dim(self.dim, self._embedder)
        if self.coarse_dim is not None and not 1 <= self.coarse_dim < dim:
            raise InputError(f"coarse_dim must be smaller than dim={dim}, got {self.coarse_dim}")
        schema = self._build_schema(dim, wanted)
        index_params = self._client.prepare_index_params()
        index_params.add_index(VECTOR_FIELD, index_type=self.index, metric_type=self.metric,
                               params=dict(self.index_params))
        if self.coarse_dim is not None:
            index_params.add_index(COARSE_FIELD, index_type=self.index, metric_type=self.metric,
                                   params=dict(self.index_params))
        with _translated("create_collection", collection=self.collection):
            self._client.create_collection(self.collection, schema=schema, consistency_level="Strong")
            # Milvus Lite builds indexes synchronously and lacks the RPC pymilvus polls with
            # (AllocTimestamp): waiting there only logs errors and sleeps.
            self._client.create_index(self.collection, index_params, sync=not self.target.lite)
        self._fields = wanted
        self._load()
        log.info("created Milvus collection %r (dim=%d, coarse_dim=%s, index=%s, metric=%s, fields=%s)",
                 self.collection, dim, self.coarse_dim, self.index, self.metric, sorted(wanted))

    def _build_schema(self, dim: int, fields: Mapping[str, type]) -> "CollectionSchema":
        from pymilvus import DataType

        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_MAX_LENGTH)
        schema.add_field(VECTOR_FIELD, DataType.FLOAT_VECTOR, dim=dim)
        if self.coarse_dim is not None:
            schema.add_field(COARSE_FIELD, DataType.FLOAT_VECTOR, dim=self.coarse_dim)
        for name in CONTENT_FIELDS:
            schema.add_field(name, DataType.VARCHAR, max_length=MAX_VARCHAR, nullable=True)
        schema.add_field("metadata", DataType.JSON)
        for name, typ in fields.items():
            dtype = getattr(DataType, FIELD_TYPES[typ])
            extra = {"max_length": MAX_VARCHAR} if typ is str else {}
            schema.add_field(name, dtype, nullable=True, **extra)
        return schema

    def _load(self) -> None:
        with _translated("load_collection", collection=self.collection):
            self._client.load_collection(self.collection)

    def _ensure_loaded(self) -> None:
        """Load the collection unless it is loaded, so an opened store can search at once.

        A collection found by a new process is released (Milvus Lite releases every
        collection when its process ends; a server may have released it): search, get and
        query would fail until it is loaded. A loaded one is left as it is (see
        :meth:`refresh_index` to index rows written since).
        """
        with _translated("get_load_state", collection=self.collection):
            state = (self._client.get_load_state(self.collection) or {}).get("state")
        if getattr(state, "name", str(state)).rsplit(".", 1)[-1] != "Loaded":
            self._load()

    def _require_collection(self) -> None:
        if not self._exists():
            raise NotFoundError(f"collection {self.collection!r} does not exist; call store.create() first")

    # ------------------------------------------------------------------ writing
    def upsert(self, rows: Iterable[Mapping[str, Any]], *, batch_size: int = DEFAULT_BATCH_ROWS,
               max_bytes: int = DEFAULT_MAX_BYTES, show_progress: bool = False) -> UpsertReport:
        """Embed and write rows; rows with an existing id are replaced (idempotent).

        Each row is a dict with ``id`` (optional: a stable content hash otherwise), ``text``,
        ``image``, ``video`` (any combination; several give one fused vector) or a
        precomputed ``vector`` at the store's dim, ``metadata`` (a JSON dict) and the
        declared fields (any other top-level key goes into ``metadata``, as on every store). Embedding of one batch overlaps the write of the previous one; each
        write request stays under ``max_bytes``. Duplicate ids in one batch are merged
        (the last one wins).

        Args:
            rows: the rows (any iterable; consumed once).
            batch_size: rows embedded per step.
            max_bytes: estimated bytes per Milvus request (Milvus rejects requests over 64 MB).
            show_progress: show a progress bar.

        Returns:
            :class:`UpsertReport`: ``written`` ids and ``failed`` ``(id, reason)`` pairs;
            every input row is in exactly one of them.

        Raises:
            NotFoundError: the collection does not exist (nothing was written).
            InputError: ``batch_size`` or ``max_bytes`` is not a positive integer.

        Example:
            >>> report = store.upsert([{"id": "a", "text": "hello"}, {"image": "cat.jpg"}])  # doctest: +SKIP
            >>> report.failed                                                                # doctest: +SKIP
            []
        """
        for name, value in (("batch_size", batch_size), ("max_bytes", max_bytes)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        self._require_collection()
        dim = self.dim
        # core.row_bytes counts the main vector only; scale the budget for the coarse one.
        budget = max_bytes if self.coarse_dim is None else max(1, max_bytes * dim // (dim + self.coarse_dim))
        report = pipelined_upsert(rows, embedder=self._embedder, dim=dim, write=self._write,
                                  batch_rows=batch_size, max_bytes=budget, declared_fields=list(self._fields),
                                  show_progress=show_progress, desc=f"milvus:{self.collection}")
        if report.written and self.target.lite:
            # Milvus Lite: flush seals the segments written (durable, counted). Their index is
            # built when the collection is next loaded: see refresh_index().
            with _translated("flush", collection=self.collection):
                self._client.flush(self.collection)
        return report

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
        self._check_open()
        self._require_collection()
        with _translated("flush", collection=self.collection):
            self._client.flush(self.collection)
        if self.target.lite:
            with _translated("release_collection", collection=self.collection):
                self._client.release_collection(self.collection)
            self._load()

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

    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[tuple[str, str]]:
        failed: list[tuple[str, str]] = []
        entities: list[dict[str, Any]] = []
        ids: list[str] = []
        for row, vec in zip(rows, vectors):
            try:
                entities.append(self._entity(row, vec))
                ids.append(row.id)
            except ValueError as exc:
                failed.append((row.id, str(exc)))
        if not entities:
            return failed
        log.debug("milvus upsert: %d rows into %r", len(entities), self.collection)
        try:
            self._client.upsert(self.collection, entities)
        except _exception_types() as exc:
            if _is_unavailable(exc) or _is_not_found(exc) or len(entities) == 1:
                raise
            # Find the culprit(s): the others still land.
            log.warning("milvus upsert of %d rows failed (%s); retrying row by row", len(entities), exc)
            for rid, entity in zip(ids, entities):
                try:
                    self._client.upsert(self.collection, [entity])
                except _exception_types() as one:
                    failed.append((rid, f"Milvus rejected the row: {getattr(one, 'message', one)}"))
        return failed

    def delete(self, ids: Sequence[str]) -> None:
        """Delete rows by id (unknown ids are ignored).

        Raises:
            NotFoundError: the collection does not exist.
        """
        self._check_open()
        if isinstance(ids, (str, int)):
            ids = [ids]  # type: ignore[list-item]
        ids = [i for i in dict.fromkeys(str(i) for i in ids) if utf8_storable(i)]  # others cannot be stored
        if not ids:
            return
        with _translated("delete", collection=self.collection):
            for start in range(0, len(ids), IDS_PER_REQUEST):
                # not delete(ids=...): pymilvus splices those into the expression unescaped
                self._client.delete(self.collection, filter=ids_filter(ids[start:start + IDS_PER_REQUEST]))

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the collection holds (lets an ingest skip what already landed)."""
        self._check_open()
        ids = [i for i in map(str, ids) if utf8_storable(i)]  # an id Milvus cannot store is not there
        found: set[str] = set()
        for start in range(0, len(ids), IDS_PER_REQUEST):
            found.update(str(r["id"]) for r in self._get(ids[start:start + IDS_PER_REQUEST], ["id"]))
        return found

    def _get(self, ids: Sequence[str], output_fields: Sequence[str]) -> list[dict[str, Any]]:
        """Rows by id (not ``client.get``, which splices ids into the expression unescaped)."""
        rows: list[dict[str, Any]] = []
        with _translated("get", collection=self.collection):
            for start in range(0, len(ids), IDS_PER_REQUEST):
                rows += self._client.query(self.collection, filter=ids_filter(ids[start:start + IDS_PER_REQUEST]),
                                           output_fields=list(output_fields))
        return rows

    def count(self) -> int:
        """The exact number of rows (a strongly consistent ``count(*)``).

        Raises:
            NotFoundError: the collection does not exist.
        """
        self._check_open()
        with _translated("count", collection=self.collection):
            res = self._client.query(self.collection, filter="", output_fields=["count(*)"],
                                     consistency_level="Strong")
        return int(res[0]["count(*)"]) if res else 0

    def drop(self) -> None:
        """Drop the collection and its data (no error when it does not exist)."""
        self._check_open()
        with _translated("drop_collection", collection=self.collection):
            self._client.drop_collection(self.collection)
        self._fields = {}

    # ------------------------------------------------------------------ search
    def search(self, query: Any, k: int = 10, *, filter: str | Mapping[str, Any] | None = None,
               output_fields: Sequence[str] | None = None, rerank: Any = None, candidates: int | None = None,
               instruction: str | None = None, search_params: Mapping[str, Any] | None = None,
               coarse_candidates: int | None = None) -> list[Hit]:
        """Find the rows nearest to a query, optionally reranked.

        Args:
            query: any item (text, image, video, fused dict), embedded as a query; or a
                precomputed query vector at the store's dim.
            k: number of hits returned.
            filter: the portable filter dict (``{"color": "red", "year": {"$gte": 2020}}``, see
                :mod:`connectors.filters`), compiled with every value escaped: the safe form for
                untrusted input. Or a Milvus boolean expression string, passed through, for
                trusted input (``'color == "red"'``, ``'metadata["year"] >= 2020'``).
            output_fields: stored fields to return (default: text, media, modality,
                metadata and the declared fields).
            rerank: a ``Reranker`` (or ``RemoteReranker``): the top ``candidates`` are
                reranked and the best ``k`` returned with ``rerank_score`` set. A candidate
                whose document cannot be loaded keeps its vector rank after the reranked
                ones, with ``rerank_score=None`` (logged as a warning).
            candidates: how many vector hits to rerank (default ``max(4 * k, 20)``, as on every store).
            instruction: the query instruction (default: a generic retrieval one).
            search_params: Milvus index search params (default ``ef``/``nprobe`` from the size).
            coarse_candidates: with a coarse field, how many rows the coarse pass
                shortlists for exact re-scoring at full dim (default ``max(4 * n, 50)``).

        Returns:
            Hits, best first: ``score`` is the similarity (higher is better).

        Raises:
            InputError: bad ``k``/``candidates``/``output_fields``, a filter Milvus rejects,
                a query vector of the wrong dim, or ``rerank`` with a query vector.
            NotFoundError: the collection does not exist.

        Example:
            >>> hits = store.search({"image": "cat.jpg"}, k=5, filter='color == "red"',
            ...                     rerank=reranker, candidates=30)  # doctest: +SKIP
            >>> [(h.id, h.score, h.rerank_score) for h in hits]     # doctest: +SKIP
        """
        self._check_open()
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_TOPK:
            raise InputError(f"k must be an integer from 1 to {MAX_TOPK}, got {k!r}")
        fetch = rerank_candidates(k, candidates, limit=MAX_TOPK)  # one policy, in core; checks a given value
        n = fetch if rerank is not None else k
        check_rerank_query(query, rerank)
        if isinstance(filter, Mapping):
            filter = compile_filter(parse(filter, self._fields))
        elif filter is not None and not isinstance(filter, str):
            raise InputError(f"filter must be a dict (the portable filter) or a Milvus expression string, "
                             f"got {type(filter).__name__}")
        qvec = query_vector(self._embedder, query, self.dim, instruction)
        fields = self._output_fields(output_fields, need_content=rerank is not None)
        if self.coarse_dim is not None:
            hits = self._two_step(qvec, n, filter=filter, fields=fields, coarse_candidates=coarse_candidates,
                                  search_params=search_params)
        else:
            hits = self._ann(VECTOR_FIELD, qvec, n, filter=filter, fields=fields, search_params=search_params)
        if rerank is None:
            return hits[:k]
        return rerank_hits(rerank, query, hits, k=k).hits

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
        if given is not None:
            params = dict(given)
        elif self.index == "HNSW":
            params = {"ef": max(64, n)}
        elif self.index == "IVF_FLAT":
            params = {"nprobe": min(int(self.index_params.get("nlist", 128)), 32)}
        else:
            params = {}
        return {"metric_type": self.metric, "params": params}

    def _ann(self, anns_field: str, qvec: np.ndarray, n: int, *, filter: str | None, fields: list[str],
             search_params: Mapping[str, Any] | None) -> list[Hit]:
        with _translated("search", collection=self.collection, filter=filter):
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

    # ------------------------------------------------------------------ lifecycle
    def _check_open(self) -> None:
        if self._closed:
            raise ConnectorError(f"the Milvus store for {self.collection!r} is closed")

    def close(self) -> None:
        """Close the client connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing must not raise
            log.debug("closing the Milvus client failed", exc_info=True)

    def __enter__(self) -> "MilvusStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"MilvusStore({self.target.uri!r}, collection={self.collection!r}, dim={self._dim}, "
                f"coarse_dim={self.coarse_dim}, index={self.index}, metric={self.metric})")


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



def open_store(target: str | pathlib.Path, *, collection: str, embedder: Any = None, dim: int | None = None,
               metric: str = "COSINE", index: str = "HNSW", index_params: Mapping[str, Any] | None = None,
               coarse_dim: int | None = None, token: str | None = None, user: str | None = None,
               password: str | None = None, db_name: str | None = None, timeout: float | None = None,
               **client_kwargs: Any) -> MilvusStore:
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
        token, user, password, db_name, timeout: Milvus server connection settings.
        **client_kwargs: passed to ``pymilvus.MilvusClient``.

    Returns:
        A :class:`MilvusStore`.

    Raises:
        InputError: a bad target, metric, index, dim or collection name (the message lists
            the allowed values).
        SchemaMismatchError: the collection exists with another dim, coarse dim, metric or layout.
        UnavailableError: the server cannot be reached, or another process has the Milvus
            Lite file open (Milvus Lite allows one process per file, until that process exits).
        MissingDependencyError: pymilvus is not installed.

    An existing collection is loaded if it is not loaded yet, so the store can search at once.

    Example:
        >>> store = open_store("milvus:./photos.db", collection="photos", embedder=emb, dim=1024)  # doctest: +SKIP
        >>> store.create(fields={"color": str}, exist_ok=True)                                    # doctest: +SKIP
    """
    parsed = parse_target(target)
    _check_name("collection", collection)
    metric_u = str(metric).upper()
    if metric_u not in METRICS:
        raise InputError(f"metric {metric!r} is not supported; allowed are {list(METRICS)}")
    index_u = str(index).upper()
    if index_u not in INDEX_TYPES:
        raise InputError(f"index {index!r} is not supported; allowed are {list(INDEX_TYPES)}")
    if dim is not None:
        dim = _check_dim("dim", dim)
    if coarse_dim is not None:
        coarse_dim = _check_dim("coarse_dim", coarse_dim)
        if dim is not None and coarse_dim >= dim:
            raise InputError(f"coarse_dim must be smaller than dim={dim}, got {coarse_dim}")
    if index_params is not None and not isinstance(index_params, Mapping):
        raise InputError(f"index_params must be a dict, got {type(index_params).__name__}")
    pymilvus = _pymilvus()
    if parsed.lite:
        pathlib.Path(parsed.uri).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        locked = _lite_lock_conflict(parsed.uri)  # before pymilvus, which would log a traceback
        if locked is not None:
            raise UnavailableError(_lite_locked_message(parsed.uri)) from locked
    try:
        client = pymilvus.MilvusClient(uri=parsed.uri, token=token or "", user=user or "",
                                       password=password or "", db_name=db_name or "", timeout=timeout,
                                       **client_kwargs)
    except _exception_types() as exc:
        if parsed.lite and _lite_lock_conflict(parsed.uri) is not None:  # taken since the check
            raise UnavailableError(_lite_locked_message(parsed.uri)) from exc
        raise UnavailableError(f"cannot connect to Milvus at {parsed.uri!r}: "
                               f"{getattr(exc, 'message', exc)}") from exc
    try:
        store = MilvusStore(client, parsed, collection=collection, embedder=embedder, dim=dim, metric=metric_u,
                            index=index_u, index_params=index_params, coarse_dim=coarse_dim)
        if store._dim is None and embedder is not None:
            store._dim = int(embedder.dim)
    except BaseException:
        client.close()
        raise
    return store


def _lite_locked_message(uri: str) -> str:
    return (f"{uri} is open in another process; Milvus Lite allows one process per file; "
            "use a Milvus server or close that process")


def _lite_lock_conflict(uri: str) -> OSError | None:
    """The error of taking Milvus Lite's lock on this file when another process holds it, else None.

    Milvus Lite serves a ``.db`` path from the first process that opens it and keeps an
    exclusive ``flock`` on ``<path>/LOCK`` until that process exits (``close()`` does not
    release it). When another process holds it, pymilvus only logs the cause and raises
    "Open local milvus failed"; this finds the cause by trying the same lock.
    """
    try:
        import fcntl

        from milvus_lite.db import LOCK_FILENAME
        from milvus_lite.server_manager import server_manager_instance
    except ImportError:  # pragma: no cover - Windows, or another Milvus Lite layout
        return None
    path = os.path.abspath(uri)  # as Milvus Lite's server manager keys its servers
    if path in getattr(server_manager_instance, "_servers", {}):
        return None  # this process serves it (a second flock here would conflict with our own)
    try:
        fd = os.open(os.path.join(path, LOCK_FILENAME), os.O_RDWR)
    except OSError:
        return None  # no lock file: never opened, or not a Milvus Lite directory
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except OSError as exc:
        return exc
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- pymilvus.model twin
class QwenVLEmbeddingFunction:
    """A ``pymilvus.model``-style dense embedding function backed by Qwen3-VL.

    Drop-in for code written against ``pymilvus.model.dense.*EmbeddingFunction``: the
    same ``encode_documents`` / ``encode_queries`` / ``dim`` / ``__call__``, returning
    lists of float32 numpy arrays. Unlike text-only functions, items may also be images,
    videos or fused dicts.

    Args:
        embedder: an ``Embedder`` or ``RemoteEmbedder``.
        dim: MRL dim of the vectors (default: the embedder's full dim).
        instruction: the query instruction (default: a generic retrieval one).

    Example:
        >>> ef = QwenVLEmbeddingFunction(emb, dim=1024)                         # doctest: +SKIP
        >>> client.insert("docs", [{"id": i, "vector": v, "text": t}
        ...     for i, (t, v) in enumerate(zip(texts, ef.encode_documents(texts)))])  # doctest: +SKIP
        >>> client.search("docs", data=ef.encode_queries(["a red car"]), limit=5)  # doctest: +SKIP
    """

    def __init__(self, embedder: Any, dim: int | None = None, *, instruction: str | None = None) -> None:
        if embedder is None:
            raise InputError("QwenVLEmbeddingFunction needs an embedder (Embedder or RemoteEmbedder)")
        self.embedder = embedder
        self._dim = None if dim is None else _check_dim("dim", dim)
        self.instruction = instruction

    @property
    def dim(self) -> int:
        """The dimension of the vectors returned."""
        return self._dim if self._dim is not None else int(self.embedder.dim)

    @property
    def model_name(self) -> str:
        """The embedder's checkpoint name."""
        return str(getattr(self.embedder, "name", "") or "Qwen3-VL-Embedding")

    def encode_documents(self, documents: Sequence[Any]) -> list[np.ndarray]:
        """Embed documents (texts, images, videos or fused dicts).

        Raises:
            InputError: a bad document (naming its index).
        """
        return list(self.embedder.embed_documents(list(documents), dim=self.dim))

    def encode_queries(self, queries: Sequence[Any]) -> list[np.ndarray]:
        """Embed queries with the query instruction.

        Raises:
            InputError: a bad query (naming its index).
        """
        return list(self.embedder.embed_queries(list(queries), dim=self.dim, instruction=self.instruction))

    def __call__(self, texts: Sequence[Any]) -> list[np.ndarray]:
        """Same as :meth:`encode_documents` (as in pymilvus.model)."""
        return self.encode_documents(texts)

    def __repr__(self) -> str:
        return f"QwenVLEmbeddingFunction({self.model_name!r}, dim={self.dim})"


# ---------------------------------------------------------------------------- server-side functions
def text_embedding_function(*, base_url: str, model_name: str, dim: int, input_field: str, output_field: str,
                            api_key: str | None = None, name: str | None = None,
                            extra_params: Mapping[str, Any] | None = None) -> "Function":
    """A ``TEXT_EMBEDDING`` function calling our OpenAI-compatible service, for a new schema.

    Add it to a ``CollectionSchema`` before ``create_collection``: Milvus (and Milvus Lite)
    then embeds the ``input_field`` text of every insert into ``output_field`` and embeds
    text queries given to ``search(data=["..."])``.

    Args:
        base_url: the service's OpenAI base URL, e.g. ``http://localhost:8000/v1``.
        model_name: the model name the service expects.
        dim: output dim (sent as ``dimensions``; an MRL dim).
        input_field: a VARCHAR field.
        output_field: a FLOAT_VECTOR(dim) field.
        api_key: the service's key, if it wants one (Milvus Lite requires some value and
            falls back to ``OPENAI_API_KEY``; ``"EMPTY"`` is used when neither is set).
            Milvus servers read provider keys from their ``credential`` config instead:
            pass ``extra_params={"credential": "..."}``.
        name: function name (default ``<output_field>_qvl``).
        extra_params: other provider params, passed through.

    Returns:
        A ``pymilvus.Function``.

    Example:
        >>> schema.add_function(text_embedding_function(base_url="http://localhost:8000/v1",
        ...     model_name="Qwen3-VL-Embedding-2B", dim=1024, input_field="text",
        ...     output_field="vector"))  # doctest: +SKIP
    """
    import os

    from pymilvus import Function, FunctionType

    _check_dim("dim", dim)
    _check_name("field", input_field)
    _check_name("field", output_field)
    if not isinstance(base_url, str) or not base_url.lower().startswith(("http://", "https://")):
        raise InputError(f"base_url must be an http(s) URL such as 'http://localhost:8000/v1', got {base_url!r}")
    params: dict[str, Any] = {"provider": "openai", "model_name": model_name, "base_url": base_url.rstrip("/"),
                              "dimensions": int(dim)}
    key = api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    params["api_key"] = key
    params.update(extra_params or {})
    return Function(name=name or f"{output_field}_qvl", function_type=FunctionType.TEXTEMBEDDING,
                    input_field_names=[input_field], output_field_names=[output_field], params=params)


def add_text_embedding_function(client: "MilvusClient", collection: str, *, base_url: str, model_name: str,
                                dim: int, input_field: str, output_field: str, api_key: str | None = None,
                                name: str | None = None, extra_params: Mapping[str, Any] | None = None) -> "Function":
    """Add a ``TEXT_EMBEDDING`` function (provider ``openai``, our service) to an existing collection.

    Milvus then embeds ``input_field`` on insert and text queries on search by calling
    ``base_url`` (``qvl serve``'s OpenAI-compatible endpoint). Needs a Milvus 2.6 server:
    Milvus Lite and Milvus 3.x cannot add a function to an existing collection; declare it
    at creation with :func:`text_embedding_function` instead.

    Args:
        client: a ``pymilvus.MilvusClient`` (e.g. ``store.client``).
        collection: an existing collection with a VARCHAR ``input_field`` and a
            FLOAT_VECTOR(dim) ``output_field``.
        base_url, model_name, dim, api_key, name, extra_params: as for :func:`text_embedding_function`.

    Returns:
        The ``pymilvus.Function`` that was added.

    Raises:
        ConnectorError: the server cannot add functions to existing collections (Milvus Lite,
            Milvus 3.x); the message says to use :func:`text_embedding_function` at creation.
        NotFoundError: the collection does not exist.
        SchemaMismatchError: the fields are missing or of the wrong type or dim.

    Example:
        >>> add_text_embedding_function(store.client, "photos", base_url="http://qvl:8000/v1",
        ...     model_name="Qwen3-VL-Embedding-2B", dim=1024, input_field="text",
        ...     output_field="vector")  # doctest: +SKIP
    """
    function = text_embedding_function(base_url=base_url, model_name=model_name, dim=dim, input_field=input_field,
                                       output_field=output_field, api_key=api_key, name=name,
                                       extra_params=extra_params)
    with _translated("get_server_version"):
        version = str(client.get_server_version())
    if version.lower().startswith(_LITE_VERSION_PREFIX):
        raise ConnectorError(
            f"Milvus Lite ({version}) cannot add a function to an existing collection ({collection!r}); "
            "declare the TEXT_EMBEDDING function when creating the collection instead: "
            "schema.add_function(text_embedding_function(...)), or use a Milvus 2.6 server")
    with _translated("describe_collection", collection=collection):
        if not client.has_collection(collection):
            raise NotFoundError(f"collection {collection!r} does not exist")
        desc = client.describe_collection(collection)
    have = _describe_fields(desc)
    problems = []
    if input_field not in have or _dtype_name(have[input_field]["type"]) != "VARCHAR":
        problems.append(f"input field {input_field!r} must exist and be VARCHAR")
    if output_field not in have or _dtype_name(have[output_field]["type"]) != "FLOAT_VECTOR":
        problems.append(f"output field {output_field!r} must exist and be FLOAT_VECTOR")
    elif _field_dim(have[output_field]) != int(dim):
        problems.append(f"output field {output_field!r} has dim {_field_dim(have[output_field])}, requested {dim}")
    if problems:
        raise SchemaMismatchError(f"collection {collection!r} cannot take the function: " + "; ".join(problems))
    try:
        with warnings.catch_warnings():
            # pymilvus 3 deprecates it (FutureWarning) because Milvus 3 servers refuse it; 2.6 servers accept it.
            warnings.simplefilter("ignore", FutureWarning)
            client.add_collection_function(collection, function)
    except _exception_types() as exc:
        msg = getattr(exc, "message", None) or str(exc)
        if _is_unavailable(exc):
            raise UnavailableError(f"Milvus add_collection_function failed: {msg}") from exc
        raise ConnectorError(
            f"Milvus {version} refused to add a TEXT_EMBEDDING function to {collection!r}: {msg}. "
            "Milvus 3.x cannot add functions to existing collections; declare it at creation with "
            "text_embedding_function(...)") from exc
    log.info("added TEXT_EMBEDDING function %r (%s -> %s, %s) to %r", function.name, input_field, output_field,
             base_url, collection)
    return function

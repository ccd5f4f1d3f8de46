"""What a store's collection looks like: property types, the properties every store has,
the vector index and its compression, and the description where the store records what
Weaviate keeps no trace of (the named vectors' dims, the embedding fingerprint, the
quantization option)."""
from __future__ import annotations

import datetime as _dt
import json
import uuid as _uuid
from dataclasses import dataclass, field
from typing import Any, Mapping

from embedder.errors import InputError

from .client import NAME_RE

#: Properties every store has; everything else is a user field.
CORE_PROPERTIES = ("row_id", "text", "media", "modality", "metadata")
RESERVED_FIELDS = frozenset(CORE_PROPERTIES) | {"id", "vector", "image", "video", "instruction"}
DESCRIPTION_PREFIX = "qvl:"

#: A Weaviate data type name -> the Python type ``store.fields`` reports (and ``create`` accepts).
PYTHON_TYPES: dict[str, Any] = {
    "text": str, "int": int, "number": float, "boolean": bool, "date": _dt.datetime, "uuid": _uuid.UUID,
    "blob": bytes, "text[]": list[str], "int[]": list[int], "number[]": list[float], "boolean[]": list[bool],
    "date[]": list[_dt.datetime], "uuid[]": list[_uuid.UUID],
}
#: The types the portable filter compares.
SCALAR_TYPES = (str, int, float, bool)


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
             _dt.datetime: DataType.DATE, _dt.date: DataType.DATE, bytes: DataType.BLOB, _uuid.UUID: DataType.UUID,
             list: DataType.TEXT_ARRAY, "text": DataType.TEXT, "str": DataType.TEXT, "string": DataType.TEXT,
             "int": DataType.INT, "float": DataType.NUMBER, "number": DataType.NUMBER, "bool": DataType.BOOL,
             "boolean": DataType.BOOL, "date": DataType.DATE, "datetime": DataType.DATE,
             "text[]": DataType.TEXT_ARRAY, "int[]": DataType.INT_ARRAY, "number[]": DataType.NUMBER_ARRAY,
             "float[]": DataType.NUMBER_ARRAY, "bool[]": DataType.BOOL_ARRAY, "boolean[]": DataType.BOOL_ARRAY,
             "date[]": DataType.DATE_ARRAY, "uuid": DataType.UUID, "uuid[]": DataType.UUID_ARRAY,
             "blob": DataType.BLOB}
    args = getattr(kind, "__args__", None)
    if getattr(kind, "__origin__", None) is list and args:
        table_list = {str: DataType.TEXT_ARRAY, int: DataType.INT_ARRAY, float: DataType.NUMBER_ARRAY,
                      bool: DataType.BOOL_ARRAY, _dt.datetime: DataType.DATE_ARRAY, _uuid.UUID: DataType.UUID_ARRAY}
        if args[0] in table_list:
            return table_list[args[0]]
    key = kind.lower() if isinstance(kind, str) else kind
    try:
        return table[key]
    except (KeyError, TypeError):
        raise InputError(f"field {name!r}: type {kind!r} is not supported; use str, int, float, bool, datetime, "
                         "bytes, list[str], list[int], list[float], list[bool], a type name "
                         "(text, int, number, bool, date, text[], ...) or a weaviate DataType") from None


def data_type_name(dt: Any) -> str:
    """``"text"``, ``"int"``, ... for a ``DataType`` (or its name)."""
    return str(getattr(dt, "value", dt))


def python_type(dt: Any) -> Any:
    """The Python type of a Weaviate data type (``dict`` for objects, geo coordinates, phone numbers)."""
    return PYTHON_TYPES.get(data_type_name(dt), dict)


def check_fields(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """Declared fields as ``{name: python type}``, each type one Weaviate has.

    Raises:
        InputError: a reserved or invalid name, or a type Weaviate has no property for.
    """
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise InputError(f"fields must be a dict {{name: type}}, got {type(fields).__name__}")
    out = {}
    for name, kind in fields.items():
        if not isinstance(name, str) or name in RESERVED_FIELDS or not NAME_RE.match(name):
            raise InputError(f"field name {name!r} is reserved or invalid; reserved: {sorted(RESERVED_FIELDS)}")
        out[name] = python_type(weaviate_data_type(kind, name))
    return out


def make_property(name: str, data_type: Any, **kwargs: Any) -> Any:
    """A ``Property``; text is tokenized by word unless ``tokenization`` says otherwise."""
    from weaviate.classes.config import Property, Tokenization

    if str(data_type.value).startswith("text"):
        kwargs.setdefault("tokenization", Tokenization.WORD)
    return Property(name=name, data_type=data_type, **kwargs)


def user_property(name: str, kind: Any) -> Any:
    """A user field: text is tokenized as one whole value, so ``filter={"color": "red"}`` is
    exact equality (word tokenization made it match "dark red", and "x or a" match "x")."""
    from weaviate.classes.config import Tokenization

    data_type = weaviate_data_type(kind, name)
    if data_type_name(data_type).startswith("text"):
        return make_property(name, data_type, tokenization=Tokenization.FIELD)
    return make_property(name, data_type)


def core_properties(metadata_fields: Mapping[str, str] | None) -> list[Any]:
    """The properties every store has; ``metadata`` is TEXT holding JSON, or an OBJECT with
    ``metadata_fields`` (name -> data type name) as nested properties."""
    from weaviate.classes.config import DataType, Property, Tokenization

    if metadata_fields is not None:
        meta = make_property("metadata", DataType.OBJECT, nested_properties=[
            Property(name=k, data_type=DataType(v)) for k, v in metadata_fields.items()])
    else:
        meta = make_property("metadata", DataType.TEXT, index_filterable=False, index_searchable=False)
    return [make_property("row_id", DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False),
            make_property("text", DataType.TEXT),
            make_property("media", DataType.TEXT, tokenization=Tokenization.FIELD),
            make_property("modality", DataType.TEXT, tokenization=Tokenization.FIELD),
            meta]


def index_config(index: str, params: Mapping[str, Any], *, defaults: bool = True) -> Any:
    """A cosine vector index: ``hnsw`` (``ef_construction=128``, ``max_connections=32`` unless
    given, with ``defaults``) or ``flat``, with ``params`` passed to ``Configure.VectorIndex``."""
    from weaviate.classes.config import Configure, VectorDistances

    kwargs = {"distance_metric": VectorDistances.COSINE, **params}
    if index == "flat":
        return Configure.VectorIndex.flat(**kwargs)
    if defaults:
        kwargs.setdefault("ef_construction", 128)
        kwargs.setdefault("max_connections", 32)
    return Configure.VectorIndex.hnsw(**kwargs)


#: Candidates Weaviate re-scores with the uncompressed vectors under BQ (its ``rescore_limit``).
BQ_RESCORE_LIMIT = 100


def quantizer(quantization: str) -> Any:
    """The compression that stores vectors at ``quantization``: int8 is RQ at 8 bits (no training,
    re-scored as Weaviate does by default), binary is BQ re-scored on :data:`BQ_RESCORE_LIMIT`
    candidates; None for float32."""
    from weaviate.classes.config import Configure

    if quantization == "int8":
        return Configure.VectorIndex.Quantizer.rq(bits=8)
    if quantization == "binary":
        return Configure.VectorIndex.Quantizer.bq(rescore_limit=BQ_RESCORE_LIMIT)
    return None


def quantization_of(index_config: Any) -> str:
    """The quantization a vector index's compression amounts to (a collection made without our record)."""
    kind = type(getattr(index_config, "quantizer", None)).__name__
    if kind == "_BQConfig" or (kind == "_RQConfig" and getattr(index_config.quantizer, "bits", 8) == 1):
        return "binary"
    return "int8" if kind in ("_RQConfig", "_SQConfig") else "float32"


@dataclass(frozen=True)
class StoreSchema:
    """What the store records in the collection description (Weaviate keeps neither).

    Attributes:
        vectors: named vector -> dimension (the largest is the store's ``dim``).
        fingerprint: how the vectors were made (see :func:`embedder.fingerprint_conflicts`), or None.
        quantization: the ``quantization=`` option the collection was created with.
    """

    vectors: Mapping[str, int]
    fingerprint: Mapping[str, Any] | None = field(default=None)
    quantization: str = "float32"

    def marker(self) -> str:
        """The collection description: ``qvl:`` and a JSON object."""
        body: dict[str, Any] = {"vectors": dict(self.vectors)}
        if self.fingerprint:
            body["fingerprint"] = dict(self.fingerprint)
        if self.quantization != "float32":
            body["quantization"] = self.quantization
        return DESCRIPTION_PREFIX + json.dumps(body, sort_keys=True, default=str)

    @classmethod
    def read(cls, description: str | None) -> "StoreSchema | None":
        """The recorded schema, or None for a collection this connector did not make (a
        collection made before fingerprints were recorded has ``fingerprint`` None)."""
        if not description or not description.startswith(DESCRIPTION_PREFIX):
            return None
        try:
            body = json.loads(description[len(DESCRIPTION_PREFIX):])
            vectors = {str(k): int(v) for k, v in body["vectors"].items()}
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
        fp = body.get("fingerprint")
        return cls(vectors, dict(fp) if isinstance(fp, dict) else None, str(body.get("quantization") or "float32"))

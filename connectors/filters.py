"""One portable filter language for every store, parsed once into a small frozen tree.

A filter is a dict, as in Mongo, Chroma or Qdrant::

    {"color": "red"}                                  # equality
    {"price": {"$gt": 10, "$lte": 20}}                # ranges (numbers only)
    {"color": {"$in": ["red", "blue"]}}               # any of
    {"color": {"$ne": "red"}}                         # present and not equal
    {"$or": [{"color": "red"}, {"year": {"$gte": 2020}}]}
    {"$and": [f1, f2]}                                # several keys in one dict also mean AND

Keys: a declared field of the store, or one of the built-in text fields ``text``, ``media``,
``modality``, is that field; ANY OTHER key is the ``metadata`` key of that name (so
``{"year": 2020}`` matches ``metadata={"year": 2020}`` unless ``year`` is a declared field).
``id`` and ``metadata`` are not keys. Values are ``str``, ``int``, ``float`` or ``bool``.

Semantics, the same on every store (:func:`matches` is the exact reference):

- a value matches only a stored value of the same kind: strings match strings, numbers
  (int or float, compared as numbers) match numbers, booleans match booleans;
- a missing or null value matches no condition, ``$ne`` included (SQL's rule);
- ``$gt``/``$gte``/``$lt``/``$lte`` take a number and match numbers only.

:func:`parse` validates the dict (raising :class:`~embedder.errors.InputError` that names the
key, the bad value and the allowed operators) before any query runs; each store compiles the
tree to its native form with the values bound or escaped, never spliced: a Milvus expression
(:func:`connectors.milvus.compile_filter`), SQL with bound parameters
(:mod:`connectors.pgvector`), Weaviate ``Filter`` objects (:mod:`connectors.weaviate`), or
:func:`matches` (the memory store). Each store's native filter stays available for trusted
input (a Milvus expression string, an SQL ``where=``, a Weaviate ``Filter``, a Python callable).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Union

import numpy as np

from embedder.errors import InputError

__all__ = ["Cond", "And", "Or", "Node", "parse", "matches", "OPERATORS", "BUILTIN_FIELDS", "kind_of"]

Scalar = Union[str, int, float, bool]
COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
RANGES = ("$gt", "$gte", "$lt", "$lte")
OPERATORS = (*COMPARISONS, "$in")
LOGICAL = ("$and", "$or")
BUILTIN_FIELDS = ("text", "media", "modality")
RESERVED_KEYS = ("id", "metadata")
MAX_DEPTH = 32
MAX_IN = 1000
_ALLOWED = f"operators {list(OPERATORS)} and {list(LOGICAL)}"


@dataclass(frozen=True)
class Cond:
    """One comparison: ``key op value``.

    Attributes:
        key: the field or metadata key.
        op: one of :data:`OPERATORS`.
        value: a scalar; a tuple of scalars for ``$in``.
        metadata: True when ``key`` is a metadata key, False for a declared or built-in field.
    """

    key: str
    op: str
    value: Any
    metadata: bool


@dataclass(frozen=True)
class And:
    """All of ``parts`` (an empty tuple matches everything)."""

    parts: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    """Any of ``parts`` (at least one)."""

    parts: tuple["Node", ...]


Node = Union[Cond, And, Or]


def kind_of(value: Any) -> str | None:
    """``"str"``, ``"num"`` or ``"bool"`` for a comparable value; None for anything else."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "num"
    if isinstance(value, str):
        return "str"
    return None


_TYPE_KIND = {str: "str", int: "num", float: "num", bool: "bool"}


def _scalar(key: str, op: str, value: Any, ftype: type | None) -> Scalar:
    if isinstance(value, np.generic):  # np.int64(3), np.float32(0.5), np.bool_(True)
        value = value.item()
    kind = kind_of(value)
    if kind is None:
        raise InputError(f"filter key {key!r}: {op} takes a str, int, float or bool, got "
                         f"{type(value).__name__} {value!r}" + ("" if op != "$eq" else
                                                              f" (use {{'$in': [...]}} for any of several "
                                                              f"values; allowed: {_ALLOWED})"))
    if kind == "num" and not math.isfinite(value):
        raise InputError(f"filter key {key!r}: {op} takes a finite number, got {value!r}")
    if isinstance(value, int) and kind == "num" and not -2**63 <= value < 2**63:
        raise InputError(f"filter key {key!r}: {op} takes a 64-bit integer, got {value!r} (a float for larger numbers)")
    if op in RANGES and kind != "num":
        raise InputError(f"filter key {key!r}: {op} takes a number, got {type(value).__name__} {value!r}")
    want = _TYPE_KIND.get(ftype) if ftype is not None else None  # type: ignore[arg-type]
    if want is not None and kind != want:
        raise InputError(f"filter key {key!r}: the field is {ftype.__name__}, got "  # type: ignore[union-attr]
                         f"{type(value).__name__} {value!r} for {op}")
    if op in RANGES and ftype is not None and want != "num":
        raise InputError(f"filter key {key!r}: {op} needs a number field, the field is {ftype.__name__}")
    return value


def _conditions(key: str, spec: Any, fields: Mapping[str, type | None]) -> list[Node]:
    if not isinstance(key, str) or not key:
        raise InputError(f"filter keys must be non-empty strings, got {key!r}")
    if key in RESERVED_KEYS:
        raise InputError(f"filter key {key!r} cannot be filtered with the portable filter; keys are declared "
                         f"fields, {list(BUILTIN_FIELDS)}, or metadata keys")
    if key.startswith("$"):
        raise InputError(f"unknown filter operator {key!r}; allowed: {_ALLOWED}")
    in_meta = key not in fields and key not in BUILTIN_FIELDS
    ftype = None if in_meta else (str if key in BUILTIN_FIELDS and key not in fields else fields[key])
    if not isinstance(spec, Mapping):
        return [Cond(key, "$eq", _scalar(key, "$eq", spec, ftype), in_meta)]
    if not spec:
        raise InputError(f"filter key {key!r}: an empty operator dict; allowed: {list(OPERATORS)}")
    out: list[Node] = []
    for op, value in spec.items():
        if op not in OPERATORS:
            raise InputError(f"filter key {key!r}: unknown operator {op!r}; allowed: {list(OPERATORS)}")
        if op == "$in":
            if not isinstance(value, (list, tuple)) or not value:
                raise InputError(f"filter key {key!r}: $in takes a non-empty list of values, got {value!r}")
            if len(value) > MAX_IN:
                raise InputError(f"filter key {key!r}: $in takes at most {MAX_IN} values, got {len(value)}")
            out.append(Cond(key, "$in", tuple(_scalar(key, "$in", v, ftype) for v in value), in_meta))
        else:
            out.append(Cond(key, op, _scalar(key, op, value, ftype), in_meta))
    return out


def _node(flt: Any, fields: Mapping[str, type | None], depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise InputError(f"filter nests deeper than {MAX_DEPTH} levels")
    if not isinstance(flt, Mapping):
        raise InputError(f"a filter is a dict such as {{'color': 'red'}}, got {type(flt).__name__} {flt!r}")
    if not flt and depth:
        raise InputError("an empty filter {} inside $and/$or; give at least one condition")
    parts: list[Node] = []
    for key, spec in flt.items():
        if key in LOGICAL:
            if not isinstance(spec, (list, tuple)) or not spec:
                raise InputError(f"filter {key} takes a non-empty list of filters, got {spec!r}")
            subs = tuple(_node(s, fields, depth + 1) for s in spec)
            parts.append(And(subs) if key == "$and" else Or(subs))
        else:
            parts.extend(_conditions(key, spec, fields))
    return parts[0] if len(parts) == 1 else And(tuple(parts))


def parse(flt: Mapping[str, Any], fields: Mapping[str, type | None] = {}) -> Node:  # noqa: B006 - read only
    """Validate a portable filter and return its tree.

    Args:
        flt: the filter dict (see the module docstring); ``{}`` matches everything.
        fields: the store's declared fields and their Python types (``str``, ``int``,
            ``float``, ``bool``; None for a field of another or unknown type, compared as given).

    Raises:
        InputError: not a dict, an unknown operator, a list or dict where a scalar is needed,
            a value of the wrong type for its field or operator (names the key).

    Example:
        >>> parse({"color": "red", "price": {"$lt": 10}}, {"color": str})
        And(parts=(Cond(key='color', op='$eq', value='red', metadata=False), Cond(key='price', op='$lt', value=10, metadata=True)))
    """
    return _node(flt, fields, 0)


def _compare(stored: Any, op: str, value: Any) -> bool:
    kind = kind_of(stored)
    if kind is None or kind != kind_of(value):
        return op == "$ne" and kind is not None
    if op == "$eq":
        return stored == value
    if op == "$ne":
        return stored != value
    if op == "$gt":
        return stored > value
    if op == "$gte":
        return stored >= value
    if op == "$lt":
        return stored < value
    return stored <= value  # $lte


def matches(node: Node, fields: Mapping[str, Any]) -> bool:
    """Whether a row's fields (declared fields and built-ins at the top, ``metadata`` a dict)
    satisfy ``node``: the exact reference every store's compiled filter agrees with."""
    if isinstance(node, And):
        return all(matches(p, fields) for p in node.parts)
    if isinstance(node, Or):
        return any(matches(p, fields) for p in node.parts)
    if node.metadata:
        meta = fields.get("metadata")
        stored = meta.get(node.key) if isinstance(meta, Mapping) else None
    else:
        stored = fields.get(node.key)
    if node.op == "$in":
        return any(_compare(stored, "$eq", v) for v in node.value)
    return _compare(stored, node.op, node.value)

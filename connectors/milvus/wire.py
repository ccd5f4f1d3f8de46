"""Milvus' side of the wire: targets, expressions, driver errors, names, and the Milvus Lite lock.

Nothing here holds a connection: :mod:`connectors.milvus.store` and
:mod:`connectors.milvus.functions` build on it. pymilvus is imported lazily.
"""
from __future__ import annotations

import os
import pathlib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from embedder.errors import (ConnectorError, InputError, NotFoundError, QVLError,
                             UnavailableError)

from ..core import import_optional
from ..filters import And, Node, Or

#: Python type of a user-declared field -> Milvus data type name.
FIELD_TYPES: dict[type, str] = {str: "VARCHAR", int: "INT64", float: "DOUBLE", bool: "BOOL"}
MAX_VECTOR_DIM = 32768
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
LITE_VERSION_PREFIX = "milvus_lite"
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
    if not node.metadata and not NAME_RE.match(node.key):
        raise InputError(f"filter key {node.key!r} is not a valid Milvus field name")
    if node.op == "$in":
        if node.metadata:
            return " or ".join(f"{target} == {_value_literal(v)}" for v in node.value)
        return f"{target} in [" + ", ".join(_value_literal(v) for v in node.value) + "]"
    return f"{target} {_MILVUS_OPS[node.op]} {_value_literal(node.value)}"




# ---------------------------------------------------------------------------- driver errors
def pymilvus() -> Any:
    """The pymilvus module, or :class:`MissingDependencyError` naming the extra to install."""
    return import_optional("pymilvus", package="pymilvus", extra="milvus", purpose="The Milvus connector")


def driver_errors() -> tuple[type[BaseException], ...]:
    """The exceptions pymilvus raises: its own, and gRPC's that it lets through (timeouts)."""
    from pymilvus.exceptions import MilvusException

    try:
        import grpc
    except ImportError:  # pragma: no cover - pymilvus depends on grpcio
        return (MilvusException,)
    return (MilvusException, grpc.RpcError)


# gRPC status names and Milvus error codes that say "the server is away or busy, try later"
_UNAVAILABLE_STATUS = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"})
_RATE_LIMIT_CODE = 8  # Milvus' ErrorCode.RATE_LIMIT
_UNAVAILABLE_TEXT = re.compile(r"fail connecting|unavailable|deadline|timed? ?out|retry timeout|rate limit|"
                               r"connection (refused|reset)", re.IGNORECASE)


def _code(exc: BaseException) -> Any:
    code = getattr(exc, "code", None)
    return code() if callable(code) else code  # grpc.RpcError.code() is a method


def is_unavailable(exc: BaseException) -> bool:
    """A lost or refused connection, a timeout or an overloaded (rate-limiting) server."""
    from pymilvus.exceptions import ConnectError, MilvusUnavailableException

    code = _code(exc)
    if isinstance(exc, (ConnectError, MilvusUnavailableException)) or code in (2, _RATE_LIMIT_CODE):
        return True
    if getattr(code, "name", None) in _UNAVAILABLE_STATUS:
        return True
    return bool(_UNAVAILABLE_TEXT.search(str(getattr(exc, "message", None) or exc)))


def is_not_found(exc: BaseException) -> bool:
    """The collection does not exist."""
    msg = str(getattr(exc, "message", exc)).lower()
    return _code(exc) == 100 or ("collection" in msg and ("not exist" in msg or "not found" in msg))


def translate(exc: BaseException, what: str, *, collection: str | None = None,
              filter: str | None = None) -> QVLError:
    """A pymilvus (or gRPC) error as one of ours: :class:`UnavailableError` for a lost
    connection, a timeout or an overloaded server (so a failure is marked transient),
    :class:`NotFoundError` for a missing collection, :class:`InputError` for a filter
    Milvus rejects, else :class:`ConnectorError`. The caller raises it ``from exc``."""
    msg = getattr(exc, "message", None) or str(exc)
    if is_unavailable(exc):
        return UnavailableError(f"Milvus {what} failed: server unavailable: {msg}")
    if is_not_found(exc):
        return NotFoundError(f"Milvus {what} failed: collection {collection!r} does not exist")
    if filter is not None and _code(exc) in (6, 1100, 65535):
        return InputError(f"Milvus rejected the filter {filter!r}: {msg}")
    return ConnectorError(f"Milvus {what} failed: {msg}")


@contextmanager
def translated(what: str, *, collection: str | None = None, filter: str | None = None) -> Iterator[None]:
    """Run a pymilvus call, raising its errors as ours (:func:`translate`, ``raise ... from exc``)."""
    try:
        yield
    except driver_errors() as exc:
        raise translate(exc, what, collection=collection, filter=filter) from exc


# ---------------------------------------------------------------------------- names, dims, schemas
def check_name(kind: str, name: Any) -> str:
    """A valid Milvus collection or field name, else :class:`InputError` saying what is allowed."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise InputError(f"{kind} name {name!r} is invalid: Milvus names start with a letter or '_' and "
                         "contain only letters, digits and '_' (at most 255 characters)")
    return name


def check_vector_dim(kind: str, dim: Any) -> int:
    """An integer dim Milvus can store (1..32768), else :class:`InputError`."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 1 <= int(dim) <= MAX_VECTOR_DIM:
        raise InputError(f"{kind} must be an integer from 1 to {MAX_VECTOR_DIM}, got {dim!r}")
    return int(dim)


def dtype_name(raw: Any) -> str:
    """A field type from ``describe_collection`` as its name (``VARCHAR``)."""
    return getattr(raw, "name", str(raw))


def fields_by_name(desc: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``describe_collection``'s fields, by name."""
    return {f["name"]: f for f in desc.get("fields", [])}


def field_dim(info: Mapping[str, Any] | None) -> int | None:
    """A vector field's dim, or None."""
    dim = ((info or {}).get("params") or {}).get("dim")
    return int(dim) if dim is not None else None


# ---------------------------------------------------------------------------- Milvus Lite's lock
def lite_locked_message(uri: str) -> str:
    return (f"{uri} is open in another process; Milvus Lite allows one process per file; "
            "use a Milvus server or close that process")


def lite_lock_conflict(uri: str) -> OSError | None:
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

"""Qdrant's side of the wire: targets, the one local-mode client per folder, driver errors, point
ids, and the portable filter as a ``qdrant_client.models.Filter``.

Nothing here knows the store: :mod:`connectors.qdrant.store` builds on it. qdrant-client is
imported lazily.
"""
from __future__ import annotations

import os
import pathlib
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from embedder.errors import ConnectorError, InputError, NotFoundError, QVLError, \
    UnavailableError

from ..core import import_optional, translating
from ..core import row_uuid as point_id  # noqa: F401 - the Weaviate store's ids too; used by store.py
from ..filters import And, Cond, Node, Or, kind_of

if TYPE_CHECKING:  # pragma: no cover
    from qdrant_client import QdrantClient, models

#: A collection name Qdrant accepts everywhere (it is a folder name in local mode).
COLLECTION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
#: A payload key written as is in a JSON path (anything else is quoted: ``metadata."a b"``).
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def qdrant_models() -> Any:
    """``qdrant_client.models``, or :class:`MissingDependencyError` naming the extra to install."""
    return import_optional("qdrant_client.models", package="qdrant-client", extra="qdrant",
                           purpose="The Qdrant connector")


# ---------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class QdrantTarget:
    """Where a store lives: a local-mode folder (``path``) or a server (``url``)."""

    path: str | None = None
    url: str | None = None

    @property
    def local(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        return f"qdrant:{self.path}" if self.local else str(self.url)


def parse_target(target: str | os.PathLike[str]) -> QdrantTarget:
    """``qdrant:./folder`` / ``qdrant:///abs/folder`` (local mode), ``qdrant://host:6333``,
    ``qdrant+https://host:6333``, ``qdrant+http://host:6333`` (a server).

    Example:
        >>> parse_target("qdrant://localhost:6333")
        QdrantTarget(path=None, url='http://localhost:6333')
    """
    text = str(target)
    lower = text.lower()
    for scheme, http in (("qdrant+https://", "https://"), ("qdrant+http://", "http://")):
        if lower.startswith(scheme):
            return QdrantTarget(url=http + text[len(scheme):])
    if lower.startswith("qdrant:"):
        rest = text[len("qdrant:"):]
        if rest.startswith("///"):
            return QdrantTarget(path=rest[2:])
        if rest.startswith("//"):
            return QdrantTarget(url="http://" + rest[2:])
        if rest:
            return QdrantTarget(path=rest)
    raise InputError(f"unsupported Qdrant target {text!r}: use 'qdrant:./folder' (local mode), "
                     "'qdrant://host:6333' or 'qdrant+https://host:6333'")


# ---------------------------------------------------------------------------- local mode: one client per folder
def locked_message(path: str) -> str:
    return (f"{path} is open in another process; Qdrant local mode allows one process per folder: "
            "use a Qdrant server (qdrant://host:6333) or close that process")


class _Shared:
    """A local-mode client and how many stores use it."""

    def __init__(self, client: "QdrantClient") -> None:
        self.client = client
        self.users = 0
        self.lock = threading.RLock()  # local mode is plain Python over SQLite: one call at a time


_LOCAL: dict[str, _Shared] = {}
_LOCAL_LOCK = threading.Lock()


def acquire_local(path: str, **client_kwargs: Any) -> tuple["QdrantClient", threading.RLock]:
    """The process' one local-mode client for ``path`` (and the lock its calls take).

    Qdrant local mode takes an exclusive lock on its folder for each client, even within one
    process; the stores of a process on one folder share a client, and a second process gets
    a one-line :class:`UnavailableError`. Release with :func:`release_local`.
    """
    qdrant_models()
    from qdrant_client import QdrantClient

    key = os.path.realpath(os.path.expanduser(path))
    with _LOCAL_LOCK:
        shared = _LOCAL.get(key)
        if shared is None or shared.client._client.closed:  # type: ignore[attr-defined]
            pathlib.Path(key).mkdir(parents=True, exist_ok=True)
            try:
                client = QdrantClient(path=key, force_disable_check_same_thread=True, **client_kwargs)
            except RuntimeError as exc:
                if "already accessed" in str(exc):
                    raise UnavailableError(locked_message(path)) from exc
                raise ConnectorError(f"cannot open the Qdrant folder {path}: {exc}") from exc
            shared = _LOCAL[key] = _Shared(client)
        shared.users += 1
        return shared.client, shared.lock


def release_local(client: "QdrantClient") -> None:
    """One store less on a local-mode client; the last one closes it (and frees the folder)."""
    with _LOCAL_LOCK:
        for key, shared in list(_LOCAL.items()):
            if shared.client is client:
                shared.users -= 1
                if shared.users <= 0:
                    del _LOCAL[key]
                    with shared.lock:
                        client.close()
                return


# ---------------------------------------------------------------------------- driver errors
_UNAVAILABLE_STATUS = {429, 502, 503, 504}
_UNAVAILABLE_GRPC = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
_NOT_FOUND = re.compile(r"collection .*(not found|doesn't exist|does not exist)|not found: collection",
                        re.IGNORECASE)


def translate(exc: BaseException, what: str) -> BaseException:
    """A qdrant-client (or local mode) error as one of ours; ``exc`` itself when it is already ours.

    A refused or lost connection, a timeout or an overloaded server becomes
    :class:`UnavailableError` (so a failed write is transient), a missing collection
    :class:`NotFoundError`, anything else :class:`ConnectorError`.
    """
    if isinstance(exc, QVLError):
        return exc
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    status = getattr(exc, "status_code", None) if isinstance(exc, UnexpectedResponse) else None
    grpc_code = None
    code = getattr(exc, "code", None)
    if callable(code) and not isinstance(exc, UnexpectedResponse):  # grpc.RpcError (prefer_grpc=True)
        try:
            grpc_code = getattr(code(), "name", None)
        except Exception:  # noqa: BLE001 - not a gRPC error after all
            grpc_code = None
    if isinstance(exc, (ResponseHandlingException, ConnectionError, TimeoutError)) or status in _UNAVAILABLE_STATUS \
            or grpc_code in _UNAVAILABLE_GRPC:
        return UnavailableError(f"Qdrant {what} failed: server unavailable: {text}")
    if status == 404 or grpc_code == "NOT_FOUND" or _NOT_FOUND.search(text):
        return NotFoundError(f"Qdrant {what} failed: {text}")
    if isinstance(exc, RuntimeError) and "already accessed" in text:
        return UnavailableError(text)
    return ConnectorError(f"Qdrant {what} failed: {text}")


def driver_errors(what: str) -> Any:
    """Run qdrant-client calls, raising their errors as ours (:func:`translate`, ``from exc``)."""
    return translating(translate, what)


# ---------------------------------------------------------------------------- the portable filter
def payload_key(node: Cond) -> str | None:
    """The JSON path of a condition's payload key (``metadata.<key>``, quoted when needed), or
    None when Qdrant cannot address it (a metadata key with a double quote, or empty)."""
    if not node.metadata:
        return node.key  # declared names are checked at create; text, media, modality
    if _PLAIN_KEY.match(node.key):
        return f"metadata.{node.key}"
    if not node.key or '"' in node.key:
        return None
    return f'metadata."{node.key}"'


def _equal(key: str, value: Any) -> Any:
    """``key == value`` for one value of a kind: numbers as a closed range (Qdrant's exact match
    takes no floats, and a float 15.0 is not an exact match of 15), strings and booleans matched."""
    m = qdrant_models()
    if kind_of(value) == "num":
        return m.FieldCondition(key=key, range=m.Range(gte=value, lte=value))
    return m.FieldCondition(key=key, match=m.MatchValue(value=value))


def _any_of(key: str, values: tuple) -> Any:
    m = qdrant_models()
    strings = [v for v in values if kind_of(v) == "str"]
    parts = [m.FieldCondition(key=key, match=m.MatchAny(any=strings))] if strings else []
    parts += [_equal(key, v) for v in dict.fromkeys(v for v in values if kind_of(v) != "str")]
    return parts[0] if len(parts) == 1 else m.Filter(should=parts)


def compile_condition(node: Node) -> tuple[Any, bool]:
    """``(condition or None, exact)``: a Qdrant condition selecting a superset of ``node``'s
    matches (None: no constraint) and whether it selects exactly them.

    Qdrant's rules differ from the portable filter's in one corner only: a stored list matches
    when one of its elements does (the portable filter's lists match nothing). The store checks
    the hits with :func:`connectors.filters.matches`, which settles it.
    """
    m = qdrant_models()
    if isinstance(node, (And, Or)):
        compiled = [compile_condition(p) for p in node.parts]
        exact = all(e for _, e in compiled)
        if isinstance(node, Or):
            if not compiled or any(c is None for c, _ in compiled):
                return None, False
            parts = [c for c, _ in compiled]
            return (parts[0] if len(parts) == 1 else m.Filter(should=parts)), exact
        parts = [c for c, _ in compiled if c is not None]
        if not parts:
            return None, exact
        return (parts[0] if len(parts) == 1 else m.Filter(must=parts)), exact
    key = payload_key(node)
    if key is None:
        return None, False
    if node.op == "$in":
        return _any_of(key, node.value), True
    if node.op == "$eq":
        return _equal(key, node.value), True
    if node.op == "$ne":  # present (not missing, not null) and not equal: a missing value matches nothing
        return m.Filter(must_not=[m.IsEmptyCondition(is_empty=m.PayloadField(key=key)), _equal(key, node.value)]), True
    bound = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}[node.op]
    return m.FieldCondition(key=key, range=m.Range(**{bound: node.value})), True


def as_filter(condition: Any) -> "models.Filter | None":
    """A condition as the ``Filter`` the query methods take (None stays None)."""
    m = qdrant_models()
    if condition is None or isinstance(condition, m.Filter):
        return condition
    return m.Filter(must=[condition])

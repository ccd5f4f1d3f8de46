"""Reaching a Weaviate server: the target URL, the connected client, object UUIDs,
collection names, and the driver's errors translated into ours."""
from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from embedder.errors import ConnectorError, InputError, NotFoundError, UnavailableError

from ..core import import_optional, is_transient, row_uuid, translating  # noqa: F401 - row_uuid: this API

if TYPE_CHECKING:  # pragma: no cover
    import weaviate

DEFAULT_PORT = 8080
DEFAULT_GRPC_PORT = 50051
NAME_RE = re.compile(r"^[A-Za-z][_0-9A-Za-z]*$")


def import_weaviate() -> Any:
    """The ``weaviate`` package, or a :class:`MissingDependencyError` naming the extra."""
    return import_optional("weaviate", package="weaviate-client", extra="weaviate", purpose="The Weaviate connector")


def collection_name(name: str) -> str:
    """A Weaviate collection name: first letter upper-case (as Weaviate stores it).

    Raises:
        InputError: the name has characters Weaviate does not allow.
    """
    if not isinstance(name, str) or not NAME_RE.match(name):
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
    weaviate = import_weaviate()
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


_NOT_FOUND = re.compile(r"(class|collection) .*(not found|does not exist|could not find)|no such class"
                        r"|could not find (class|collection)", re.I)


def translate(exc: BaseException, what: str) -> BaseException:
    """A weaviate-client exception as one of our errors (``exc`` itself when it is not the driver's).

    A lost connection, a timeout or an overloaded server becomes :class:`UnavailableError`
    (so a failed write is marked transient), a missing collection :class:`NotFoundError`,
    any other driver error :class:`ConnectorError`.
    """
    if isinstance(exc, (ConnectorError, InputError)):
        return exc
    from weaviate import exceptions as wex

    text = str(exc)
    if isinstance(exc, (wex.WeaviateConnectionError, wex.WeaviateGRPCUnavailableError, wex.WeaviateTimeoutError,
                        ConnectionError, TimeoutError)) or (
            isinstance(exc, wex.UnexpectedStatusCodeError) and exc.status_code in (429, 502, 503, 504)) or (
            isinstance(exc, wex.WeaviateBaseError) and is_transient(exc)):
        return UnavailableError(f"{what}: Weaviate is unavailable: {text}")
    if isinstance(exc, wex.UnexpectedStatusCodeError) and exc.status_code == 404 or _NOT_FOUND.search(text):
        return NotFoundError(f"{what}: {text}")
    if isinstance(exc, wex.WeaviateBaseError):
        return ConnectorError(f"{what}: {text}")
    return exc


def driver_errors(what: str) -> Any:
    """Translate weaviate-client exceptions into this project's connector errors (:func:`translate`)."""
    return translating(translate, what)

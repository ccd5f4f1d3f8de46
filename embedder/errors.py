"""One exception tree for the whole project.

Everything we raise derives from :class:`QVLError`, so ``except QVLError`` catches
any of our errors and nothing else::

    QVLError
    ├── InputError               a caller's item is bad (names the item index / row id)
    │   └── LimitError           ... larger than a configured limit (the service answers 413)
    ├── ModelLoadError           a checkpoint cannot be found, downloaded or loaded
    ├── OverloadedError          a bounded queue is full; try again later
    ├── MissingDependencyError   an optional extra is not installed (names the extra)
    ├── RemoteError              the embedding service answered with an error
    └── ConnectorError           database side (raised by :mod:`connectors`)
        ├── UnavailableError     the database cannot be reached
        ├── NotFoundError        collection / table does not exist
        ├── SchemaMismatchError  existing schema differs from the requested one
        └── PartialUpsertError   some rows did not land (carries their ids)

Driver errors are translated with ``raise ... from exc`` so the original stays visible.
"""
from __future__ import annotations

from typing import Any, Sequence


class QVLError(Exception):
    """Base class of every error this project raises."""


class InputError(QVLError, ValueError):
    """An input item (or row) is invalid.

    Attributes:
        index: position of the item in the caller's list (None when not applicable).
        reason: human readable reason, without the index prefix.
    """

    def __init__(self, reason: str, *, index: int | None = None, item_id: Any = None) -> None:
        self.index = index
        self.item_id = item_id
        self.reason = reason
        where = []
        if index is not None:
            where.append(f"item {index}")
        if item_id is not None:
            where.append(f"id {item_id!r}")
        prefix = (", ".join(where) + ": ") if where else ""
        super().__init__(prefix + reason)

    def at(self, index: int) -> "InputError":
        """Return a copy of this error attributed to ``index``."""
        return InputError(self.reason, index=index, item_id=self.item_id)


class LimitError(InputError):
    """An item is larger than a configured limit (pixels, frames, characters): refused before the work."""

    def at(self, index: int) -> "LimitError":
        return LimitError(self.reason, index=index, item_id=self.item_id)


class ModelLoadError(QVLError, OSError):
    """A checkpoint could not be found, downloaded or loaded faithfully."""


class OverloadedError(QVLError, RuntimeError):
    """A bounded queue is full. ``retry_after`` is a suggested wait in seconds."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class MissingDependencyError(QVLError, ImportError):
    """A dependency is missing; the message names the extra to install (``extra=""``: the core install).

    Example message: ``Running a model in this process needs the Python package 'torch', which is
    not installed. Install it with: pip install "qwen3-vl-search[local]" (from a checkout:
    pip install -e ".[local]")``.
    """

    def __init__(self, package: str, extra: str, purpose: str) -> None:
        self.package = package
        self.extra = extra
        dist, target = (f"qwen3-vl-search[{extra}]", f".[{extra}]") if extra else ("qwen3-vl-search", ".")
        super().__init__(
            f"{purpose} needs the Python package {package!r}, which is not installed. "
            f"Install it with: pip install \"{dist}\" (from a checkout: pip install -e \"{target}\")"
        )


class RemoteError(QVLError, RuntimeError):
    """The embedding service answered with an error.

    Attributes: status (HTTP status), code (machine-readable code), index (bad item, if any).
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 index: int | None = None) -> None:
        self.status = status
        self.code = code
        self.index = index
        super().__init__(message)


class ConnectorError(QVLError):
    """Base class of database-side errors."""


class UnavailableError(ConnectorError, ConnectionError):
    """The database cannot be reached (or answered with a transient failure)."""


class NotFoundError(ConnectorError, LookupError):
    """The collection, table or object does not exist."""


class SchemaMismatchError(ConnectorError):
    """An existing collection/table does not match the requested schema."""


class PartialUpsertError(ConnectorError):
    """Some rows did not land. ``failed`` holds ``(row_id, reason)`` pairs."""

    def __init__(self, message: str, *, failed: Sequence[tuple[Any, str]] = ()) -> None:
        self.failed = list(failed)
        super().__init__(message)

"""How Ray workers reach the target store: :class:`StoreRef`.

A :class:`StoreRef` is the picklable description of a target (``target``, ``collection``,
``dim``) that the embedding actors (which look up the ids already stored) and the write
tasks of :class:`~connectors.ray.StoreSink` carry. :meth:`StoreRef.open` gives a store in
the worker that calls it:

* a **database server** (Postgres, Weaviate, a Milvus or Qdrant server): each worker
  process opens its own connection once and keeps it for the tasks it runs, so the writes
  of many tasks go in parallel, each through the store's bulk path;
* a **file that one process owns** (Milvus Lite ``milvus:./x.db``, ``faiss:``, Qdrant local
  mode, ``memory:``): a second process cannot open it, so one actor, on the driver's node,
  holds the store and every worker calls it (:meth:`StoreRef.serve` starts it; the sink
  does that on the driver).
"""
from __future__ import annotations

import atexit
import logging
import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..core import Row, UpsertReport

log = logging.getLogger(__name__)

NAMESPACE = "qvl"


def one_process_target(target: str) -> bool:
    """Whether only one process may open ``target`` (a Milvus Lite file, Faiss, Qdrant local, memory)."""
    import connectors

    scheme = connectors.scheme_of(target)
    lowered = target.lower()
    if scheme in ("faiss", "memory"):
        return True
    if scheme == "milvus":
        return not lowered.startswith(("milvus://", "milvus+", "http://", "https://"))
    if scheme == "qdrant":
        return not lowered.startswith(("qdrant://", "qdrant+"))
    return False


@dataclass(frozen=True)
class StoreRef:
    """A target store as Ray workers reach it (picklable; see the module docstring).

    Attributes:
        target: the target URL (``postgresql://...``, ``milvus:./x.db``, ...).
        collection: the collection / table.
        dim: the vector dimension.
        options: further keyword arguments for :func:`connectors.connect`.
    """

    target: str
    collection: str
    dim: int
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def shared(self) -> bool:
        """True when one actor holds the store for every worker (a file one process owns)."""
        return one_process_target(self.target)

    @property
    def actor_name(self) -> str:
        return f"qvl-store:{self.target}:{self.collection}"

    def connect(self) -> Any:
        """A new store handle in this process (no embedder: rows come with their vectors)."""
        import connectors

        return connectors.connect(self.target, collection=self.collection, embedder=None, dim=self.dim,
                                  **dict(self.options))

    def serve(self) -> Any:
        """Start the actor that holds a one-process store, on this node (the driver's); a no-op for
        servers. Returns the actor handle (or None). Idempotent."""
        if not self.shared:
            return None
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node = ray.get_runtime_context().get_node_id()
        owner = ray.remote(num_cpus=0, max_concurrency=4)(_StoreOwner)  # type: ignore[call-overload]
        handle = owner.options(name=self.actor_name, namespace=NAMESPACE, get_if_exists=True,
                               scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(self)
        _SERVED[self.actor_name] = handle  # an actor lives while its creator holds a handle
        return handle

    def stop(self) -> None:
        """Close and end the actor of a one-process store (the file can be opened again). Idempotent."""
        if not self.shared:
            return
        import ray

        _SERVED.pop(self.actor_name, None)
        try:
            actor = ray.get_actor(self.actor_name, namespace=NAMESPACE)
        except ValueError:
            return
        try:
            ray.get(actor.close.remote(), timeout=60)
        except Exception:  # noqa: BLE001 - ending it anyway
            log.debug("closing the store actor failed", exc_info=True)
        ray.kill(actor, no_restart=True)

    def open(self) -> Any:
        """The store as this worker uses it: a kept connection, or a proxy to the owning actor."""
        if self.shared:
            import ray

            return _ActorStore(ray.get_actor(self.actor_name, namespace=NAMESPACE))
        key = (self.target, self.collection, self.dim, self.options)
        with _LOCK:
            store = _OPEN.get(key)
            if store is None:
                store = _OPEN[key] = self.connect()
                if len(_OPEN) == 1:
                    atexit.register(_close_all)
            return store


# one connection per worker process and store, kept for the tasks the process runs
_OPEN: dict[tuple, Any] = {}
_LOCK = threading.Lock()
# the handles of the store actors this process (the driver) started, by name
_SERVED: dict[str, Any] = {}


def _close_all() -> None:
    with _LOCK:
        for store in _OPEN.values():
            try:
                store.close()
            except Exception:  # noqa: BLE001 - closing at exit must not raise
                pass
        _OPEN.clear()


class _StoreOwner:
    """The actor that owns a one-process store (run with ``max_concurrency``: calls are serialised here)."""

    def __init__(self, ref: StoreRef) -> None:
        self._ref = ref
        self._store: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self._store is None:
            self._store = self._ref.connect()
        return self._store

    def create(self) -> None:
        with self._lock:
            self._get().create(exist_ok=True)

    def fields(self) -> list[str]:
        with self._lock:
            return list(getattr(self._get(), "fields", {}) or {})

    def existing_ids(self, ids: list[str]) -> set[str]:
        with self._lock:
            return set(self._get().existing_ids(ids))

    def write_rows(self, rows: list[Row], vectors: np.ndarray) -> UpsertReport:
        with self._lock:
            return self._get().write_rows(rows, vectors)

    def count(self) -> int:
        with self._lock:
            return int(self._get().count())

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


class _ActorStore:
    """The part of the store API the Ray ingest uses, forwarded to the owning actor."""

    def __init__(self, actor: Any) -> None:
        self._actor = actor

    def _call(self, name: str, *args: Any) -> Any:
        import ray

        return ray.get(getattr(self._actor, name).remote(*args))

    def create(self, exist_ok: bool = True) -> None:
        self._call("create")

    @property
    def fields(self) -> list[str]:
        return self._call("fields")

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        return self._call("existing_ids", list(ids))

    def write_rows(self, rows: Sequence[Row], vectors: np.ndarray) -> UpsertReport:
        return self._call("write_rows", list(rows), vectors)

    def count(self) -> int:
        return self._call("count")

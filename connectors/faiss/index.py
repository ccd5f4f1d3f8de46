"""The Faiss side of the Faiss store: index kinds, building and training, generation-named
index files written atomically, and the one-writer lock.

Index kinds (all on L2-normalised vectors, inner product = cosine):

- ``flat``: ``IndexIDMap2(IndexFlatIP)``, exact (the default);
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``. HNSW cannot remove vectors, so a replaced or
  deleted row's vector stays in the graph as a tombstone that searches exclude; the graph
  is rebuilt from the stored vectors when tombstones pass a quarter of it;
- ``ivfpq``: ``IndexIVFPQ`` (ids stored in its inverted lists). It must be trained: until the
  collection holds ``train_rows`` rows the index is an exact flat one; the first write that
  reaches that count trains IVF-PQ on the stored vectors (a sample of at most
  ``MAX_TRAIN`` rows) and moves every row into it. Its approximate scores are re-scored
  exactly from the stored vectors.

``quantization=`` (flat and hnsw; recorded in the spec): ``float16`` is Faiss' scalar quantizer
``QT_fp16`` (``IndexScalarQuantizer`` / ``IndexHNSWSQ``), ``int8`` its ``QT_8bit_uniform``, one
range for every dimension trained on the first vectors added and their negation (a symmetric
global scale, as :mod:`connectors.quantization` does; :meth:`FaissStore.rebuild` trains it again
on the stored rows), ``binary`` an ``IndexBinaryFlat`` / ``IndexBinaryHNSW`` of sign bits
(:class:`BinaryIndex`) whose Hamming candidates the store re-scores from the stored vectors.
"""
from __future__ import annotations

import errno
import fcntl
import math
import os
import pathlib
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from embedder.errors import InputError, UnavailableError

from ..core import import_optional

KINDS = ("flat", "hnsw", "ivfpq")
MAX_TRAIN = 100_000  # rows an IVF-PQ index is trained on at most
SQ_TYPES = {"float16": "QT_fp16", "int8": "QT_8bit_uniform"}  # quantization -> Faiss' scalar quantizer


@dataclass(frozen=True)
class IndexSpec:
    """How a collection's index is built (recorded with the collection).

    Attributes:
        kind: ``flat``, ``hnsw`` or ``ivfpq``.
        hnsw_m: HNSW neighbours per node.
        ef_construction: HNSW build-time search width.
        nlist: IVF lists (None: ``min(4 * sqrt(rows), rows / 39)`` at training).
        pq_m: PQ sub-quantizers (None: ``dim / 8`` rounded down to a divisor of dim).
        nbits: bits per PQ code.
        train_rows: rows needed before IVF-PQ is trained (None: ``max(10000, 39 * nlist)``); the
            automatic ``nlist`` is sized on the rows stored when it trains.
        quantization: how flat and HNSW indexes store the vectors (see the module docstring).
    """

    kind: str = "flat"
    hnsw_m: int = 32
    ef_construction: int = 80
    nlist: int | None = None
    pq_m: int | None = None
    nbits: int = 8
    train_rows: int | None = None
    quantization: str = "float32"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"index must be one of {list(KINDS)}, got {self.kind!r}")
        for name in ("hnsw_m", "ef_construction", "nlist", "pq_m", "nbits", "train_rows"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise InputError(f"{name} must be a positive integer, got {value!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def min_train(self) -> int:
        return self.train_rows or max(10_000, 39 * (self.nlist or 0))


def faiss_module() -> Any:
    # the library (an absolute import: this package is connectors.faiss)
    return import_optional("faiss", package="faiss-cpu", extra="faiss", purpose="The Faiss store")


def normalized(vectors: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(vectors), -1).copy()
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return out / norms


class BinaryIndex:
    """An ``IndexBinaryIDMap2`` behind the float index API the store uses: float vectors in (their
    sign bits stored), scores out as ``1 - 2 * hamming / dim`` (higher is better)."""

    def __init__(self, index: Any) -> None:
        self.index, self.dim = index, int(index.d)

    ntotal = property(lambda self: self.index.ntotal)
    id_map = property(lambda self: self.index.id_map)
    is_trained = True

    def add_with_ids(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.index.add_with_ids(np.packbits(vectors > 0, axis=1), ids)

    def remove_ids(self, selector: Any) -> int:
        return self.index.remove_ids(selector)

    def search(self, query: np.ndarray, k: int, params: Any = None) -> tuple[np.ndarray, np.ndarray]:
        hamming, labels = self.index.search(np.packbits(query > 0, axis=1), k, params=params)
        return 1.0 - 2.0 * hamming.astype(np.float32) / self.dim, labels


def empty_index(spec: IndexSpec, dim: int) -> Any:
    """A new, empty index for ``spec`` (for ``ivfpq``: the exact one used until training)."""
    faiss = faiss_module()
    if spec.quantization == "binary":
        inner = faiss.IndexBinaryHNSW(dim, spec.hnsw_m) if spec.kind == "hnsw" else faiss.IndexBinaryFlat(dim)
        if spec.kind == "hnsw":
            inner.hnsw.efConstruction = spec.ef_construction
        return BinaryIndex(faiss.IndexBinaryIDMap2(inner))
    if spec.quantization in SQ_TYPES:
        qtype = getattr(faiss.ScalarQuantizer, SQ_TYPES[spec.quantization])
        if spec.kind != "hnsw":
            return faiss.IndexIDMap2(faiss.IndexScalarQuantizer(dim, qtype, faiss.METRIC_INNER_PRODUCT))
        inner = faiss.IndexHNSWSQ(dim, qtype, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = spec.ef_construction
        return faiss.IndexIDMap2(inner)
    if spec.kind == "hnsw":
        inner = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = spec.ef_construction
        return faiss.IndexIDMap2(inner)
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def add(index: Any, vectors: np.ndarray, fids: np.ndarray) -> None:
    """Add normalised vectors; an untrained int8 quantizer is first trained on them and their negation."""
    if not index.is_trained:
        index.train(np.vstack([vectors, -vectors]))
    index.add_with_ids(vectors, fids)


def is_trained_ivf(index: Any) -> bool:
    return type(index).__name__ == "IndexIVFPQ"


def pq_m_for(dim: int, wanted: int | None) -> int:
    m = wanted or max(1, dim // 8)
    if dim % m:
        if wanted:
            raise InputError(f"pq_m={wanted} must divide the dim {dim}")
        m = max(d for d in range(1, m + 1) if dim % d == 0)
    return m


def train_ivfpq(spec: IndexSpec, dim: int, sample: np.ndarray) -> Any:
    """An empty, trained ``IndexIVFPQ`` (inner product) from normalised ``sample`` vectors."""
    faiss = faiss_module()
    n = len(sample)
    nlist = spec.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
    if nlist > n:
        raise InputError(f"nlist={nlist} needs at least that many rows to train on, the collection has {n}")
    index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_m_for(dim, spec.pq_m), spec.nbits,
                             faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1  # a small training set is allowed (no warning on stderr)
    index.pq.cp.min_points_per_centroid = 1
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def index_ids(index: Any) -> np.ndarray:
    """The ids an ``IndexIDMap2`` holds."""
    faiss = faiss_module()
    return faiss.vector_to_array(index.id_map).astype(np.int64)


def remove(index: Any, fids: np.ndarray) -> None:
    if len(fids):
        faiss = faiss_module()
        index.remove_ids(faiss.IDSelectorBatch(np.ascontiguousarray(fids, dtype=np.int64)))


def from_rows(batch: list[tuple[int, bytes]]) -> tuple[np.ndarray, np.ndarray]:
    """Ids and normalised vectors of stored ``(fid, float32 blob)`` rows."""
    if not batch:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return (np.array([b[0] for b in batch], dtype=np.int64),
            normalized(np.stack([np.frombuffer(b[1], dtype="<f4") for b in batch])))


def top_n(batches: Iterable[tuple[np.ndarray, np.ndarray]], query: np.ndarray, n: int) -> list[tuple[int, float]]:
    """The ``n`` best ``(fid, cosine)`` over ``(ids, normalised vectors)`` batches for a normalised query."""
    best: list[tuple[int, float]] = []
    for ids, vecs in batches:
        if not len(ids):
            continue
        scores = vecs @ query
        top = np.argsort(-scores, kind="stable")[:n]
        best = sorted(best + [(int(ids[i]), float(scores[i])) for i in top], key=lambda t: -t[1])[:n]
    return best


# ---------------------------------------------------------------------------- files
def parse_target(target: str) -> pathlib.Path:
    """The folder of ``faiss:./index_dir`` (also ``faiss://./dir``, ``faiss:///abs/dir``)."""
    if not target.lower().startswith("faiss:"):
        raise InputError(f"a Faiss target looks like faiss:./index_dir, got {target!r}")
    path = target[len("faiss:"):]
    if path.startswith("//"):
        path = path[2:]
    if not path:
        raise InputError(f"{target!r} names no folder: use faiss:./index_dir")
    return pathlib.Path(path).expanduser()


def index_path(folder: pathlib.Path, collection: str, gen: int) -> pathlib.Path:
    return folder / f"{collection}.{gen}.faiss"


def write_index(index: Any, folder: pathlib.Path, collection: str, gen: int) -> pathlib.Path:
    """Write ``index`` as the file of generation ``gen``: to a temporary file, fsynced, then
    renamed into place (a crash leaves either no file of that generation or a whole one)."""
    faiss = faiss_module()
    final = index_path(folder, collection, gen)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    if isinstance(index, BinaryIndex):
        faiss.write_index_binary(index.index, str(tmp))
    else:
        faiss.write_index(index, str(tmp))
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    dirfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)
    return final


def read_index(folder: pathlib.Path, collection: str, gen: int, *, binary: bool = False) -> Any:
    """The index file of generation ``gen`` (FileNotFoundError when it is gone)."""
    path = index_path(folder, collection, gen)
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, "index file is gone", str(path))
    if binary:
        return BinaryIndex(faiss_module().read_index_binary(str(path)))
    return faiss_module().read_index(str(path))


def remove_other_files(folder: pathlib.Path, collection: str, keep: int | None) -> None:
    """Delete the collection's index files other than generation ``keep`` (and temporary leftovers)."""
    pattern = re.compile(re.escape(collection) + r"\.(\d+)\.faiss(\.tmp-\d+)?$")
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        m = pattern.match(path.name)
        if m and (m.group(2) or keep is None or int(m.group(1)) != keep):
            try:
                path.unlink()
            except OSError:  # pragma: no cover - another process removed it first
                pass


# ---------------------------------------------------------------------------- one writer at a time
class _Lock:
    """A collection's lock in this process: a thread lock shared by its handles, and the
    ``fcntl.flock`` on ``<collection>.lock`` held while any of them writes."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.mutex = threading.RLock()
        self.fd: int | None = None
        self.writers = 0
        self.handles = 0


_LOCKS: dict[tuple[str, str], _Lock] = {}
_LOCKS_GUARD = threading.Lock()


def shared_lock(folder: pathlib.Path, collection: str) -> _Lock:
    key = (os.path.realpath(folder), collection)
    with _LOCKS_GUARD:
        lock = _LOCKS.get(key)
        if lock is None:
            lock = _LOCKS[key] = _Lock(folder / f"{collection}.lock")
        lock.handles += 1
        return lock


def release_handle(folder: pathlib.Path, collection: str, lock: _Lock) -> None:
    with _LOCKS_GUARD:
        lock.handles -= 1
        if lock.handles <= 0 and lock.fd is None:
            _LOCKS.pop((os.path.realpath(folder), collection), None)


def acquire_writer(lock: _Lock, target: str, collection: str) -> None:
    """Take the collection's writer lock for this process (shared by its handles).

    Raises:
        UnavailableError: another process writes this collection (one line naming its pid).
    """
    with lock.mutex:
        if lock.fd is None:
            lock.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                try:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                finally:
                    os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise UnavailableError(
                        f"{target}: collection {collection!r} is being written by another process (pid {holder}); "
                        "one writer at a time: close that store (or wait for it to finish) and try again") from None
                raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            lock.fd = fd
        lock.writers += 1


def release_writer(lock: _Lock) -> None:
    with lock.mutex:
        lock.writers -= 1
        if lock.writers <= 0 and lock.fd is not None:
            fd, lock.fd, lock.writers = lock.fd, None, 0
            try:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

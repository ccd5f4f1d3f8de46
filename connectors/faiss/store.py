"""The Faiss store: a Faiss index file per collection and the rows' fields in SQLite, side by
side in one folder, on the store skeleton (:class:`connectors.base.BaseStore`).

Consistency: SQLite is the record. Every write is one SQLite transaction that stores the
rows (with their raw float32 vectors) and bumps the collection's generation; the Faiss
index in memory is brought up to that generation after the commit. The index file is a
snapshot named by the generation it holds (``<collection>.<gen>.faiss``, written to a
temporary file, fsynced and renamed); the collection record names the newest snapshot only
after the file is complete. Whoever opens the collection loads that snapshot and replays the
rows written (and the ids removed) since, so a crash at any point leaves an index that
agrees with its fields: the worst case is a replay. Snapshots are written when a writing
store closes, by :meth:`FaissStore.save`, and when the rows written since the last one
reach half the collection (at least 10,000).

(Over 600 lines: the generation bookkeeping, sync, snapshot and replay, and the search paths
that depend on which index the generation holds, read best in one place.)
"""
from __future__ import annotations

import contextlib
import json
import logging
import pathlib
import sqlite3
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from embedder.contracts import EmbedderLike
from embedder.errors import ConnectorError, InputError, NotFoundError, SchemaMismatchError, UnavailableError

from ..base import BaseStore, Schema, StoredRow, check_field_types
from ..core import Hit, Row
from ..filters import Node
from ..quantization import PRECISIONS, RESCORE_OVERSAMPLING, check_precision, unsupported
from . import index as ix
from . import sql

log = logging.getLogger(__name__)

DB_FILE = "store.sqlite"
MIN_SNAPSHOT_ROWS = 10_000
_META = ("uid", "dim", "fields", "fingerprint", "spec", "gen", "index_gen", "next_fid", "pending")


@dataclass
class _State:
    """This handle's index, at a generation of the collection ``uid``."""

    uid: str
    gen: int
    index: Any
    tomb: set[int] = field(default_factory=set)  # HNSW: ids in the graph that left the collection
    pending: int = 0  # rows changed since the newest snapshot
    damaged: bool = False  # the snapshot could not be read: this index was rebuilt, the next save writes it


class FaissStore(BaseStore):
    """A collection in a Faiss store folder (see :mod:`connectors.faiss`).

    Build one with :func:`open_store` or ``connectors.connect("faiss:./index_dir", ...)``.

    Search options (``store.search(..., **options)``): ``ef_search`` (HNSW), ``nprobe``
    (IVF-PQ), ``rescore`` (IVF-PQ: candidates re-scored exactly per hit asked), ``exact=True``
    (brute force over the stored vectors), ``params`` (the values of an SQL filter's ``?``
    or ``:name`` placeholders). The native filter is an SQL condition on the fields
    (``id``, ``text``, ``media``, ``modality``, ``metadata`` as JSON text, each declared
    field by its name), e.g. ``"color = 'red' AND json_extract(metadata, '$.year') > 2020"``:
    trusted input, run read-only.
    """

    backend = "faiss"
    max_bytes = 64 * 1024 * 1024
    native_filter = "an SQL condition string on the fields (trusted input; values in params=)"
    text_filter = True
    quantizations = PRECISIONS  # SQfp16, SQ8 (uniform), binary + re-scoring: flat and hnsw

    def __init__(self, folder: str | pathlib.Path, *, collection: str, target: str | None = None,
                 embedder: EmbedderLike | None = None, dim: int | None = None, allow_mismatch: bool = False,
                 index: str | None = None, hnsw_m: int = 32, ef_construction: int = 80, nlist: int | None = None,
                 pq_m: int | None = None, nbits: int = 8, train_rows: int | None = None, ef_search: int = 64,
                 nprobe: int | None = None, rescore: int = 8, exact_below: int = 2048,
                 quantization: str | None = None) -> None:
        sql.check_name(collection)
        self._asked_kind = index
        self._spec = ix.IndexSpec(index or "flat", hnsw_m, ef_construction, nlist, pq_m, nbits, train_rows,
                                  check_precision(quantization))
        for name, value in (("ef_search", ef_search), ("rescore", rescore), ("exact_below", exact_below),
                            ("nprobe", nprobe)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise InputError(f"{name} must be a non-negative integer, got {value!r}")
        super().__init__(collection=collection, embedder=embedder, dim=dim, allow_mismatch=allow_mismatch,
                         quantization=quantization)
        self.folder = pathlib.Path(folder).expanduser().resolve()
        self.target = target or f"faiss:{self.folder}"
        self.ef_search, self.nprobe, self.rescore, self.exact_below = ef_search, nprobe, rescore, exact_below
        self._lock = ix.shared_lock(self.folder, collection)
        self._writer = False
        self._conn: sqlite3.Connection | None = None
        self._state: _State | None = None
        try:
            self.open_existing()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ properties
    @property
    def client(self) -> Any:
        """The Faiss index (``faiss.Index``; binary: a :class:`~connectors.faiss.index.BinaryIndex`, whose
        ``index`` is the ``faiss.IndexBinaryIDMap2``) at the collection's last committed state."""
        with self._txn():
            return self._st.index

    @property
    def _c(self) -> sqlite3.Connection:
        """The open SQLite connection (inside a transaction)."""
        assert self._conn is not None
        return self._conn

    @property
    def _st(self) -> _State:
        """This handle's index state (inside a transaction, after the sync)."""
        assert self._state is not None
        return self._state

    @property
    def connection(self) -> sqlite3.Connection:
        """The SQLite connection holding the fields (``store.sqlite`` in the folder)."""
        return self._db(create=True)

    @property
    def index_kind(self) -> str:
        """``flat``, ``hnsw`` or ``ivfpq`` (as recorded with the collection)."""
        return self._spec.kind

    @property
    def trained(self) -> bool:
        """Whether the search index is the one asked for (False: an IVF-PQ collection below
        ``train_rows`` rows, searched exactly until then)."""
        with self._txn():
            return self._spec.kind != "ivfpq" or ix.is_trained_ivf(self._st.index)

    def __repr__(self) -> str:
        return f"FaissStore({self.target!r}, collection={self.collection!r}, index={self._spec.kind!r})"

    # ------------------------------------------------------------------ SQLite
    def _db(self, *, create: bool = False) -> sqlite3.Connection:
        if self._conn is None:
            path = self.folder / DB_FILE
            if not create and not path.is_file():
                raise NotFoundError(f"collection {self.collection!r} does not exist in {self.target}")
            self.folder.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute(sql.META_DDL)
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if "no such table" in text:
                raise NotFoundError(f"collection {self.collection!r} does not exist (it was dropped)") from exc
            if "locked" in text or "busy" in text:
                raise UnavailableError(f"{what} {self.target}: the SQLite file stayed locked: {text}") from exc
            raise ConnectorError(f"{what} {self.target}: {text}") from exc
        except sqlite3.Error as exc:
            raise ConnectorError(f"{what} {self.target}: {type(exc).__name__}: {exc}") from exc

    def _meta(self, conn: sqlite3.Connection) -> dict | None:
        rec = conn.execute(f"SELECT {', '.join(_META)} FROM qvl_collections WHERE name = ?",
                           (self.collection,)).fetchone()
        return None if rec is None else dict(zip(_META, rec))

    @contextlib.contextmanager
    def _txn(self, *, write: bool = False, sync: bool = True) -> Iterator[dict]:
        """A transaction on the collection (``write``: the SQLite write lock too) with this handle's
        index brought to its generation; yields the collection record."""
        with self._lock.mutex, self._errors("reading" if not write else "writing"):
            conn = self._db()
            meta = self._begin(conn, write=write, sync=sync)
            try:
                yield meta
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _begin(self, conn: sqlite3.Connection, *, write: bool, sync: bool) -> dict:
        for attempt in range(5):
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                meta = self._meta(conn)
                if meta is None:
                    self._state, self._known = None, False
                    raise NotFoundError(f"collection {self.collection!r} does not exist; call store.create() first")
                if self._state is not None and self._state.uid != meta["uid"]:  # dropped and made again
                    self._state = None
                    self._fields = sql.fields_from_json(meta["fields"], self.collection)
                    self._spec = ix.IndexSpec(**json.loads(meta["spec"]))
                if sync:
                    self._sync(conn, meta, last=attempt == 4)
                return meta
            except FileNotFoundError:  # a writer replaced the snapshot meanwhile: read the record again
                conn.execute("ROLLBACK")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ the index, kept at the record's generation
    def _sync(self, conn: sqlite3.Connection, meta: dict, *, last: bool = True) -> None:
        """Bring this handle's index to the record's generation: load the named snapshot (when
        this handle is behind it), then replay the rows written and removed since. A snapshot
        that cannot be read (``last`` try) is rebuilt from the stored vectors instead."""
        st = self._state
        if st is None or st.gen > meta["gen"] or (meta["index_gen"] and st.gen < meta["index_gen"]):
            st, fresh = _State(meta["uid"], 0, ix.empty_index(self._spec, meta["dim"])), True
            if meta["index_gen"]:
                try:
                    st.index = ix.read_index(self.folder, self.collection, meta["index_gen"],
                                             binary=self._spec.quantization == "binary")
                    st.gen = meta["index_gen"]
                except (FileNotFoundError, RuntimeError) as exc:  # gone (replaced: read the record again) or bad
                    if not last:
                        raise FileNotFoundError(str(exc)) from exc
                    st.damaged = True
                    log.warning("faiss: the index file of %r (generation %d) cannot be read (%s); rebuilding it "
                                "from the stored vectors", self.collection, meta["index_gen"], exc)
        else:
            fresh = False
        if st.gen < meta["gen"]:
            rows, dead = sql.rows_table(self.collection), sql.dead_table(self.collection)
            gone = np.array([f for (f,) in conn.execute(f"SELECT _fid FROM {dead} WHERE _gen > ?", (st.gen,))],
                            dtype=np.int64)
            if self._spec.kind != "hnsw":
                ix.remove(st.index, gone)
            cur = conn.execute(f"SELECT _fid, _vec FROM {rows} WHERE _gen > ?", (st.gen,))
            while batch := cur.fetchmany(8192):
                self._add(st.index, batch)
            st.gen = meta["gen"]
            fresh = True
        if fresh and self._spec.kind == "hnsw":
            live = {f for (f,) in conn.execute(f"SELECT _fid FROM {sql.rows_table(self.collection)}")}
            st.tomb = set(ix.index_ids(st.index).tolist()) - live
        st.pending = meta["pending"]
        self._state = st

    @staticmethod
    def _add(index: Any, batch: list[tuple[int, bytes]]) -> None:
        fids, vecs = ix.from_rows(batch)
        ix.add(index, vecs, fids)

    def _become_writer(self) -> None:
        if not self._writer:
            ix.acquire_writer(self._lock, self.target, self.collection)
            self._writer = True

    def _maintain(self) -> None:
        """After a write: train IVF-PQ once there are enough rows, rebuild HNSW with many
        tombstones, write a snapshot when many rows changed since the last."""
        st = self._state
        if st is None:
            return
        live = st.index.ntotal - len(st.tomb)
        if self._spec.kind == "ivfpq" and not ix.is_trained_ivf(st.index) and live >= self._spec.min_train:
            self.rebuild()
        elif self._spec.kind == "hnsw" and len(st.tomb) > 64 and 4 * len(st.tomb) > st.index.ntotal:
            self.rebuild()
        elif st.pending >= max(MIN_SNAPSHOT_ROWS, live // 2):
            self.save()

    def save(self) -> None:
        """Write the index file now (a snapshot of the committed state), so that the next
        open loads it instead of replaying the rows written since the last snapshot."""
        self._check_open()
        self._become_writer()
        with self._lock.mutex:
            self._snapshot(force=False)

    def _snapshot(self, *, force: bool) -> None:
        with self._txn() as meta:
            gen, uid = meta["gen"], meta["uid"]
            if meta["index_gen"] == gen and not force and not self._st.damaged:
                return
            index = self._st.index
        # This process holds the writer lock and the collection's mutex: the generation cannot move.
        ix.write_index(index, self.folder, self.collection, gen)
        with self._txn(write=True, sync=False) as meta:
            if meta["uid"] != uid or meta["gen"] != gen:  # pragma: no cover - guarded by the writer lock
                raise ConnectorError(f"collection {self.collection!r} changed while its index was being saved")
            self._c.execute("UPDATE qvl_collections SET index_gen = ?, pending = 0 WHERE name = ?",
                               (gen, self.collection))
            self._c.execute(f"DELETE FROM {sql.dead_table(self.collection)} WHERE _gen <= ?", (gen,))
        self._st.pending, self._st.damaged = 0, False
        ix.remove_other_files(self.folder, self.collection, keep=gen)

    def rebuild(self) -> None:
        """Build the index again from the stored vectors and save it: drops HNSW tombstones,
        (re)trains IVF-PQ on the rows stored now."""
        self._check_open()
        self._become_writer()
        with self._lock.mutex:
            with self._txn() as meta:
                rows = sql.rows_table(self.collection)
                count = self._c.execute(f"SELECT count(*) FROM {rows}").fetchone()[0]
                if self._spec.kind == "ivfpq" and count >= self._spec.min_train:
                    sample = self._c.execute(
                        f"SELECT _fid, _vec FROM {rows} ORDER BY random() LIMIT ?", (ix.MAX_TRAIN,)).fetchall()
                    vecs = np.stack([np.frombuffer(v, dtype="<f4") for _, v in sample])
                    index = ix.train_ivfpq(self._spec, meta["dim"], ix.normalized(vecs))
                    log.info("faiss: trained IVF-PQ for %r on %d rows", self.collection, len(sample))
                else:
                    index = ix.empty_index(self._spec, meta["dim"])
                cur = self._c.execute(f"SELECT _fid, _vec FROM {rows}")
                while batch := cur.fetchmany(8192):
                    self._add(index, batch)
                self._state = _State(meta["uid"], meta["gen"], index, set(), meta["pending"])
            self._snapshot(force=True)

    # ------------------------------------------------------------------ schema primitives
    def _exists(self) -> bool:
        if self._conn is None and not (self.folder / DB_FILE).is_file():
            return False
        with self._lock.mutex, self._errors("reading"):
            return self._meta(self._db()) is not None

    def _check_fields(self, fields: Mapping[str, Any] | None) -> dict[str, type]:
        return check_field_types(fields, reserved=sql.RESERVED, valid_name=sql.FIELD_RE.match)

    def _describe(self) -> Schema:
        with self._lock.mutex, self._errors("reading"):
            meta = self._meta(self._db())
        if meta is None:
            raise NotFoundError(f"collection {self.collection!r} does not exist; call store.create() first")
        try:
            spec = ix.IndexSpec(**json.loads(meta["spec"]))
        except (TypeError, ValueError, InputError) as exc:
            raise SchemaMismatchError(f"collection {self.collection!r}: its index record {meta['spec']!r} was not "
                                      "written by this connector") from exc
        if self._asked_kind is not None and spec.kind != self._asked_kind:
            raise SchemaMismatchError(f"collection {self.collection!r} has a {spec.kind} index, not "
                                      f"{self._asked_kind}; open it with index={spec.kind!r} (or index=None) or use another collection")
        self._spec = spec
        fingerprint = json.loads(meta["fingerprint"]) if meta["fingerprint"] else None
        return Schema(int(meta["dim"]), sql.fields_from_json(meta["fields"], self.collection), fingerprint,
                      spec.quantization)

    def _check_quantization(self, precision: str, dim: int) -> None:
        if precision != "float32" and self._spec.kind == "ivfpq":
            raise unsupported("faiss", precision, ("float32",), "index='ivfpq' compresses with product "
                              "quantization already (flat and hnsw take every option)")
        if precision == "binary" and dim % 8:
            raise unsupported("faiss", precision, ("float32", "float16", "int8"),
                              f"Faiss binary indexes need a dim divisible by 8, not {dim}")

    def _create(self, schema: Schema) -> None:
        self._spec = replace(self._spec, quantization=schema.quantization)
        self._become_writer()
        uid = uuid.uuid4().hex
        with self._lock.mutex, self._errors("creating"):
            conn = self._db(create=True)
            conn.execute("BEGIN IMMEDIATE")
            try:
                if self._meta(conn) is not None:
                    raise ConnectorError(f"collection {self.collection!r} already exists; pass exist_ok=True to "
                                         "reuse it (its schema is checked)")
                for stmt in sql.drop_ddl(self.collection) + sql.create_ddl(self.collection, schema.fields):
                    conn.execute(stmt)
                conn.execute("INSERT INTO qvl_collections VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 1, 0)",
                             (self.collection, uid, sql.FORMAT, schema.dim, sql.fields_json(schema.fields),
                              json.dumps(schema.fingerprint) if schema.fingerprint else None,
                              json.dumps(self._spec.as_dict())))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            ix.remove_other_files(self.folder, self.collection, keep=None)
            self._state = _State(uid, 0, ix.empty_index(self._spec, schema.dim))

    def _drop(self) -> None:
        if not self._exists():
            return
        self._become_writer()
        with self._lock.mutex, self._errors("dropping"):
            conn = self._db()
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in sql.drop_ddl(self.collection):
                    conn.execute(stmt)
                conn.execute("DELETE FROM qvl_collections WHERE name = ?", (self.collection,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            self._state = None
            ix.remove_other_files(self.folder, self.collection, keep=None)

    def _close(self) -> None:
        try:
            if self._writer and self._state is not None and self._exists():
                with self._lock.mutex:
                    self._snapshot(force=False)
        finally:
            if self._writer:
                self._writer = False
                ix.release_writer(self._lock)
            ix.release_handle(self.folder, self.collection, self._lock)
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # ------------------------------------------------------------------ writing
    def _before_upsert(self) -> None:
        self._become_writer()

    def _write(self, rows: list[Row], vectors: np.ndarray) -> list[tuple[str, str]]:
        self._become_writer()
        last = {row.id: i for i, row in enumerate(rows)}
        failed: list[tuple[str, str]] = []
        records: list[list[Any]] = []
        keep: list[int] = []
        for i in last.values():
            values, reason = sql.encode_row(rows[i], vectors[i], self._fields)
            if values is None:
                failed.append((rows[i].id, reason or "cannot be stored"))
            else:
                records.append(values)
                keep.append(i)
        if keep:
            self._change([rows[i].id for i in keep], records, vectors[keep])
        return failed

    def _change(self, ids: list[str], records: list[list[Any]], vectors: np.ndarray | None) -> None:
        """Replace (``records``) or delete (None) rows by id in one transaction, then the index."""
        rows_t, dead_t = sql.rows_table(self.collection), sql.dead_table(self.collection)
        with self._lock.mutex:
            with self._txn(write=True) as meta:
                conn = self._c
                gen = meta["gen"] + 1
                old = [f for (f,) in sql.select_in(conn, f"SELECT _fid FROM {rows_t} WHERE {{cond}}", "id", ids)]
                if not old and not records:
                    return
                conn.executemany(f"INSERT INTO {dead_t} (_fid, _gen) VALUES (?, ?)", [(f, gen) for f in old])
                for part in sql.chunks(old):
                    conn.execute(f"DELETE FROM {rows_t} WHERE _fid IN ({', '.join('?' * len(part))})", part)
                fids = list(range(meta["next_fid"], meta["next_fid"] + len(records)))
                if records:
                    conn.executemany(sql.insert_sql(self.collection, self._fields),
                                     ([f, gen, *rec] for f, rec in zip(fids, records)))
                changed = len(old) + len(records)
                conn.execute("UPDATE qvl_collections SET gen = ?, next_fid = ?, pending = pending + ? WHERE name = ?",
                             (gen, meta["next_fid"] + len(records), changed, self.collection))
            st = self._st
            try:  # committed: bring the index along (if that fails, the next call reloads it)
                if self._spec.kind == "hnsw":
                    st.tomb.update(old)
                else:
                    ix.remove(st.index, np.array(old, dtype=np.int64))
                if records and vectors is not None:
                    ix.add(st.index, ix.normalized(vectors), np.array(fids, dtype=np.int64))
                st.gen, st.pending = gen, st.pending + changed
            except Exception:  # noqa: BLE001 - the rows are stored; the index is rebuilt from them
                log.warning("faiss: updating the index of %r failed; it is reloaded", self.collection, exc_info=True)
                self._state = None
                return
            self._maintain()

    def _delete(self, ids: list[str]) -> None:
        self._become_writer()
        self._change(ids, [], None)

    # ------------------------------------------------------------------ filters
    def _compile(self, node: Node) -> sql.Where | None:
        compiled = sql.compile_where(node, self._fields)
        return None if compiled is None else sql.Where(*compiled)

    def _native_filter(self, flt: Any) -> sql.Where:
        if not isinstance(flt, str):
            return super()._native_filter(flt)
        if not flt.strip():
            raise InputError("the SQL filter is empty")
        return sql.Where(flt, None, native=True)

    # ------------------------------------------------------------------ search
    def _nearest(self, vector: np.ndarray, n: int, where: Any, *, content: bool, ef_search: int | None = None,
                 nprobe: int | None = None, rescore: int | None = None, exact: bool = False,
                 params: Any = None, **unknown: Any) -> list[Hit]:
        if unknown:
            raise InputError(f"unknown search option(s) {sorted(unknown)}: the faiss store takes ef_search, nprobe, "
                             "rescore, exact and params")
        query = ix.normalized(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        with self._txn():
            st = self._st
            fids = sql.matching(self._c, self.collection, self._fields, where, params) if where is not None else None
            if fids is not None and not len(fids):
                return []
            live = st.index.ntotal - len(st.tomb)
            eligible = len(fids) if fids is not None else live
            approximate = self._spec.kind != "flat" and not (self._spec.kind == "ivfpq"
                                                             and not ix.is_trained_ivf(st.index))
            if exact or (approximate and fids is not None and len(fids) <= self.exact_below):
                scored = self._exact(query[0], fids, n)
            else:
                scored = self._indexed(query, n, fids, eligible, ef_search, nprobe, rescore)
                if len(scored) < min(n, eligible):  # an approximate index found too few: exact
                    scored = self._exact(query[0], fids, n)
            return self._hits(scored)

    def _indexed(self, query: np.ndarray, n: int, fids: np.ndarray | None, eligible: int, ef_search: int | None,
                 nprobe: int | None, rescore: int | None) -> list[tuple[int, float]]:
        faiss = ix.faiss_module()
        st = self._st
        index = st.index
        keep: list[Any] = []  # the selectors must outlive the search
        sel = None
        if fids is not None:
            sel = faiss.IDSelectorBatch(np.sort(fids))
        elif st.tomb:
            keep.append(faiss.IDSelectorBatch(np.fromiter(st.tomb, dtype=np.int64)))
            sel = faiss.IDSelectorNot(keep[-1])
        sparse = max(1.0, (index.ntotal / eligible) if eligible else 1.0)  # search wider under a narrow filter
        k = n
        if self._spec.kind == "hnsw":
            ef = max(ef_search or self.ef_search, n)
            p = faiss.SearchParametersHNSW(sel=sel, efSearch=int(min(max(ef, ef * sparse), 4096)))
        elif ix.is_trained_ivf(index):
            probes = nprobe or self.nprobe or max(16, index.nlist // 8)
            p = faiss.SearchParametersIVF(sel=sel, nprobe=int(min(index.nlist, probes * sparse)))
            k = n * max(1, rescore if rescore is not None else self.rescore)
        else:
            k = n * (RESCORE_OVERSAMPLING if self._spec.quantization == "binary" else 1)
            p = faiss.SearchParameters(sel=sel) if sel is not None else None
        k = int(min(k, max(1, index.ntotal)))
        scores, labels = index.search(query, k, params=p)
        found = [(int(f), float(s)) for f, s in zip(labels[0], scores[0]) if f >= 0]
        if (ix.is_trained_ivf(index) or self._spec.quantization == "binary") and found:  # exact from the floats
            return self._exact(query[0], np.array([f for f, _ in found], dtype=np.int64), n)
        return found[:n]

    def _exact(self, query: np.ndarray, fids: np.ndarray | None, n: int) -> list[tuple[int, float]]:
        """Brute force over the stored vectors (of ``fids``, or all); a flat or HNSW index
        gives back the normalised vectors it holds faster than SQLite."""
        rows_t, index, step = sql.rows_table(self.collection), self._st.index, 8192
        if fids is not None and not ix.is_trained_ivf(index) and self._spec.quantization == "float32":
            return ix.top_n(((part, index.reconstruct_batch(part)) for part in np.array_split(
                fids, max(1, len(fids) // step))), query, n)
        if fids is None:
            cur = self._c.execute(f"SELECT _fid, _vec FROM {rows_t}")
            return ix.top_n((ix.from_rows(b) for b in iter(lambda: cur.fetchmany(step), [])), query, n)
        return ix.top_n((ix.from_rows(sql.select_in(self._c, f"SELECT _fid, _vec FROM {rows_t} WHERE {{cond}}",
                                                    "_fid", part)) for part in sql.chunks(fids.tolist(), step)),
                        query, n)

    def _hits(self, scored: list[tuple[int, float]]) -> list[Hit]:
        if not scored:
            return []
        rows_t = sql.rows_table(self.collection)
        recs = sql.select_in(self._c, f"SELECT _fid, {sql.field_columns(self._fields)} FROM {rows_t} "
                             "WHERE {cond}", "_fid", [f for f, _ in scored])
        by_fid = {r[0]: r for r in recs}
        return [Hit(id=by_fid[f][1], score=s, fields=sql.decode_fields(by_fid[f], self._fields, start=2))
                for f, s in scored if f in by_fid]

    # ------------------------------------------------------------------ reading
    def _existing(self, ids: list[str]) -> Iterable[str]:
        with self._txn(sync=False):
            return [r[0] for r in sql.select_in(self._c, f"SELECT id FROM {sql.rows_table(self.collection)} "
                                                "WHERE {cond}", "id", ids)]

    def _count(self) -> int:
        with self._txn(sync=False):
            return int(self._c.execute(
                f"SELECT count(*) FROM {sql.rows_table(self.collection)}").fetchone()[0])

    def _page(self, cursor: str | None, limit: int) -> tuple[list[StoredRow], str | None]:
        with self._txn(sync=False):
            recs = self._c.execute(
                f"SELECT _vec, {sql.field_columns(self._fields)} FROM {sql.rows_table(self.collection)} "
                "WHERE id > ? ORDER BY id LIMIT ?", (cursor if cursor is not None else "", limit + 1)).fetchall()
        more = len(recs) > limit
        rows = [StoredRow(r[1], np.frombuffer(r[0], dtype="<f4").copy(), sql.decode_fields(r, self._fields, start=2))
                for r in recs[:limit]]
        return rows, (rows[-1].id if more and rows else None)


def open_store(target: str, *, collection: str, embedder: EmbedderLike | None = None, dim: int | None = None,
               allow_mismatch: bool = False, index: str | None = None, hnsw_m: int = 32, ef_construction: int = 80,
               nlist: int | None = None, pq_m: int | None = None, nbits: int = 8, train_rows: int | None = None,
               ef_search: int = 64, nprobe: int | None = None, rescore: int = 8,
               exact_below: int = 2048, quantization: str | None = None) -> FaissStore:
    """Open a collection of a Faiss store folder (it is created by :meth:`FaissStore.create`).

    Args:
        target: ``faiss:./index_dir`` (the folder is made at the first create).
        collection: the collection: ``<collection>.<gen>.faiss`` and its tables in ``store.sqlite``.
        embedder: an ``Embedder`` or ``RemoteEmbedder`` (None: precomputed vectors only).
        dim: the vector dim (default: the existing collection's, else the embedder's full dim).
        allow_mismatch: open a collection whose vectors were made another way than ``embedder``
            makes them (see :class:`connectors.base.BaseStore`).
        index: ``flat`` (exact, the default at create), ``hnsw`` or ``ivfpq``; None: as recorded.
        hnsw_m, ef_construction: HNSW build settings (recorded at create).
        nlist, pq_m, nbits, train_rows: IVF-PQ settings (recorded at create; see
            :class:`connectors.faiss.index.IndexSpec`: IVF-PQ is trained once ``train_rows`` rows are stored).
        ef_search, nprobe, rescore: search defaults (HNSW width; IVF lists probed, default
            ``max(16, nlist / 8)``; IVF-PQ candidates per hit re-scored exactly).
        exact_below: a filter selecting at most this many rows is searched exactly on an
            HNSW or IVF-PQ index (a graph or a few lists would miss most of them).
        quantization: ``float32`` (default: the collection's), ``float16`` (SQfp16), ``int8``
            (SQ8) or ``binary`` (sign bits, 4x the candidates re-scored exactly), for ``flat``
            and ``hnsw`` (see :mod:`connectors.faiss.index`); refused for ``ivfpq``.
    """
    return FaissStore(ix.parse_target(target), collection=collection, target=target, embedder=embedder, dim=dim,
                      allow_mismatch=allow_mismatch, index=index, hnsw_m=hnsw_m, ef_construction=ef_construction,
                      nlist=nlist, pq_m=pq_m, nbits=nbits, train_rows=train_rows, ef_search=ef_search,
                      nprobe=nprobe, rescore=rescore, exact_below=exact_below, quantization=quantization)

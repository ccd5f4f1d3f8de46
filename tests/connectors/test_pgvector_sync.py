"""Triggers, queue and workers that keep an existing table's embeddings in sync (real PostgreSQL)."""
from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from embedder.errors import SchemaMismatchError
from tests.connectors.postgres_server import pg_dsn, pg_server  # noqa: F401 - fixtures

pytest.importorskip("psycopg")


class GatedEmbedder:
    """Wraps an embedder; ``embed_documents`` signals ``entered`` and waits for ``release``."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed_documents(self, items, **kwargs):
        self.entered.set()
        assert self.release.wait(60), "test never released the gate"
        return self.inner.embed_documents(items, **kwargs)

    def embed_queries(self, items, **kwargs):
        return self.inner.embed_queries(items, **kwargs)


@pytest.fixture()
def conn(pg_dsn):
    import psycopg

    from pgvector.psycopg import register_vector

    with psycopg.connect(pg_dsn, autocommit=True) as c:
        register_vector(c)
        yield c


@pytest.fixture()
def articles(conn, request):
    """An existing table ``articles_<test>`` with 10 rows (id, title, body, views)."""
    name = "art_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]  # room for the suffixes

    def drop() -> None:
        for suffix in ("_embeddings", "_qvl_queue", "_qvl_failed", ""):
            conn.execute(f"DROP TABLE IF EXISTS {name}{suffix} CASCADE")
        conn.execute(f"DROP FUNCTION IF EXISTS {name}_qvl_enqueue() CASCADE")

    drop()
    conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, title text, photo text, views integer DEFAULT 0)")
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name} (id, title) VALUES (%s, %s)",
                        [(i, f"article {i} about {['cats', 'cars', 'cakes'][i % 3]}") for i in range(10)])
    yield name
    drop()


def _attach(dsn, table, embedder, mode="column"):
    from connectors.pgvector import attach

    return attach(dsn, table=table, text_column="title", image_column="photo", embedder=embedder, dim=64,
                  mode=mode, backfill=False)


def _vector(conn, table, key, mode):
    src = f"{table}_embeddings" if mode == "side_table" else table
    row = conn.execute(f"SELECT embedding FROM {src} WHERE id = %s", (key,)).fetchone()
    return None if row is None or row[0] is None else np.asarray(row[0].to_numpy())


@pytest.mark.parametrize("mode", ["column", "side_table"])
def test_triggers_queue_changes_and_worker_applies_them(pg_dsn, conn, articles, embedder, mode):
    from connectors.pgvector.sync import Worker, install_sync, sync_status

    with _attach(pg_dsn, articles, embedder, mode) as store:
        assert install_sync(store) == 10
        assert install_sync(store) == 0  # idempotent: nothing queued twice
        worker = Worker(store, batch_size=4)
        report = worker.run(once=True)
        assert sorted(report.embedded, key=int) == [str(i) for i in range(10)] and report.batches == 3
        st = sync_status(store)
        assert (st.rows, st.embedded, st.queued, st.failed, st.installed) == (10, 10, 0, 0, True)
        expected = embedder.embed_documents([{"text": "article 4 about cars"}], dim=64)[0]
        assert np.allclose(_vector(conn, articles, 4, mode), expected, atol=1e-5)

        conn.execute(f"INSERT INTO {articles} (id, title) VALUES (42, 'a new article on trains')")
        conn.execute(f"UPDATE {articles} SET title = 'now about boats' WHERE id = 3")   # watched: re-queued
        conn.execute(f"UPDATE {articles} SET views = views + 1")                       # not watched
        conn.execute(f"UPDATE {articles} SET title = title WHERE id = 5")              # unchanged value
        assert sync_status(store).queued == 2
        before = _vector(conn, articles, 3, mode)
        report = worker.run(once=True)
        assert sorted(report.embedded) == ["3", "42"]
        after = _vector(conn, articles, 3, mode)
        assert not np.allclose(before, after)
        assert np.allclose(after, embedder.embed_documents(["now about boats"], dim=64)[0], atol=1e-5)
        assert store.search(after, k=1)[0].id == "3"

        conn.execute(f"DELETE FROM {articles} WHERE id = 42")       # the embedding goes with the row
        assert _vector(conn, articles, 42, mode) is None
        conn.execute(f"UPDATE {articles} SET title = NULL WHERE id = 7")  # nothing left to embed: cleared
        report = worker.run(once=True)
        assert report.cleared == ["7"] and _vector(conn, articles, 7, mode) is None
        st = sync_status(store)
        assert (st.rows, st.embedded, st.queued) == (10, 9, 0)


def test_poison_row_goes_to_failed_table(pg_dsn, conn, articles, embedder, tmp_path):
    from connectors.pgvector.sync import Worker, failed_rows, install_sync, retry_failed, sync_status

    conn.execute(f"UPDATE {articles} SET photo = %s WHERE id = 2", (str(tmp_path / "missing.png"),))
    with _attach(pg_dsn, articles, embedder) as store:
        install_sync(store)
        report = Worker(store, batch_size=5, max_attempts=3, retry_delay=0).run(once=True)
        assert [k for k, _ in report.failed] == ["2"] and [k for k, _ in report.retried] == ["2", "2"]
        assert len(report.embedded) == 9
        (bad,) = failed_rows(store)
        assert bad.key == "2" and bad.attempts == 3 and "missing.png" in bad.reason
        st = sync_status(store)
        assert (st.embedded, st.queued, st.failed) == (9, 0, 1)
        assert Worker(store, retry_delay=0).run(once=True).processed == 0  # not retried forever
        assert retry_failed(store) == 1 and sync_status(store).failed == 0
        Worker(store, max_attempts=1).run(once=True)
        assert sync_status(store).failed == 1
        conn.execute(f"UPDATE {articles} SET photo = NULL WHERE id = 2")  # fixing the row gives it a new chance
        assert sync_status(store).failed == 0
        assert Worker(store).run(once=True).embedded == ["2"]
        assert sync_status(store).embedded == 10


def test_two_workers_share_the_queue_with_skip_locked(pg_dsn, conn, articles, embedder):
    from connectors.pgvector.sync import Worker, install_sync, sync_status

    gated = GatedEmbedder(embedder)
    with _attach(pg_dsn, articles, gated, "side_table") as store_a, _attach(pg_dsn, articles, embedder,
                                                                            "side_table") as store_b:
        install_sync(store_a)
        result = {}
        thread = threading.Thread(target=lambda: result.setdefault("a", Worker(store_a, batch_size=4).run_batch()))
        thread.start()
        assert gated.entered.wait(30)
        report_b = Worker(store_b, batch_size=100).run(once=True)   # skips the 4 rows A holds
        gated.release.set()
        thread.join(30)
        report_a = result["a"]
        assert len(report_a.embedded) == 4 and len(report_b.embedded) == 6
        assert not set(report_a.embedded) & set(report_b.embedded)
        assert sorted(report_a.embedded + report_b.embedded, key=int) == [str(i) for i in range(10)]
        st = sync_status(store_b)
        assert (st.embedded, st.queued) == (10, 0)


def test_worker_killed_mid_batch_loses_and_duplicates_nothing(pg_dsn, conn, articles, embedder):
    from connectors.pgvector.sync import Worker, install_sync, sync_status

    gated = GatedEmbedder(embedder)
    with _attach(pg_dsn, articles, gated, "side_table") as store_a:
        install_sync(store_a)
        errors = []

        def run() -> None:
            try:
                Worker(store_a, batch_size=6, lease=1.0).run_batch()
            except Exception as exc:  # noqa: BLE001 - the killed worker's error, checked below
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        assert gated.entered.wait(30)
        conn.execute("SELECT pg_terminate_backend(%s)", (store_a.client.info.backend_pid,))
        gated.release.set()
        thread.join(30)
        assert errors, "the killed worker should have failed"
    with _attach(pg_dsn, articles, embedder, "side_table") as store:
        st = sync_status(store)
        assert (st.embedded, st.queued, st.in_progress) == (0, 10, 6)   # nothing half-written, nothing lost
        worker = Worker(store, batch_size=4)
        first = worker.run(once=True)            # the 6 leased rows wait for the lease to expire
        assert sorted(first.embedded, key=int) == ["6", "7", "8", "9"]
        _wait_for(lambda: sync_status(store).ready == 6)
        report = worker.run(once=True)           # then come back, each claimed alone, attempt counted
        assert sorted(report.embedded, key=int) == sorted(report.recovered, key=int) == [str(i) for i in range(6)]
        assert report.batches == 6 and not report.failed
        assert conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {articles}_embeddings").fetchone() == (10, 10)
        assert sync_status(store).queued == 0


POISON = "POISON pill: the decoder segfaults on this row"


def crash_worker_main(argv: list[str]) -> int:
    """A worker process for :func:`test_row_that_kills_its_worker_ends_in_failed_table`.

    ``argv``: dsn, table, tiny checkpoint path, lease seconds. Its embedder SIGKILLs its own
    process when a batch holds the poison row (as a segfault in a decoder would); otherwise it
    drains the queue and prints the report's embedded keys.
    """
    import os
    import signal

    from connectors.pgvector import attach
    from connectors.pgvector.sync import Worker
    from embedder import Embedder

    dsn, table, model, lease = argv

    class KillingEmbedder:
        def __init__(self, inner) -> None:
            self.inner, self.dim = inner, inner.dim

        def embed_documents(self, items, **kwargs):
            if any(POISON in str(item) for item in items):
                os.kill(os.getpid(), signal.SIGKILL)
            return self.inner.embed_documents(items, **kwargs)

    with Embedder.from_pretrained(model, device="cpu") as emb, \
            attach(dsn, table=table, embedder=KillingEmbedder(emb), create=False) as store:
        report = Worker(store, batch_size=4, max_attempts=3, retry_delay=0, lease=float(lease)).run(once=True)
    print("embedded", ",".join(report.embedded), "failed", ",".join(k for k, _ in report.failed))
    return 0


def test_row_that_kills_its_worker_ends_in_failed_table(pg_dsn, conn, articles, embedder, tiny_embedding_path):
    import subprocess
    import sys
    import time

    from connectors.pgvector.sync import failed_rows, install_sync, sync_status

    conn.execute(f"UPDATE {articles} SET title = %s WHERE id = 5", (POISON,))
    lease = 1.5
    with _attach(pg_dsn, articles, embedder) as store:
        install_sync(store)
        code = ("import sys; from tests.connectors.test_pgvector_sync import crash_worker_main; "
                "sys.exit(crash_worker_main(sys.argv[1:]))")
        kills = 0
        for _ in range(6):   # 3 kills (attempts 1 in a batch, 2 and 3 alone), then a run that drains the queue
            proc = subprocess.run([sys.executable, "-c", code, pg_dsn, articles, tiny_embedding_path, str(lease)],
                                  capture_output=True, text=True, timeout=180, cwd=_repo_root())
            assert proc.returncode in (0, -9), proc.stderr[-2000:]
            kills += proc.returncode == -9
            st = sync_status(store)
            if st.queued == 0:
                break
            time.sleep(lease + 0.2)   # the dead worker's lease expires
        assert kills == 3
        (bad,) = failed_rows(store)
        assert bad.key == "5" and bad.attempts == 3
        assert "never finished" in bad.reason and "attempt 3 of 3" in bad.reason
        st = sync_status(store)
        assert (st.rows, st.embedded, st.queued, st.failed) == (10, 9, 0, 1)
        assert conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {articles} "
                            "WHERE embedding IS NOT NULL").fetchone() == (9, 9)
        assert _vector(conn, articles, 5, "column") is None
        expected = embedder.embed_documents([{"text": "article 6 about cats"}], dim=64)[0]
        assert np.allclose(_vector(conn, articles, 6, "column"), expected, atol=1e-5)   # written once, correctly


def _repo_root() -> str:
    import pathlib

    return str(pathlib.Path(__file__).resolve().parents[2])


def _wait_for(condition, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_status_is_read_only(pg_dsn, conn, articles, embedder, capsys):
    """``qvl pg status`` and ``attach(create=False)`` run no DDL: a role with SELECT only can use them."""
    from connectors.cli import main
    from connectors.pgvector import attach
    from connectors.pgvector.sync import install_sync
    from embedder.errors import NotFoundError

    role = f"{articles}_reader"
    conn.execute(f"DROP ROLE IF EXISTS {role}")
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        reader_dsn = pg_dsn.replace("postgres@", f"{role}@", 1)
        conn.execute(f"GRANT SELECT ON {articles} TO {role}")
        with pytest.raises(NotFoundError, match="create=False"):   # nothing attached yet: no DDL to fix it
            attach(reader_dsn, table=articles, text_column="title", create=False)
        with _attach(pg_dsn, articles, embedder) as store:
            install_sync(store)
        conn.execute(f"GRANT SELECT ON {articles}_qvl_queue, {articles}_qvl_failed TO {role}")
        with attach(reader_dsn, table=articles, create=False) as ro:
            assert ro.backfill_report is None and ro.dim == 64 and ro.count() == 0
        assert main(["pg", "status", "--dsn", reader_dsn, "--table", articles]) == 0
        assert "10 rows, 0 embedded, 10 queued" in capsys.readouterr().out
        # the writing path needs ownership: the same role cannot attach with create=True
        with pytest.raises(Exception, match="owner|permission"):
            attach(reader_dsn, table=articles, text_column="title", dim=64)
    finally:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE IF EXISTS {role}")


def test_attach_backfill_report(pg_dsn, conn, articles, embedder):
    from connectors.pgvector import attach

    conn.execute(f"UPDATE {articles} SET photo = '/no/such/photo.png' WHERE id = 3")
    with attach(pg_dsn, table=articles, text_column="title", image_column="photo", embedder=embedder,
                dim=64, backfill=False) as store:
        assert store.backfill_report is None
        report = store.backfill()
        assert report is store.backfill_report
        assert len(report.written) == 9 and [k for k, _ in report.failed] == ["3"]
        assert "photo.png" in report.failed[0][1]
    with attach(pg_dsn, table=articles, embedder=embedder) as again:   # only the missing row is retried
        assert again.backfill_report.written == [] and [k for k, _ in again.backfill_report.failed] == ["3"]


def test_cli_sync_worker_status(pg_dsn, conn, articles, tiny_embedding_path, capsys):
    from connectors.cli import main

    base = ["--dsn", pg_dsn, "--table", articles]
    assert main(["pg", "sync", *base, "--pk", "id", "--text-col", "title", "--dim", "64"]) == 0
    out = capsys.readouterr().out
    assert "10 rows queued" in out and "vector(64)" in out
    assert "need no grants on the queue" in out and f"ON public.{articles}_qvl_queue" in out
    assert main(["pg", "status", *base]) == 0
    assert "10 rows, 0 embedded, 10 queued" in capsys.readouterr().out
    assert main(["pg", "worker", *base, "--model", tiny_embedding_path, "--device", "cpu", "--once",
                 "--batch-size", "4", "--no-progress"]) == 0
    assert "10 embedded" in capsys.readouterr().out
    conn.execute(f"UPDATE {articles} SET title = 'changed' WHERE id = 1")
    assert main(["pg", "status", *base, "--show-failed"]) == 0
    assert "10 embedded, 1 queued" in capsys.readouterr().out
    assert main(["pg", "worker", *base, "--text-col", "nope", "--model", tiny_embedding_path, "--once"]) == 1
    assert "column 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- hardening (issue 14)
def test_app_role_writes_under_another_search_path_without_queue_rights(pg_dsn, conn, embedder, request):
    """The trigger runs as its owner with a fixed search_path and qualified names: an application
    role that has no rights on the queue, writing with a search_path that does not hold the
    table's schema, has its rows queued (before: 'relation ..._qvl_queue does not exist' or
    'permission denied for table ..._qvl_queue')."""
    import psycopg

    from connectors.pgvector import attach
    from connectors.pgvector.sync import Worker, install_sync, sync_grants, sync_status

    tag = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
    schema, role, worker = f"shop_{tag}", f"app_{tag}", f"worker_{tag}"
    conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    for r in (role, worker):
        conn.execute(f"DROP ROLE IF EXISTS {r}")
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"CREATE TABLE {schema}.orders (id bigint PRIMARY KEY, title text)")
    conn.execute(f"INSERT INTO {schema}.orders VALUES (1, 'first order of red shoes')")
    conn.execute(f"CREATE ROLE {role} LOGIN")
    conn.execute(f"CREATE ROLE {worker} LOGIN")
    try:
        # installed by the owner, whose search_path holds the schema (the name given unqualified)
        with psycopg.connect(pg_dsn, autocommit=True, options=f"-c search_path={schema},public") as admin:
            with attach(admin, table="orders", text_column="title", embedder=embedder, dim=64,
                        backfill=False) as store:
                assert store.table == f"{schema}.orders"
                assert install_sync(store) == 1
                grants = sync_grants(store, worker)
                assert any(f"{schema}.orders_qvl_queue" in g for g in grants)
        conn.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE ON {schema}.orders TO {role}")   # nothing on the queue
        app_dsn = pg_dsn.replace("postgres@", f"{role}@", 1)
        with psycopg.connect(app_dsn, autocommit=True, options="-c search_path=public") as app:
            app.execute(f"INSERT INTO {schema}.orders VALUES (2, 'second order: a blue hat')")
            app.execute(f"UPDATE {schema}.orders SET title = 'first order of green shoes' WHERE id = 1")
        queued = conn.execute(f"SELECT row_key FROM {schema}.orders_qvl_queue ORDER BY qid").fetchall()
        assert [r[0] for r in queued] == [1, 2, 1]
        for grant in grants:   # what qvl pg sync prints for a worker role: enough to run one
            conn.execute(grant)
        worker_dsn = pg_dsn.replace("postgres@", f"{worker}@", 1)
        with attach(worker_dsn, table=f"{schema}.orders", embedder=embedder, create=False) as store:
            report = Worker(store, batch_size=8).run(once=True)
            assert sorted(report.embedded) == ["1", "2"] and report.failed == []
            assert sync_status(store).queued == 0 and store.count() == 2
    finally:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        for r in (role, worker):
            conn.execute(f"DROP OWNED BY {r}")
            conn.execute(f"DROP ROLE IF EXISTS {r}")


class FlakyEmbedder:
    """The tiny embedder behind a service that refuses connections for its first ``down`` calls
    (as a ``qvl serve`` that is restarting); records the size of every call."""

    def __init__(self, inner, down: int) -> None:
        self.inner, self.dim, self.down = inner, inner.dim, down
        self.calls: list[tuple[int, bool]] = []

    def embed_documents(self, items, **kwargs):
        ok = len(self.calls) >= self.down
        self.calls.append((len(items), ok))
        if not ok:
            raise ConnectionRefusedError(111, "Connection refused")
        return self.inner.embed_documents(items, **kwargs)

    def embed_queries(self, items, **kwargs):
        return self.inner.embed_queries(items, **kwargs)


def test_embedder_outage_costs_no_attempts_and_batches_resume(pg_dsn, conn, articles, embedder):
    """An outage longer than max_attempts tries used to park every row in the failed table; now
    the worker backs off, the batch returns to the queue with no attempt counted, and when the
    embedder is back the rows land in batches of normal size."""
    import time

    from connectors.pgvector.sync import Worker, failed_rows, install_sync, is_transient, sync_status
    from embedder.errors import InputError, OverloadedError, RemoteError

    assert is_transient(RemoteError("POST /v1/embed failed: ConnectError", code="unavailable"))
    assert is_transient(RemoteError("HTTP 502", status=502)) and is_transient(OverloadedError("busy"))
    assert not is_transient(RemoteError("HTTP 401", status=401)) and not is_transient(InputError("bad image"))
    flaky = FlakyEmbedder(embedder, down=6)   # twice max_attempts
    with _attach(pg_dsn, articles, flaky) as store:
        install_sync(store)
        worker = Worker(store, batch_size=4, max_attempts=3, retry_delay=0, outage_delay=0.02,
                        max_outage_delay=0.1)
        started = time.monotonic()
        report = worker.run(once=True)
        assert time.monotonic() - started < 60
        assert report.outages == 6 and report.failed == [] and report.retried == []
        assert sorted(report.embedded, key=int) == [str(i) for i in range(10)]
        assert failed_rows(store) == []
        assert [n for n, ok in flaky.calls] == [4] * 6 + [4, 4, 2]   # batches of normal size throughout
        st = sync_status(store)
        assert (st.embedded, st.queued, st.failed) == (10, 0, 0)


def test_outage_gives_the_batch_back_with_its_attempts(pg_dsn, conn, articles, embedder):
    from connectors.pgvector.sync import Worker, install_sync

    with _attach(pg_dsn, articles, FlakyEmbedder(embedder, down=1)) as store:
        install_sync(store)
        report = Worker(store, batch_size=4).run_batch()
        assert report.outages == 1 and report.processed == 0
        rows = conn.execute(f"SELECT attempts, claimed_by, not_before <= now(), last_error "
                            f"FROM {articles}_qvl_queue ORDER BY qid").fetchall()
        assert len(rows) == 10 and all(r[:3] == (0, None, True) for r in rows)
        assert all("Connection refused" in r[3] for r in rows[:4])


# ---------------------------------------------------------------------------- qvl pg as users run it (issue 13)
def _qvl(*args: str, env: dict | None = None, timeout: float = 300):
    import os
    import shutil
    import subprocess

    qvl = shutil.which("qvl")
    assert qvl, "the qvl console script is not installed (pip install -e .)"
    return subprocess.run([qvl, *args], capture_output=True, text=True, timeout=timeout, cwd=_repo_root(),
                          env={**os.environ, **(env or {})})


def test_cli_errors_name_flags(pg_dsn, articles):
    base = ["--dsn", pg_dsn, "--table", articles]
    status = _qvl("pg", "status", *base)
    assert status.returncode == 1
    assert "qvl pg sync" in status.stderr and "create=False" not in status.stderr and "attach(" not in status.stderr
    no_content = _qvl("pg", "sync", *base, "--dim", "64")
    assert no_content.returncode == 1 and "--text-col, --image-col, --video-col" in no_content.stderr
    assert "text_column" not in no_content.stderr
    no_dim = _qvl("pg", "sync", *base, "--text-col", "title")
    assert no_dim.returncode == 1 and "pass --dim (or --model" in no_dim.stderr and "dim=" not in no_dim.stderr
    bad_dim = _qvl("pg", "sync", *base, "--text-col", "title", "--dim", "10")
    assert bad_dim.returncode == 1 and "--dim must be an integer of at least 64, got 10" in bad_dim.stderr
    bad_col = _qvl("pg", "sync", *base, "--text-col", "title;x", "--dim", "64")
    assert bad_col.returncode == 1 and "--text-col 'title;x' is not a valid identifier" in bad_col.stderr


def test_cli_checks_the_database_before_the_model_and_prints_the_whole_error(tmp_path):
    """A wrong --dsn is reported at once (not after loading the model) with libpq's whole message
    (the cause AND its hint; it used to keep only the last line)."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # nothing listens there
    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    started = time.monotonic()
    proc = _qvl("pg", "worker", "--dsn", dsn, "--table", "t", "--model", str(tmp_path / "no-such-model"), "--once")
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert err.startswith("qvl pg worker: cannot connect to PostgreSQL at " + dsn), err
    assert "Connection refused" in err and "Is the server running on that host and accepting TCP/IP" in err
    assert "no-such-model" not in err and len(err.splitlines()) == 1
    assert time.monotonic() - started < 30


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_serve(model: str, port: int, env: dict | None = None):
    """The real ``qvl serve`` console script on ``port``, once it prints "serving on"."""
    import os
    import shutil
    import subprocess
    import threading
    import time

    serve = subprocess.Popen([shutil.which("qvl"), "serve", "--model", model, "--port", str(port), "--device", "cpu"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **(env or {})})
    ready = threading.Event()
    lines: list[str] = []

    def drain() -> None:
        for line in serve.stderr:
            lines.append(line)
            if line.startswith("serving on"):
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + 180
    while not ready.wait(0.2):
        if serve.poll() is not None or time.monotonic() > deadline:
            _stop_serve(serve)
            raise AssertionError("qvl serve did not start: " + "".join(lines[-10:]))
    return serve


def _stop_serve(serve) -> None:
    import subprocess

    serve.terminate()
    try:
        serve.wait(20)
    except subprocess.TimeoutExpired:
        serve.kill()
        serve.wait(10)


def test_worker_rides_out_a_qvl_serve_outage(pg_dsn, conn, articles, tiny_embedding_path, embedder):
    """The worker starts while `qvl serve` is down (connection refused) and keeps backing off;
    when the service comes up, every row lands in batches of normal size, none in the failed
    table, no attempt spent (before: every row was parked in the failed table after max_attempts).
    The table records the embedder's fingerprint: the store opens without the embedder, as
    `qvl pg worker` opens it, and the worker checks the fingerprint once the service answers."""
    import time

    from connectors.pgvector import attach
    from connectors.pgvector.sync import Worker, failed_rows, install_sync, sync_status
    from embedder import RemoteEmbedder

    port = _free_port()
    with attach(pg_dsn, table=articles, text_column="title", embedder=embedder, dim=64, backfill=False) as setup:
        assert setup.fingerprint == embedder.fingerprint()
        install_sync(setup)
    remote = RemoteEmbedder(f"http://127.0.0.1:{port}", retries=0, timeout=30)
    with attach(pg_dsn, table=articles, create=False) as store:
        store.embedder = remote
        worker = Worker(store, batch_size=4, max_attempts=2, retry_delay=0, outage_delay=0.2, max_outage_delay=1.0)
        stop = threading.Event()
        result: dict = {}
        thread = threading.Thread(target=lambda: result.update(report=worker.run(stop=stop, poll_interval=0.2)),
                                  daemon=True)
        thread.start()
        serve = None
        try:
            time.sleep(3)   # the outage: the worker tries (and backs off) several times
            with psycopg_connect(pg_dsn) as c:   # the worker's connection is its own
                attempts = c.execute(f"SELECT max(attempts), count(*) FROM {articles}_qvl_queue").fetchone()
                parked = c.execute(f"SELECT count(*) FROM {articles}_qvl_failed").fetchone()[0]
            assert thread.is_alive()
            serve = _start_serve(tiny_embedding_path, port)
            _wait_for(lambda: thread.is_alive() and _status(pg_dsn, articles).embedded == 10, timeout=120)
        finally:
            stop.set()
            thread.join(30)
            if serve is not None:
                _stop_serve(serve)
            remote.close()
        report = result["report"]
        assert attempts == (0, 10) and parked == 0
        assert report.outages >= 2 and report.failed == [] and report.retried == []
        assert sorted(report.embedded, key=int) == [str(i) for i in range(10)] and report.batches == 3
    with attach(pg_dsn, table=articles, create=False) as again:
        st = sync_status(again)
        assert (st.embedded, st.queued, st.failed) == (10, 0, 0) and failed_rows(again) == []


def test_worker_refuses_an_embedder_that_makes_other_vectors(pg_dsn, conn, articles, embedder):
    """A table whose recorded fingerprint differs from the worker's embedder: SchemaMismatchError
    before anything is written; the rows stay queued."""
    import json

    from connectors.pgvector.sync import Worker, install_sync, sync_status

    with _attach(pg_dsn, articles, embedder) as store:
        install_sync(store)
        saved = json.loads(conn.execute(f"SELECT col_description('{articles}'::regclass, a.attnum) FROM pg_attribute a "
                                        f"WHERE a.attrelid = '{articles}'::regclass AND a.attname = 'embedding'"
                                        ).fetchone()[0])
        saved["qvl"]["fingerprint"]["weights"] = "0" * 16   # as if another checkpoint had embedded the table
        literal = json.dumps(saved).replace("'", "''")
        conn.execute(f"COMMENT ON COLUMN {articles}.embedding IS '{literal}'")
    from connectors.pgvector import attach

    with attach(pg_dsn, table=articles, create=False) as store:
        store.embedder = embedder
        with pytest.raises(SchemaMismatchError, match="weights"):
            Worker(store, batch_size=4).run(once=True)
        st = sync_status(store)
        assert st.embedded == 0 and st.queued == 10 and st.failed == 0


def psycopg_connect(dsn: str):
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def _status(dsn: str, table: str):
    from connectors.pgvector import attach
    from connectors.pgvector.sync import sync_status

    with attach(dsn, table=table, create=False) as store:
        return sync_status(store)


def test_cli_worker_with_a_keyed_qvl_serve(pg_dsn, articles, tiny_embedding_path):
    """`qvl pg worker --model http://...` sends --api-key / $QVL_API_KEY (it sent none: HTTP 401)."""
    import os

    port = _free_port()
    serve = _start_serve(tiny_embedding_path, port, {"QVL_API_KEY": "s3cret"})
    try:
        base = ["--dsn", pg_dsn, "--table", articles]
        assert _qvl("pg", "sync", *base, "--text-col", "title", "--dim", "64").returncode == 0
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k != "QVL_API_KEY"}
        denied = _qvl("pg", "worker", *base, "--model", url, "--api-key", "wrong", "--once", "--no-progress",
                      env={**env, "QVL_API_KEY": ""})
        assert denied.returncode == 1 and "401" in denied.stderr + denied.stdout, denied.stderr[-2000:]
        by_flag = _qvl("pg", "worker", *base, "--model", url, "--api-key", "s3cret", "--once", "--batch-size", "4",
                       "--no-progress", "--max-outage", "30")
        assert by_flag.returncode == 0, by_flag.stderr[-2000:]
        assert "10 embedded" in by_flag.stdout and "0 failed in" in by_flag.stdout
        _qvl("pg", "sync", *base, "--text-col", "title", "--dim", "64")
        from connectors.pgvector import attach

        with attach(pg_dsn, table=articles, create=False) as store:
            store.client.execute(f"UPDATE {articles} SET title = 'changed' WHERE id = 1")
        by_env = _qvl("pg", "worker", *base, "--model", url, "--once", "--no-progress",
                      env={"QVL_API_KEY": "s3cret"})
        assert by_env.returncode == 0 and "1 embedded" in by_env.stdout, by_env.stderr[-2000:]
    finally:
        _stop_serve(serve)

"""Triggers, queue and workers that keep an existing table's embeddings in sync (real PostgreSQL)."""
from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

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
    from connectors.pgvector_sync import Worker, install_sync, sync_status

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
    from connectors.pgvector_sync import Worker, failed_rows, install_sync, retry_failed, sync_status

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
    from connectors.pgvector_sync import Worker, install_sync, sync_status

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
    from connectors.pgvector_sync import Worker, install_sync, sync_status

    gated = GatedEmbedder(embedder)
    with _attach(pg_dsn, articles, gated, "side_table") as store_a:
        install_sync(store_a)
        errors = []

        def run() -> None:
            try:
                Worker(store_a, batch_size=6).run_batch()
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
        assert (st.embedded, st.queued) == (0, 10)   # nothing half-written, nothing lost
        report = Worker(store, batch_size=4).run(once=True)
        assert sorted(report.embedded, key=int) == [str(i) for i in range(10)]
        assert conn.execute(f"SELECT count(*), count(DISTINCT id) FROM {articles}_embeddings").fetchone() == (10, 10)
        assert sync_status(store).queued == 0


def test_cli_sync_worker_status(pg_dsn, conn, articles, tiny_embedding_path, capsys):
    from connectors.cli import main

    base = ["--dsn", pg_dsn, "--table", articles]
    assert main(["pg", "sync", *base, "--pk", "id", "--text-col", "title", "--dim", "64"]) == 0
    out = capsys.readouterr().out
    assert "10 rows queued" in out and "vector(64)" in out
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

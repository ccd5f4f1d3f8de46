"""An attached table's image paths are read only inside the media roots (real PostgreSQL).

The paths in an application's column are written by whoever writes the table: with
``--media-root`` (``LoadOptions.path_roots``) the worker and the backfill read only files
inside those folders; a row naming ``/etc/...`` or a link leading out ends in the failed
rows with the reason, and the other rows land.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import os

import pytest

from tests.connectors.postgres_server import pg_dsn, pg_server  # noqa: F401 - fixtures

pytest.importorskip("psycopg")


@pytest.fixture()
def conn(pg_dsn):
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as c:
        yield c


@pytest.fixture()
def photos(conn, request, media_layout):
    """A table of 6 rows: 0 a photo inside the root, 1 one outside, 2 a link leading out,
    3 ``/etc/hostname``-like system file, 4-5 text only."""
    root, outside = media_layout
    name = "mr_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]

    def drop() -> None:
        for suffix in ("_embeddings", "_qvl_queue", "_qvl_failed", ""):
            conn.execute(f"DROP TABLE IF EXISTS {name}{suffix} CASCADE")
        conn.execute(f"DROP FUNCTION IF EXISTS {name}_qvl_enqueue() CASCADE")

    drop()
    conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, title text, photo text)")
    system_file = next(p for p in ("/etc/hostname", "/etc/passwd", "/etc/hosts") if os.path.isfile(p))
    rows = [(0, "inside", str(root / "in.png")), (1, "outside", str(outside / "out.png")),
            (2, "link", str(root / "link.png")), (3, "system", system_file),
            (4, "text only", None), (5, "more text", None)]
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO {name} (id, title, photo) VALUES (%s, %s, %s)", rows)
    yield name
    drop()


def _confined(embedder, root):
    view = copy.copy(embedder)  # same model, other load options
    view.load_options = dataclasses.replace(embedder.load_options, path_roots=(str(root),))
    return view


def test_worker_reads_only_inside_the_media_root(pg_dsn, photos, media_layout, embedder):
    from connectors.pgvector import attach
    from connectors.pgvector.sync import Worker, failed_rows, install_sync, sync_status

    root, _ = media_layout
    with attach(pg_dsn, table=photos, text_column="title", image_column="photo", embedder=_confined(embedder, root),
                dim=64, backfill=False) as store:
        install_sync(store)
        report = Worker(store, batch_size=6, max_attempts=1, retry_delay=0).run(once=True)
        assert sorted(report.embedded) == ["0", "4", "5"]
        failed = {row.key: row.reason for row in failed_rows(store)}
        assert sorted(failed) == ["1", "2", "3"]
        for reason in failed.values():
            assert "outside the allowed media folders" in reason and str(root) in reason
        assert "out.png" in failed["1"] and "link.png" in failed["2"]
        st = sync_status(store)
        assert (st.embedded, st.queued, st.failed) == (3, 0, 3)


def test_backfill_reads_only_inside_the_media_root(pg_dsn, photos, media_layout, embedder):
    from connectors.pgvector import attach

    root, _ = media_layout
    with attach(pg_dsn, table=photos, text_column="title", image_column="photo", embedder=_confined(embedder, root),
                dim=64) as store:
        report = store.backfill_report
        assert sorted(str(k) for k in report.written) == ["0", "4", "5"]
        failed = {str(k): reason for k, reason in report.failed}
        assert sorted(failed) == ["1", "2", "3"]
        assert all("outside the allowed media folders" in r for r in failed.values())


def test_cli_worker_media_root(pg_dsn, photos, media_layout, tiny_embedding_path, capsys):
    from connectors.cli import main

    root, _ = media_layout
    base = ["--dsn", pg_dsn, "--table", photos, "--pk", "id", "--text-col", "title", "--image-col", "photo"]
    assert main(["pg", "sync", *base, "--dim", "64"]) == 0
    capsys.readouterr()
    assert main(["pg", "worker", *base, "--model", tiny_embedding_path, "--device", "cpu", "--once",
                 "--max-attempts", "1", "--no-progress", "--media-root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "3 embedded" in out and "3 failed" in out, out
    assert f"failed 1: image path {str(media_layout[1] / 'out.png')!r}" in out
    assert "outside the allowed media folders" in out

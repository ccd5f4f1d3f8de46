"""Keep a table's embeddings in sync: triggers queue changed rows, a worker embeds them.

    python examples/pg_sync_worker.py [--dsn postgresql://...] [--model Qwen/Qwen3-VL-Embedding-2B]
    python examples/pg_sync_worker.py --offline-test-model      # no download; random results

Creates ``qvl_example_notes``, attaches a side table of embeddings (your table's schema stays
untouched), installs the sync triggers, and runs a worker in a thread while the "application"
inserts, updates and deletes rows, including one whose image does not exist: that row ends in
the failed-rows table after ``--max-attempts`` tries instead of being retried forever.
The same from the shell: ``qvl pg sync`` / ``qvl pg worker`` / ``qvl pg status``.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pg_common import choose_dim, database, example_parser, load_embedder  # noqa: E402

TABLE = "qvl_example_notes"


def wait_until_drained(store: object, timeout: float = 60.0) -> None:
    """Poll ``sync_status`` until nothing is queued (or raise TimeoutError naming the counts)."""
    from connectors.pgvector.sync import sync_status

    deadline = time.monotonic() + timeout
    while (st := sync_status(store)).queued:
        if time.monotonic() > deadline:
            raise TimeoutError(f"queue not drained after {timeout} s: {st}")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    ap = example_parser(__doc__.splitlines()[0])
    ap.add_argument("--max-attempts", type=int, default=2, help="tries before a row is set aside (default 2)")
    args: argparse.Namespace = ap.parse_args(argv)
    import psycopg

    from connectors.pgvector import attach
    from connectors.pgvector.sync import Worker, failed_rows, install_sync, sync_status

    with database(args.dsn) as dsn, load_embedder(args) as emb, psycopg.connect(dsn, autocommit=True) as app:
        app.execute(f"DROP TABLE IF EXISTS {TABLE}_embeddings, {TABLE}_qvl_queue, {TABLE}_qvl_failed, {TABLE} CASCADE")
        app.execute(f"DROP FUNCTION IF EXISTS {TABLE}_qvl_enqueue() CASCADE")
        app.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, body text, image text)")
        app.execute(f"INSERT INTO {TABLE} (id, body) SELECT i, 'note number ' || i FROM generate_series(1, 20) i")
        dim = choose_dim(args, emb)
        # one store (connection) per worker; the setup store runs the DDL
        with attach(dsn, table=TABLE, text_column="body", image_column="image", embedder=emb, dim=dim,
                    mode="side_table", backfill=False) as setup:
            print(f"sync installed, {install_sync(setup)} existing rows queued")
            with attach(dsn, table=TABLE, embedder=emb, create=False) as worker_store:
                stop = threading.Event()
                worker = Worker(worker_store, batch_size=8, max_attempts=args.max_attempts, retry_delay=0.2)
                result: dict = {}
                thread = threading.Thread(target=lambda: result.update(report=worker.run(stop=stop,
                                                                                         poll_interval=0.2)))
                thread.start()
                try:
                    wait_until_drained(setup)
                    print("backlog embedded:", sync_status(setup))
                    # the application keeps writing; the triggers queue what changed
                    app.execute(f"INSERT INTO {TABLE} (id, body) VALUES (100, 'a note about sourdough bread')")
                    app.execute(f"UPDATE {TABLE} SET body = 'a note about sailing boats' WHERE id = 3")
                    app.execute(f"DELETE FROM {TABLE} WHERE id = 4")     # its embedding goes with it
                    app.execute(f"INSERT INTO {TABLE} (id, body, image) VALUES (101, 'broken', '/no/such/image.png')")
                    wait_until_drained(setup)
                finally:
                    stop.set()
                    thread.join(60)
                report = result.get("report")
                st = sync_status(setup)
                print(f"after the changes: {st.rows} rows, {st.embedded} embedded, {st.queued} queued, "
                      f"{st.failed} failed")
                if report is not None:
                    print(f"worker: {len(report.embedded)} embedded, {len(report.retried)} retries, "
                          f"{len(report.failed)} failed in {report.batches} batches")
                for row in failed_rows(setup):
                    print(f"  failed row {row.key} after {row.attempts} attempts: {row.reason[:100]}")
                hit = setup.search("baking bread", k=1)[0]
                print(f"best match for 'baking bread': {hit.id} {hit.fields['body']!r}")
            if not args.keep:
                setup.drop()     # triggers, queue, failed table and side table; your rows stay
        if not args.keep:
            app.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())

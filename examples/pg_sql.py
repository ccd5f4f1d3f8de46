"""Add multimodal search to an EXISTING table with attach(), then query it in raw SQL with ``<=>``.

    python examples/pg_sql.py [--dsn postgresql://...] [--model Qwen/Qwen3-VL-Embedding-2B]
    python examples/pg_sql.py --offline-test-model      # no download; random results

Creates an ordinary table ``qvl_example_listings`` (id, title, photo path, price) with a few rows
and images, attaches to it (an ``embedding`` column, backfill, HNSW index), then searches it
twice: with ``store.search`` and with plain SQL through psycopg.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pg_common import choose_dim, database, example_parser, load_embedder  # noqa: E402

TABLE = "qvl_example_listings"


def make_photos(folder: str) -> list[str]:
    """Three small solid-colour PNGs (red, green, blue) standing in for product photos."""
    from PIL import Image

    paths = []
    for name, rgb in (("red", (220, 30, 30)), ("green", (30, 180, 60)), ("blue", (30, 60, 220))):
        path = os.path.join(folder, f"{name}.png")
        Image.new("RGB", (96, 64), rgb).save(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    args: argparse.Namespace = example_parser(__doc__.splitlines()[0]).parse_args(argv)
    import psycopg

    from connectors.pgvector import attach

    with database(args.dsn) as dsn, load_embedder(args) as emb, tempfile.TemporaryDirectory() as photos_dir, \
            psycopg.connect(dsn, autocommit=True) as conn:
        red, green, blue = make_photos(photos_dir)
        # an application table that knows nothing about embeddings
        conn.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")
        conn.execute(f"CREATE TABLE {TABLE} (id integer PRIMARY KEY, title text, photo text, price numeric)")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s)", [
                (1, "red bicycle, barely used", red, 150), (2, "green armchair", green, 80),
                (3, "blue kayak with paddle", blue, 420), (4, "red kettle", None, 20),
                (5, "a box of assorted novels", None, 15)])
        dim = choose_dim(args, emb)
        with attach(dsn, table=TABLE, text_column="title", image_column="photo", embedder=emb, dim=dim) as store:
            report = store.backfill_report          # what attach() embedded, and what failed
            print(f"attached {TABLE}: {store.plan.column_sql}, {len(report.written)} rows embedded, "
                  f"{len(report.failed)} failed")
            for hit in store.search("something red", k=3, where="price < %s", params=[200]):
                print(f"  store.search: {hit.id}  {hit.fields['title']:<28} score={hit.score:.3f}")

            # the same question in plain SQL: pgvector's <=> is cosine distance
            from pgvector.psycopg import register_vector

            register_vector(conn)                   # bind numpy arrays as vectors
            q = emb.embed_queries(["something red"], dim=dim)[0]
            rows = conn.execute(
                f"SELECT id, title, 1 - (embedding <=> %(q)s::vector({dim})) AS score FROM {TABLE} "
                f"WHERE price < 200 AND embedding IS NOT NULL "
                f"ORDER BY embedding <=> %(q)s::vector({dim}) LIMIT 3",
                {"q": q}).fetchall()
            for pid, title, score in rows:
                print(f"  raw SQL:      {pid}  {title:<28} score={score:.3f}")
            if not args.keep:
                store.drop()                        # drops the embedding column, never your rows
        if not args.keep:
            conn.execute(f"DROP TABLE IF EXISTS {TABLE} CASCADE")
    return 0


if __name__ == "__main__":
    sys.exit(main())

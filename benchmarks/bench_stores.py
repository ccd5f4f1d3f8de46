"""Embedded stores side by side: Milvus Lite, Qdrant local mode and a Faiss index file, one run.

The same clustered unit vectors (a mixture of Gaussians, like real embeddings) go into each
store through the one store API (``store.upsert`` of rows that carry their vectors), then the
same held-out queries are searched one at a time (``store.search(vector, k=10)``), and each
store's top 10 is compared with exact numpy search (recall@10). Milvus Lite is the baseline.

    python benchmarks/bench_stores.py --rows 100000 --queries 200

Prints a table: upsert seconds and rows/s (index building included: Milvus Lite's
``refresh_index``, Faiss' HNSW insertion), search p50/p95 ms and recall@10.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Timer, clustered, print_table, tmpdir  # noqa: E402

# name -> (connector module, target template, open_store kwargs)
STORES = {
    "milvus-lite HNSW (baseline)": ("connectors.milvus", "milvus:{dir}/milvus.db", {"index": "HNSW"}),
    "milvus-lite FLAT": ("connectors.milvus", "milvus:{dir}/milvus.db", {"index": "FLAT"}),
    "qdrant local": ("connectors.qdrant", "qdrant:{dir}/qdrant", {}),
    "faiss flat": ("connectors.faiss", "faiss:{dir}/faiss", {"index": "flat"}),
    "faiss hnsw": ("connectors.faiss", "faiss:{dir}/faiss", {"index": "hnsw"}),
}


def progress(msg: str) -> None:
    print(f"[bench_stores {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), 64):
        scores = queries[s:s + 64] @ data.T
        out[s:s + 64] = np.argsort(-scores, axis=1)[:, :k]
    return out


def run_store(name: str, module: str, target: str, kwargs: dict, data: np.ndarray, queries: np.ndarray,
              truth: np.ndarray, k: int, batch: int) -> list:
    import connectors

    collection = "bench_" + "".join(c if c.isalnum() else "_" for c in name.split(" (")[0])
    store = connectors.connect(target, collection=collection, dim=data.shape[1], **kwargs)
    try:
        store.drop()
        store.create()
        progress(f"{name}: loading {len(data)} rows")
        with Timer() as load:
            for s in range(0, len(data), batch):
                rows = [{"id": f"r{i}", "vector": data[i]} for i in range(s, min(s + batch, len(data)))]
                report = store.upsert(rows, batch_size=batch)
                if report.failed:
                    raise RuntimeError(f"{name}: {len(report.failed)} rows failed, first: {report.failed[0]}")
            refresh = getattr(store, "refresh_index", None)
            if callable(refresh):
                refresh()
        progress(f"{name}: {len(queries)} queries")
        latencies, hits = [], 0
        for q, want in zip(queries, truth):
            t = time.perf_counter()
            got = store.search(q, k=k)
            latencies.append(time.perf_counter() - t)
            hits += len({int(h.id[1:]) for h in got} & set(want.tolist()))
        ms = np.asarray(latencies) * 1000
        return [name, f"{load.seconds:.1f}", f"{len(data) / load.seconds:.0f}", f"{np.percentile(ms, 50):.1f}",
                f"{np.percentile(ms, 95):.1f}", f"{hits / (k * len(queries)):.3f}"]
    finally:
        try:
            store.drop()
        finally:
            store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--batch", type=int, default=5000, help="rows per upsert call")
    ap.add_argument("--stores", default=",".join(STORES), help="comma-separated names from: " + ", ".join(STORES))
    args = ap.parse_args()
    chosen = [s.strip() for s in args.stores.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in STORES]
    if unknown:
        ap.error(f"unknown store(s) {unknown}; choose from {list(STORES)}")
    progress(f"generating {args.rows} + {args.queries} clustered unit vectors at dim {args.dim}")
    both = clustered(args.rows + args.queries, args.dim, centers=max(10, args.rows // 100), spread=0.8, seed=2)
    data, queries = both[:args.rows], both[args.rows:]
    truth = exact_top_k(data, queries, args.k)
    folder = tmpdir()
    table, skipped = [], []
    start = time.monotonic()
    try:
        for name in chosen:
            module, template, kwargs = STORES[name]
            if importlib.util.find_spec(module) is None:
                skipped.append(name)
                continue
            table.append(run_store(name, module, template.format(dir=folder), kwargs, data, queries, truth,
                                   args.k, args.batch))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\n{args.rows} rows of clustered unit vectors at dim {args.dim} (cosine), upserted {args.batch} per call "
          f"with their vectors; {args.queries} held-out queries one at a time, k={args.k}; recall against numpy "
          "exact search\n")
    print_table(["store", "upsert s", "rows/s", "search p50 ms", "p95 ms", f"recall@{args.k}"], table)
    if skipped:
        print(f"\nnot installed here: {', '.join(skipped)}")
    print(f"\n2 CPU cores; total {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()

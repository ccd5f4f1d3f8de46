"""Milvus connector speed: writes, end-to-end ingest and search, each against a named baseline.

(a) write path: ``MilvusStore.upsert`` of precomputed dim-1024 vectors against plain
    ``MilvusClient.insert`` in 1,000-row batches of the same rows (same schema and index,
    fresh collections; both times include the final flush).
(b) ingest: ``MilvusStore.upsert`` of texts with the embedder (embedding of batch k+1
    overlaps the write of batch k) against the sum of embed-only and write-only time, on a
    checkpoint with the real Qwen3-VL-2B widths and 2 layers (random weights).
(c) search: ``MilvusStore.search`` p50/p95 latency at ``--rows`` clustered unit vectors
    (dim 1024) with HNSW at several ``ef`` against FLAT (exact), and recall@10 of each
    against the exact top 10 (numpy brute force; FLAT is checked against it too).

Everything runs in one process on Milvus Lite (a file in a temporary directory). Progress
goes to stderr, tables to stdout.

Usage:
    python benchmarks/bench_milvus.py [--rows 100000] [--write-rows 20000] [--texts 64]
        [--queries 100] [--flat-queries 20] [--repeats 2] [--parts abc]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import Timer, bench_checkpoint, clustered, print_table, tmpdir  # noqa: E402

DIM = 1024
BASELINE_BATCH = 1000


def progress(message: str) -> None:
    """One line of progress on stderr (tables go to stdout)."""
    print(f"[bench_milvus {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` random unit vectors of ``dim`` float32 components."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 10_000):  # chunks: no float64 copy of the whole matrix
        chunk = rng.standard_normal((min(10_000, n - start), dim), dtype=np.float32)
        out[start:start + len(chunk)] = chunk / np.linalg.norm(chunk, axis=1, keepdims=True)
    return out


def open_fresh(target: str, name: str, **kwargs: Any) -> Any:
    """A created, empty store named ``name`` (an older one of that name is dropped)."""
    from connectors.milvus import open_store

    store = open_store(target, collection=name, **kwargs)
    store.drop()
    store.create()
    return store


# ---------------------------------------------------------------------------- (a) write path
def write_rows(vectors: np.ndarray, prefix: str) -> list[dict[str, Any]]:
    """Rows as a migration would bring them: id, precomputed vector, a short text, metadata."""
    return [{"id": f"{prefix}{i}", "vector": v, "text": f"row {i}", "metadata": {"i": i}}
            for i, v in enumerate(vectors)]


def baseline_insert(store: Any, rows: Sequence[dict[str, Any]], batch: int = BASELINE_BATCH) -> None:
    """Plain ``MilvusClient.insert`` of the same entities in ``batch``-row requests, then a flush."""
    for start in range(0, len(rows), batch):
        store.client.insert(store.collection, [
            {"id": r["id"], "vector": r["vector"], "text": r["text"], "media": None, "modality": "text",
             "metadata": r["metadata"]} for r in rows[start:start + batch]])
    store.client.flush(store.collection)


def bench_write(target: str, n: int) -> None:
    """Rows/s of the write path alone, against plain MilvusClient.insert."""
    vectors = unit_vectors(n, DIM, seed=1)
    rows = write_rows(vectors, "w")
    mb = vectors.nbytes / 2**20
    methods: list[tuple[str, Callable[[Any], Any]]] = [
        (f"baseline: MilvusClient.insert, {BASELINE_BATCH}-row batches", lambda s: baseline_insert(s, rows)),
        ("MilvusStore.upsert (default: 256-row steps, 16 MB requests)", lambda s: s.upsert(rows)),
        ("MilvusStore.upsert(batch_size=1000)", lambda s: s.upsert(rows, batch_size=1000)),
    ]
    results = []
    for i, (name, fn) in enumerate(methods):
        store = open_fresh(target, f"bench_write_{i}", dim=DIM)
        try:
            progress(f"(a) {name}: {n} rows")
            with Timer() as t:
                report = fn(store)
            if report is not None and not report.ok:
                raise RuntimeError(f"{name}: {len(report.failed)} rows failed, first: {report.failed[0]}")
            count = store.count()
            if count != n:
                raise RuntimeError(f"{name}: {count} rows stored, expected {n}")
            results.append((name, t.seconds))
        finally:
            store.drop()
            store.close()
    base = results[0][1]
    print(f"\n(a) write path: {n} rows at dim {DIM} with precomputed vectors ({mb:.0f} MB of vectors), "
          "HNSW collection, times include the final flush\n")
    print_table(["method", "seconds", "rows/s", "MB/s", "vs baseline"], [
        [name, f"{s:.2f}", f"{n / s:.0f}", f"{mb / s:.1f}", f"{base / s:.2f}x"] for name, s in results])


# ---------------------------------------------------------------------------- (b) ingest
def short_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct short texts (8 random words and a number)."""
    rng = np.random.RandomState(seed)
    words = ("search vector image video database query embedding model index result "
             "beach dog sunset city night market revenue report chart table").split()
    return [f"{' '.join(rng.choice(words, 8))} {i}" for i in range(n)]


def bench_ingest(target: str, n: int, batch: int, layers: int, repeats: int) -> None:
    """End-to-end ingest with the embedder against embed-only + write-only (best of ``repeats`` each)."""
    import torch

    from embedder import Embedder

    progress(f"(b) loading the bench checkpoint ({layers} layers)")
    emb = Embedder.from_pretrained(bench_checkpoint("embedding", layers), device="cpu")
    best: dict[str, float] = {"embed": float("inf"), "write": float("inf"), "ingest": float("inf")}
    try:
        texts = short_texts(n)
        emb.embed_documents(texts[:4], dim=DIM)  # warm-up
        for repeat in range(repeats):
            progress(f"(b) run {repeat + 1}/{repeats}: embed only, {n} texts in {batch}-row steps")
            with Timer() as t:
                vectors = np.concatenate([emb.embed_documents(texts[s:s + batch], dim=DIM, on_error="skip").vectors
                                          for s in range(0, n, batch)])
            best["embed"] = min(best["embed"], t.seconds)
            for name, rows, embedder in (
                    ("write", [{"id": f"t{i}", "text": x, "vector": v} for i, (x, v) in enumerate(zip(texts, vectors))],
                     None),
                    ("ingest", [{"id": f"t{i}", "text": x} for i, x in enumerate(texts)], emb)):
                store = open_fresh(target, f"bench_ingest_{name}", dim=DIM, embedder=embedder)
                try:
                    progress(f"(b) run {repeat + 1}/{repeats}: {name}, {n} rows")
                    with Timer() as t:
                        report = store.upsert(rows, batch_size=batch)
                    if not report.ok or store.count() != n:
                        raise RuntimeError(f"{name}: {len(report.failed)} rows failed, {store.count()} stored")
                    best[name] = min(best[name], t.seconds)
                    if name == "ingest":
                        got = store.client.get(store.collection, ids=["t0"], output_fields=["vector"])[0]["vector"]
                        if not np.allclose(got, vectors[0], atol=1e-3):
                            raise RuntimeError("the ingested vector differs from the embed-only one")
                finally:
                    store.drop()
                    store.close()
    finally:
        emb.close()
    t_embed, t_write, t_ingest = best["embed"], best["write"], best["ingest"]
    serial = t_embed + t_write
    saved = serial - t_ingest
    print(f"\n(b) ingest: {n} short texts at dim {DIM} in {batch}-row steps; checkpoint: hidden 2048, vision 1024, "
          f"{layers} layers (random weights); CPU threads: {torch.get_num_threads()}; best of {repeats}\n")
    print_table(["method", "seconds", "rows/s", "vs baseline"], [
        ["embed only (Embedder.embed_documents, same steps)", f"{t_embed:.2f}", f"{n / t_embed:.1f}", ""],
        ["write only (MilvusStore.upsert of the precomputed vectors)", f"{t_write:.2f}", f"{n / t_write:.1f}", ""],
        ["baseline: embed then write (sum of the two above)", f"{serial:.2f}", f"{n / serial:.1f}", "1.00x"],
        ["MilvusStore.upsert with the embedder (overlapped)", f"{t_ingest:.2f}", f"{n / t_ingest:.1f}",
         f"{serial / t_ingest:.2f}x"],
    ])
    share = saved / t_write if t_write > 0 else float("nan")
    if share > 1:
        note = " (more than the whole write: the difference is within the embedding's timing noise)"
    elif share < 0:
        note = (" (negative: the overlapped run was slower; the write thread and Milvus Lite, which runs in "
                "this process, compete with the model for the CPU cores, or timing noise)")
    else:
        note = " (the last step's write and the final flush cannot overlap)"
    print(f"\nwrite time hidden by the overlap: embed + write - ingest = {saved:.2f} s of {t_write:.2f} s "
          f"= {share:.0%}{note}")


# ---------------------------------------------------------------------------- (c) search
@dataclass(frozen=True)
class SearchResult:
    """Latency and recall of one index setting."""

    name: str
    params: str
    queries: int
    p50_ms: float
    p95_ms: float
    recall: float


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of the exact top ``k`` rows (inner product of unit vectors = cosine) per query."""
    scores = queries @ data.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def load_rows(store: Any, data: np.ndarray) -> float:
    """Upsert ``data`` as rows ``s<i>`` through the store; seconds taken."""
    def rows() -> Iterator[dict[str, Any]]:
        for i, v in enumerate(data):
            yield {"id": f"s{i}", "vector": v}

    with Timer() as t:
        report = store.upsert(rows(), batch_size=2000)
    if not report.ok:
        raise RuntimeError(f"loading {store.collection!r}: {len(report.failed)} rows failed: {report.failed[:3]}")
    return t.seconds


def measure(store: Any, queries: np.ndarray, truth: np.ndarray, k: int, *, name: str,
            search_params: dict[str, Any] | None) -> SearchResult:
    """Per-query latency of ``store.search`` and recall@k against ``truth`` (row indices)."""
    store.search(queries[0], k=k, search_params=search_params)  # warm-up
    latencies, hits = [], 0
    for q, want in zip(queries, truth):
        start = time.perf_counter()
        got = store.search(q, k=k, search_params=search_params)
        latencies.append(time.perf_counter() - start)
        hits += len({int(h.id[1:]) for h in got} & set(want.tolist()))
    ms = np.asarray(latencies) * 1000
    params = ", ".join(f"{k_}={v}" for k_, v in (search_params or {}).items()) or "-"
    return SearchResult(name, params, len(queries), float(np.percentile(ms, 50)), float(np.percentile(ms, 95)),
                        hits / (k * len(queries)))


def bench_search(target: str, n: int, n_queries: int, n_flat_queries: int, efs: Sequence[int], k: int = 10) -> None:
    """p50/p95 search latency and recall@k: HNSW at several ef against FLAT (exact)."""
    progress(f"(c) generating {n} unit vectors at dim {DIM}")
    # Clustered like real embeddings (a mixture of Gaussians), as in bench_pgvector.py;
    # queries are held-out points of the same mixture.
    both = clustered(n + n_queries, DIM, centers=max(10, n // 100), spread=0.8, seed=2)
    data, queries = both[:n], both[n:]
    truth = exact_top_k(data, queries, k)
    stores = {}
    loading = []
    try:
        for index in ("FLAT", "HNSW"):
            store = open_fresh(target, f"bench_search_{index.lower()}", dim=DIM, index=index)
            stores[index] = store
            progress(f"(c) loading {n} rows into {index}")
            load_s = load_rows(store, data)
            if index == "HNSW":  # Milvus Lite searches rows written since the last load without the index
                progress(f"(c) HNSW before refresh_index: {n_flat_queries} queries")
                unindexed = measure(store, queries[:n_flat_queries], truth[:n_flat_queries], k,
                                    name="HNSW, rows not yet indexed (before refresh_index)",
                                    search_params={"ef": efs[0]})
            progress(f"(c) {index}: loaded in {load_s:.0f} s; building the index (refresh_index)")
            with Timer() as t_index:
                store.refresh_index()
            loading.append([index, f"{load_s:.1f}", f"{n / load_s:.0f}", f"{t_index.seconds:.1f}"])
        progress(f"(c) FLAT: {n_flat_queries} queries")
        results = [measure(stores["FLAT"], queries[:n_flat_queries], truth[:n_flat_queries], k,
                           name="baseline: FLAT (exact)", search_params=None), unindexed]
        for ef in efs:
            progress(f"(c) HNSW ef={ef}: {n_queries} queries")
            results.append(measure(stores["HNSW"], queries, truth, k, name="HNSW (M=16, efConstruction=200)",
                                   search_params={"ef": ef}))
    finally:
        for store in stores.values():
            store.drop()
            store.close()
    base = results[0].p50_ms
    print(f"\n(c) search: {n} rows of clustered unit vectors at dim {DIM} (COSINE), k={k}, held-out queries, "
          "one query at a time through MilvusStore.search with the default output "
          "fields; recall against numpy brute force\n")
    print_table(["index", "upsert s", "rows/s", "refresh_index (index build) s"], loading)
    print()
    print_table(["index", "search params", "queries", "p50 ms", "p95 ms", "p50 vs baseline", f"recall@{k}"], [
        [r.name, r.params, r.queries, f"{r.p50_ms:.1f}", f"{r.p95_ms:.1f}", f"{base / r.p50_ms:.1f}x",
         f"{r.recall:.3f}"] for r in results])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="abc", help="which parts to run: any of a (write), b (ingest), c (search)")
    ap.add_argument("--write-rows", type=int, default=20_000, help="rows for (a)")
    ap.add_argument("--texts", type=int, default=64, help="texts for (b)")
    ap.add_argument("--ingest-batch", type=int, default=16, help="rows per embed/write step for (b)")
    ap.add_argument("--layers", type=int, default=2, help="layers of the bench checkpoint for (b)")
    ap.add_argument("--repeats", type=int, default=2, help="runs of (b); the best time of each method counts")
    ap.add_argument("--rows", type=int, default=100_000, help="rows for (c)")
    ap.add_argument("--queries", type=int, default=100, help="HNSW queries for (c)")
    ap.add_argument("--flat-queries", type=int, default=20, help="FLAT queries for (c) (exact search is slow)")
    ap.add_argument("--ef", default="64,128,256", help="HNSW ef values for (c), comma-separated")
    ap.add_argument("--dir", default=None, help="directory for the Milvus Lite file (default: a temporary one)")
    args = ap.parse_args()
    if not set(args.parts) <= set("abc") or not args.parts:
        ap.error(f"--parts must be letters from 'abc', got {args.parts!r}")
    efs = [int(e) for e in args.ef.split(",") if e.strip()]

    workdir = args.dir or tmpdir()
    target = f"milvus:{os.path.join(workdir, 'bench.db')}"
    started = time.perf_counter()
    try:
        if "a" in args.parts:
            bench_write(target, args.write_rows)
        if "b" in args.parts:
            bench_ingest(target, args.texts, args.ingest_batch, args.layers, args.repeats)
        if "c" in args.parts:
            bench_search(target, args.rows, args.queries, min(args.flat_queries, args.queries), efs)
    finally:
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nMilvus Lite {milvus_lite_version()}, pymilvus {pymilvus_version()}, {os.cpu_count()} CPUs; "
          f"total {time.perf_counter() - started:.0f} s")


def milvus_lite_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("milvus-lite")
    except PackageNotFoundError:
        return "?"


def pymilvus_version() -> str:
    import pymilvus

    return str(pymilvus.__version__)


if __name__ == "__main__":
    main()

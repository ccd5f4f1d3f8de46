"""Weaviate throughput: our connector against the plain client, and server-side vectorization.

(a) Upsert of precomputed 1024-dim vectors. Ours: ``WeaviateStore.upsert`` (rows with
    numpy vectors; row normalisation, uuid5 ids, one gRPC ``insert_many`` request per
    byte-budget batch split over 2 concurrent requests). Baseline: the same objects
    (properties, UUIDs and vectors prepared before the clock starts) written with the
    client's ``collection.batch.fixed_size(batch_size=200, concurrent_requests=2)``.
    ``WeaviateStore.upsert(batching="fixed_size")`` is shown too. Every run writes into a
    fresh collection with the same schema and HNSW settings.

(b) Vectorization of objects with text and/or a small image. Server-side: objects with
    no vectors inserted (one ``insert_many``) into a ``multi2vec-clip`` collection whose
    module calls ``qvl serve``; Weaviate asks the service for every text and image field.
    Client-side: the same items embedded in this process by ``Embedder`` and written with
    their vectors by ``WeaviateStore.upsert`` (embedding overlapped with writing). The
    model is the same in both: a random checkpoint with the real Qwen3-VL-2B widths and
    ``--layers`` layers (``common.bench_checkpoint``), or ``--tiny``.

Everything runs on 127.0.0.1: one Weaviate server (the test helper's binary, a temporary
data directory) and one ``qvl serve``, both stopped at the end.

Usage:
    python benchmarks/bench_weaviate.py [--rows 3000] [--objects 48] [--repeats 2] [--layers 2] [--tiny]
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from common import Timer, bench_checkpoint, print_table, tmpdir  # noqa: E402

DIM = 1024
WORDS = ("search vector image video database query embedding model index result beach dog sunset city night "
         "market revenue report chart table").split()


# ---------------------------------------------------------------------------- (a) precomputed vectors
def precomputed_rows(n: int, dim: int, seed: int = 0) -> list[dict]:
    rng = np.random.RandomState(seed)
    vecs = rng.randn(n, dim).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return [{"id": f"r{i}", "text": " ".join(rng.choice(WORDS, 12)), "vector": vecs[i],
             "metadata": {"i": i, "source": "bench"}} for i in range(n)]


def plain_objects(rows: list[dict]) -> list[tuple[dict, str, dict]]:
    """The objects the store writes, as a plain client user would build them."""
    from connectors.weaviate import row_uuid

    return [({"row_id": r["id"], "text": r["text"], "media": None, "modality": "text",
              "metadata": json.dumps(r["metadata"], sort_keys=True)},
             row_uuid(r["id"]), {"default": r["vector"].tolist()}) for r in rows]


def fresh_store(target: str, name: str, **kwargs):
    from connectors.weaviate import open_store

    store = open_store(target, collection=name, named_vectors={"default": DIM}, **kwargs)
    store.drop()
    store.create()
    return store


def bench_upsert(target: str, rows: list[dict], repeats: int) -> list[list]:
    objects = plain_objects(rows)
    n = len(rows)

    def ours(batching: str):
        def run() -> float:
            with fresh_store(target, "BenchUpsert", batching=batching) as store:
                with Timer() as t:
                    report = store.upsert(rows)
                assert report.ok and store.count() == n, (report.failed[:3], store.count())
                store.drop()
            return t.seconds
        return run

    def baseline() -> float:
        with fresh_store(target, "BenchUpsert") as store:
            collection = store.weaviate_collection
            with Timer() as t:
                with collection.batch.fixed_size(batch_size=200, concurrent_requests=2) as batch:
                    for props, uuid, vector in objects:
                        batch.add_object(properties=props, uuid=uuid, vector=vector)
            failed = collection.batch.failed_objects
            assert not failed and store.count() == n, (failed[:3], store.count())
            store.drop()
        return t.seconds

    methods = [("baseline: collection.batch.fixed_size(200, 2 concurrent)", baseline),
               ("qvl: WeaviateStore.upsert (insert_many, 2 concurrent)", ours("insert_many")),
               ("qvl: WeaviateStore.upsert(batching='fixed_size')", ours("fixed_size"))]
    times: dict[str, list[float]] = {name: [] for name, _ in methods}
    ours("insert_many")()  # warm-up: first collection, gRPC channel, server caches
    for rep in range(repeats):
        order = methods if rep % 2 == 0 else methods[::-1]  # alternate: the machine is noisy
        for name, fn in order:
            times[name].append(fn())
    base = min(times[methods[0][0]])
    table = []
    for name, _ in methods:
        best = min(times[name])
        table.append([name, n, f"{best:.2f}", f"{statistics.median(times[name]):.2f}", f"{n / best:.0f}",
                      f"{base / best:.2f}x"])
    return table


# ---------------------------------------------------------------------------- (b) vectorization
def png_b64(rng: np.random.RandomState, side: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((rng.rand(side, side, 3) * 255).astype("uint8")).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def vectorize_objects(n: int, seed: int = 1) -> list[dict]:
    """Texts, small images (base64 PNG, 48-96 px) and text+image objects, interleaved."""
    rng = np.random.RandomState(seed)
    out = []
    for i in range(n):
        kind = i % 3
        obj: dict = {"id": f"o{i}"}
        if kind in (0, 2):
            obj["text"] = " ".join(rng.choice(WORDS, int(rng.choice([8, 20, 40]))))
        if kind in (1, 2):
            obj["image"] = png_b64(rng, int(rng.choice([48, 64, 96])))
        out.append(obj)
    return out


def kind_of(obj: dict) -> str:
    return "text+image" if "text" in obj and "image" in obj else ("text" if "text" in obj else "image")


def model_items(objects: list[dict]) -> int:
    """Items the model embeds server-side: multi2vec-clip embeds every field separately."""
    return sum(("text" in o) + ("image" in o) for o in objects)


def bench_vectorize(target: str, service_url: str, checkpoint: str, objects: list[dict], *, dim: int,
                    repeats: int) -> tuple[list[list], dict]:
    from weaviate.classes.data import DataObject

    from connectors.weaviate import (WeaviateTarget, connect_client, create_server_vectorized_collection,
                                     open_store, row_uuid)
    from embedder import Embedder

    n = len(objects)
    client = connect_client(WeaviateTarget.parse(target), timeout=(120, 900))

    def server_side(name: str, objs: list[dict]) -> float:
        client.collections.delete(name)
        collection = create_server_vectorized_collection(client, name, inference_url=service_url,
                                                         image_fields=["image"], text_fields=["text"],
                                                         reranker=False)
        data = [DataObject(properties={k: v for k, v in o.items() if k != "id"}, uuid=row_uuid(o["id"]))
                for o in objs]
        with Timer() as t:
            result = collection.data.insert_many(data)
        assert not result.errors, list(result.errors.values())[:3]
        return t.seconds

    emb = Embedder.from_pretrained(checkpoint, device="cpu")
    rows = [{k: (base64.b64decode(v) if k == "image" else v) for k, v in o.items()} for o in objects]

    def client_side(name: str, rs: list[dict]) -> float:
        with open_store(target, collection=name, embedder=emb, named_vectors={"default": dim}) as store:
            store.drop()
            store.create()
            with Timer() as t:
                report = store.upsert(rs)
            assert report.ok, report.failed[:3]
        return t.seconds

    try:
        server_side("BenchServerSide", objects[:3])  # warm-up: model caches, HTTP connections
        client_side("BenchClientSide", rows[:3])
        times: dict[str, list[float]] = {"server": [], "client": []}
        for rep in range(repeats):
            runs = [("server", lambda: server_side("BenchServerSide", objects)),
                    ("client", lambda: client_side("BenchClientSide", rows))]
            for key, fn in (runs if rep % 2 == 0 else runs[::-1]):
                times[key].append(fn())
        # the stored vectors agree: single-field objects give exactly the embedder's vector
        server_coll, client_coll = client.collections.get("BenchServerSide"), client.collections.get("BenchClientSide")
        cos: dict[str, list[float]] = {"text": [], "image": [], "text+image": []}
        for o in objects:
            kind = kind_of(o)
            a = np.asarray(server_coll.query.fetch_object_by_id(row_uuid(o["id"]), include_vector=True)
                           .vector["multimodal"])
            b = np.asarray(client_coll.query.fetch_object_by_id(row_uuid(o["id"]), include_vector=True)
                           .vector["default"])
            cos[kind].append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    finally:
        for name in ("BenchServerSide", "BenchClientSide"):
            client.collections.delete(name)
        client.close()
        emb.close()
    items = model_items(objects)
    base = min(times["client"])
    table = []
    for key, label, k_items in (
            ("client", "baseline: client-side Embedder.embed + WeaviateStore.upsert (vectors)", n),
            ("server", "qvl serve as Weaviate's multi2vec-clip: insert_many, no vectors", items)):
        best = min(times[key])
        table.append([label, n, k_items, f"{best:.2f}", f"{statistics.median(times[key]):.2f}", f"{n / best:.2f}",
                      f"{base / best:.2f}x"])
    return table, {k: min(v) for k, v in cos.items() if v}


# ---------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=3000, help="rows for the precomputed-vector upsert (a)")
    ap.add_argument("--objects", type=int, default=48, help="objects for the vectorization comparison (b)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--layers", type=int, default=2, help="layers of the BENCH_2B checkpoint")
    ap.add_argument("--tiny", action="store_true", help="use the tiny test checkpoint instead of BENCH_2B")
    ap.add_argument("--skip-vectorize", action="store_true", help="run (a) only")
    args = ap.parse_args()

    import torch
    import weaviate

    from tests.connectors.weaviate_server import (WEAVIATE_VERSION, free_ports, running_qvl_serve,
                                                  running_weaviate)

    work = Path(tmpdir())
    started = time.perf_counter()
    try:
        (service_port,) = free_ports(1)
        service_url = f"http://127.0.0.1:{service_port}"
        with running_weaviate(work / "weaviate-data", inference_url=service_url) as server:
            print(f"Weaviate {WEAVIATE_VERSION} on {server.url} (gRPC {server.grpc_port}); "
                  f"weaviate-client {weaviate.__version__}; CPU cores: {os.cpu_count()}, "
                  f"torch threads: {torch.get_num_threads()}", flush=True)
            rows = precomputed_rows(args.rows, DIM)
            upsert_table = bench_upsert(server.target, rows, args.repeats)
            print(f"\n(a) upsert of {args.rows} rows with precomputed {DIM}-dim vectors (HNSW, cosine); "
                  f"best and median of {args.repeats}\n")
            print_table(["method", "rows", "best s", "median s", "rows/s", "speed-up"], upsert_table)
            if args.skip_vectorize:
                return
            if args.tiny:
                from embedder.testing import build_tiny_checkpoint

                checkpoint, model_desc = build_tiny_checkpoint(work / "tiny"), "tiny test checkpoint (hidden 128)"
                dim = 128
            else:
                checkpoint = bench_checkpoint("embedding", args.layers)
                model_desc = f"BENCH_2B (Qwen3-VL-2B widths, {args.layers} layers, random weights)"
                dim = DIM
            objects = vectorize_objects(args.objects)
            with running_qvl_serve(checkpoint, port=service_port, default_dim=dim,
                                   log_path=work / "serve.log") as service:
                table, cos = bench_vectorize(server.target, service.url, checkpoint, objects, dim=dim,
                                             repeats=args.repeats)
            kinds = {k: sum(kind_of(o) == k for o in objects) for k in ("text", "image", "text+image")}
            print(f"\n(b) vectorization of {len(objects)} objects ({kinds['text']} texts of 8-40 words, "
                  f"{kinds['image']} images 48-96 px, {kinds['text+image']} text+image) at dim {dim}; "
                  f"model: {model_desc}, CPU; best and median of {args.repeats}\n")
            print_table(["method", "objects", "model items", "best s", "median s", "objects/s", "speed-up"],
                        table)
            print("\nstored vectors, server-side vs client-side, min cosine: "
                  + ", ".join(f"{k} {v:.6f}" for k, v in cos.items())
                  + "\n(text+image differ by design: multi2vec-clip stores the mean of the parts' vectors, "
                    "the client-side store one fused vector)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"\ntotal wall time {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Ray Data ingest against the single-process ``qvl ingest`` (``connectors.ingest.ingest``), same corpus.

Baseline: :func:`connectors.ingest.ingest` in this process (its read, embed and write
threads), the model loaded here first. Ours: the same folder through Ray Data on a local
cluster (``read_source`` -> ``EmbedBatches`` on an actor pool -> ``StoreSink``), the actors
loading the model themselves. Both write into their own Milvus Lite file at the same dim,
with the same batch size. The corpus is a folder of short and long texts and images
(half of them captioned), all new to the target.

Columns: the wall time of each (the single-process time includes its model load, as the
Ray job's includes its actors'), rows/s, and Ray's overhead against the baseline. A second
table gives the per-actor throughput: rows embedded per second of time spent inside
``EmbedBatches.__call__`` (the actor's steady state, model load excluded), and the share of
the Ray job's wall time that was embedding. On a 2-core machine expect parity, not speed-up.

The model: the real Qwen3-VL-2B widths with 2 layers, random weights
(``benchmarks/common.py: bench_checkpoint``), or ``--model`` (a checkpoint, a hub id, or a
``qvl serve`` URL). ``--address`` runs the Ray side on a running cluster.

Usage:
    python benchmarks/bench_ray.py [--rows 96] [--batch-size 16] [--actors 1] [--cpus-per-actor 2]
                                   [--model PATH|ID|URL] [--device cpu|cuda] [--gpus-per-actor 0]
                                   [--address auto]
"""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, bench_checkpoint, print_table, tmpdir  # noqa: E402


def make_corpus(root: pathlib.Path, n: int, seed: int = 0) -> None:
    """``n`` rows: short and long text files, images (half with a caption sidecar)."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    words = ("search vector image video database query embedding model index result beach dog sunset city "
             "night market revenue report chart table").split()
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        kind = i % 4
        if kind == 0:
            (root / f"t{i:05d}.txt").write_text(" ".join(rng.choice(words, 12)))
        elif kind == 1:
            (root / f"t{i:05d}.md").write_text(" ".join(rng.choice(words, 300)))
        else:
            side = int(rng.choice([96, 160, 224]))
            Image.fromarray((rng.rand(side, side, 3) * 255).astype("uint8")).save(root / f"i{i:05d}.png")
            if kind == 3:
                (root / f"i{i:05d}.txt").write_text(" ".join(rng.choice(words, 16)))


class TimedEmbed:
    """:class:`connectors.ray.EmbedBatches` that appends ``rows seconds`` of each call to a file."""

    def __init__(self, *, log: str, **kwargs) -> None:
        from connectors.ray import EmbedBatches

        start = time.perf_counter()
        self.inner = EmbedBatches(**kwargs)
        self.log = log
        with open(self.log, "a") as fh:
            fh.write(f"0 0 {time.perf_counter() - start:.6f}\n")  # the actor's model load

    def __call__(self, batch):
        start = time.perf_counter()
        out = self.inner(batch)
        with open(self.log, "a") as fh:
            fh.write(f"{len(out['id'])} {time.perf_counter() - start:.6f} 0\n")
        return out


def single_process(folder: pathlib.Path, target: str, model: str, dim: int, batch_size: int, device: str) -> tuple:
    import connectors
    from connectors.ingest import ingest, open_source
    from embedder.factory import load_embedder

    with Timer() as t_load:
        emb = load_embedder(model, device=device)
    with Timer() as t:
        store = connectors.connect(target, collection="bench", embedder=emb, dim=dim)
        store.create(exist_ok=True)
        summary = ingest(open_source(folder).rows(), store, emb, dim=dim, batch_size=batch_size)
        store.close()
    emb.close()
    return t_load.seconds, t.seconds, summary


def on_ray(folder: pathlib.Path, target: str, model: str, dim: int, batch_size: int, device: str, actors: int,
           cpus: float, gpus: float, log: str) -> tuple:
    import ray
    import ray.data

    from connectors.ingest import open_source
    from connectors.ray import StoreSink, read_source

    with Timer() as t:
        sink = StoreSink(target, collection="bench", dim=dim)
        rows = max(64, batch_size)  # as ingest_on_ray sizes them: writes follow the embedding
        ds = read_source(open_source(folder), rows_per_block=rows, block_bytes=max(64 << 10, rows * (4 * dim + 1024)))
        ds = ds.map_batches(TimedEmbed, batch_size=batch_size,
                            fn_constructor_kwargs={"model": model, "dim": dim, "store": sink.store, "device": device,
                                                   "log": log},
                            compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus, num_gpus=gpus or None)
        ds.write_datasink(sink, ray_remote_args={"num_cpus": 0.25})
    return t.seconds, sink.report


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=192)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--dim", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each, interleaved; the best is reported")
    ap.add_argument("--actors", type=int, default=1)
    ap.add_argument("--cpus-per-actor", type=float, default=float(os.cpu_count() or 1))
    ap.add_argument("--gpus-per-actor", type=float, default=0)
    ap.add_argument("--model", help="checkpoint, hub id or qvl serve URL (default: the 2B-width bench checkpoint)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--address", help="a running Ray cluster (default: start one here)")
    args = ap.parse_args()

    import ray

    model = args.model or bench_checkpoint("embedding", layers=args.layers)
    base = pathlib.Path(tmpdir())
    folder = base / "corpus"
    make_corpus(folder, args.rows)
    with Timer() as t_init:
        ray.init(address=args.address, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 **({} if args.address else {"num_cpus": int(np.ceil(args.actors * args.cpus_per_actor)) + 1}))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    single, on = [], []
    for r in range(args.repeats):  # interleaved, so that other load on the machine hits both alike
        load_s, ingest_s, summary = single_process(folder, f"milvus:{base / f'single{r}.db'}", model, args.dim,
                                                   args.batch_size, args.device)
        assert summary.written == args.rows, summary
        single.append((load_s + ingest_s, ingest_s))
        log = str(base / f"embed-calls{r}.log")
        ray_s, report = on_ray(folder, f"milvus:{base / f'ray{r}.db'}", model, args.dim, args.batch_size,
                               args.device, args.actors, args.cpus_per_actor, args.gpus_per_actor, log)
        assert report.written == args.rows, report
        calls = np.loadtxt(log, ndmin=2)
        loads = calls[calls[:, 0] == 0, 2]
        on.append((ray_s, ray_s - float(loads.max()), int(calls[:, 0].sum()), float(calls[:, 1].sum())))
    ray.shutdown()
    base_total, base_run = min(single)
    ray_total, ray_run, rows, busy = min(on)

    print(f"{args.rows} rows (1/4 short texts, 1/4 long texts, 1/2 images of 96-224 px, half of them captioned), "
          f"dim {args.dim}, batch {args.batch_size}, model {model if args.model else f'2B widths, {args.layers} layers'}"
          f", {os.cpu_count()} CPUs; Ray: {args.actors} actor(s) x {args.cpus_per_actor:g} CPU"
          f"{f' x {args.gpus_per_actor:g} GPU' if args.gpus_per_actor else ''}; ray.init took {t_init.seconds:.1f} s "
          f"(not counted); best of {args.repeats}, Milvus Lite targets")
    print_table(["method", "seconds", "rows/s", "seconds without model load", "rows/s", "vs single-process"], [
        ["single-process ingest() (baseline)", f"{base_total:.1f}", f"{args.rows / base_total:.2f}",
         f"{base_run:.1f}", f"{args.rows / base_run:.2f}", "1.00x"],
        [f"Ray Data ({args.actors} actor(s))", f"{ray_total:.1f}", f"{args.rows / ray_total:.2f}", f"{ray_run:.1f}",
         f"{args.rows / ray_run:.2f}", f"overhead {100 * (ray_total / base_total - 1):+.0f}% "
                                       f"({100 * (ray_run / base_run - 1):+.0f}% without model load)"],
    ])
    print_table(["per-actor throughput", "rows", "seconds embedding", "rows/s per actor",
                 "share of the job after the model load"], [
        ["EmbedBatches.__call__ (steady state)", str(rows), f"{busy:.1f}", f"{rows / busy:.2f}",
         f"{100 * busy / args.actors / ray_run:.0f}%"],
    ])


if __name__ == "__main__":
    main()

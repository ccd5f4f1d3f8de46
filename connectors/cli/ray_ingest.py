"""``qvl ingest --engine ray``: the same job on Ray Data (:func:`connectors.ray.ingest_on_ray`).

::

    qvl ingest photos/ --to postgresql://db/shop --engine ray                      # a local Ray
    qvl ingest items.parquet --to weaviate://w:8080 --engine ray --address auto \\
        --actors 8 --gpus-per-actor 1                                             # a running cluster

The flags live here (added to ``qvl ingest`` by :func:`add_ray_args`) and so does the
handler's Ray branch (:func:`run_on_ray`), so that ``qvl ingest`` itself stays one module
about one process.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from .common import DEFAULT_DIM, api_key_of, checkpoint_dim, one_line, open_target_first, print_error


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """Add ``--engine``, ``--address``, ``--actors``, ``--gpus-per-actor`` to ``qvl ingest``."""
    g = p.add_argument_group("distributed ingest (Ray Data; the 'ray' extra)")
    g.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this process (default); ray: read, embed on an actor pool (one model per actor) "
                        "and write on Ray Data")
    g.add_argument("--address", metavar="ray://HOST:10001|auto",
                   help="the Ray cluster to run on (default: start a local Ray on this machine)")
    g.add_argument("--actors", metavar="N|MIN-MAX", default="1",
                   help="embedding actors, each with its own model: a number, or MIN-MAX to autoscale (default: 1)")
    g.add_argument("--gpus-per-actor", type=float, default=0, metavar="G",
                   help="GPUs each actor holds (0.5: two actors share a GPU; default: 0, CPU)")
    g.add_argument("--cpus-per-actor", type=float, default=1, metavar="C",
                   help="CPUs each actor holds: its torch threads on a CPU (default: 1)")


def _actors(value: str) -> tuple[int, int] | None:
    lo, _, hi = str(value).partition("-")
    try:
        size = (int(lo), int(hi or lo))
    except ValueError:
        return None
    return size if 1 <= size[0] <= size[1] else None


def root_cause(exc: BaseException) -> BaseException:
    """The error that stopped a Ray job, out of Ray's wrappers: the first of ours in the chain, else the last."""
    from embedder.errors import QVLError

    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        inner = getattr(current, "cause", None)  # a RayTaskError holds the original error here
        current = inner if isinstance(inner, BaseException) else current.__cause__
    ours = [e for e in chain if isinstance(e, QVLError) and type(e).__module__.startswith("embedder")]
    return ours[0] if ours else chain[-1]


def run_on_ray(args: argparse.Namespace, source: Any, spec: str) -> int:
    """The ``--engine ray`` branch of ``qvl ingest``; the same exit codes (0, 1 when rows failed, 2, 130)."""
    from embedder.errors import QVLError
    from embedder.factory import is_url

    from . import ingest as cli_ingest

    actors = _actors(args.actors)
    if actors is None:
        print_error(f"--actors {args.actors}: give a number of actors (at least 1) or MIN-MAX")
        return 2
    if args.gpus_per_actor < 0 or args.cpus_per_actor <= 0:
        print_error("--gpus-per-actor must be 0 or more, --cpus-per-actor more than 0")
        return 2
    try:
        from connectors.ray import ingest_on_ray, one_process_target
    except QVLError as exc:  # Ray is not installed: the message names the extra
        print_error(str(exc))
        return 2
    import ray

    dim = args.dim
    try:
        if not one_process_target(args.to):  # a Milvus Lite file stays locked by the process that opened it
            open_target_first(args.to, args.collection, dim=dim)
        if dim is None:  # the actors load the model; here only its full dim is needed
            full = checkpoint_dim(spec)
            if full is None and is_url(spec):
                from .common import load_embedder

                remote = load_embedder(spec, api_key=api_key_of(args), retries=0)
                full = int(remote.dim)
                remote.close()
            dim = min(DEFAULT_DIM, full) if full else DEFAULT_DIM
    except (QVLError, ValueError) as exc:
        print_error(one_line(exc))
        return 2
    if args.resume or args.state:
        print("note: with --engine ray no state file is kept: ids already in the target are skipped, so the same "
              "command continues an interrupted run", file=sys.stderr)
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.address or None, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = bool(args.progress)
    ctx.print_on_execution_start = False
    dead_letter = args.dead_letter or f"{args.collection}.dead-letters.jsonl"
    from connectors.ingest import RetryPolicy

    try:
        report = ingest_on_ray(source, args.to, collection=args.collection, model=spec, dim=dim,
                               batch_size=args.batch_size, actors=actors, gpus_per_actor=args.gpus_per_actor,
                               cpus_per_actor=args.cpus_per_actor, dead_letter=dead_letter,
                               overwrite=args.overwrite, retry=RetryPolicy(attempts=args.retries),
                               device=args.device, api_key=api_key_of(args), limit=args.limit)
    except KeyboardInterrupt:
        print("interrupted: the rows that landed stay; run the same command again to continue (ids already in "
              "the target are skipped)", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - what stopped the job, on one line
        print_error(f"ingest stopped: {one_line(root_cause(exc))}")
        print("the rows that landed stay; fix the cause and run the same command again (ids already in the "
              "target are skipped)", file=sys.stderr)
        return 2
    finally:
        if started:
            ray.shutdown()
    cli_ingest._print_summary(report)
    return 0 if report.ok else 1

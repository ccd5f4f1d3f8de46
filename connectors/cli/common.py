"""What every ``qvl`` command shares: model flags and loading, errors on one line, progress, early checks.

:func:`load_embedder` / :func:`load_reranker` (with :func:`add_model_args` and
:func:`api_key_of`) are the one way every ``qvl`` command turns ``--model``/``--reranker``,
``--api-key`` / ``$QVL_API_KEY`` and ``--device`` into a model. :func:`open_target_first`
and :func:`check_dim_arg` check what can be checked before a model loads, so a mistake
costs a second and one line.

Heavy modules (torch through the embedder, database drivers through the connectors)
are imported inside the functions only, so ``qvl --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import pathlib
import sys
import threading
from typing import Any, Callable, Sequence

from embedder.factory import is_url as _is_url
from embedder.factory import load_embedder as _load_embedder
from embedder.factory import load_reranker as _load_reranker
from embedder.hub import quiet_model_loading

log = logging.getLogger(__name__)

DEFAULT_TARGET = "milvus:./qvl.db"
DEFAULT_COLLECTION = "qvl"
DEFAULT_MODEL = "Qwen/Qwen3-VL-Embedding-2B"
DEFAULT_RERANKER = "Qwen/Qwen3-VL-Reranker-2B"
DEFAULT_DIM = 1024

MODEL_HELP = ("embedding model: a local checkpoint directory, a Hugging Face id, or the URL of a running "
              f"`qvl serve` (default: $QVL_MODEL or {DEFAULT_MODEL})")
RERANKER_HELP = ("reranker model: a local directory, a Hugging Face id or a `qvl serve` URL "
                 f"(default: $QVL_RERANKER or {DEFAULT_RERANKER})")
API_KEY_ENV = "QVL_API_KEY"
API_KEY_HELP = f"key of a `qvl serve` given as --model/--reranker URL (default: ${API_KEY_ENV})"


def add_model_args(p: argparse.ArgumentParser, *, reranker: bool) -> None:
    """Add ``--model`` (and ``--reranker``), ``--api-key`` and ``--device`` to a command's parser."""
    p.add_argument("--model", metavar="PATH|ID|URL", help=MODEL_HELP)
    if reranker:
        p.add_argument("--reranker", metavar="PATH|ID|URL", help=RERANKER_HELP)
    p.add_argument("--api-key", metavar="KEY", help=API_KEY_HELP)
    p.add_argument("--device", default="auto", help="torch device for local models (default: auto)")



def print_error(message: str) -> None:
    """Print ``qvl: MESSAGE`` on stderr (the CLI's one way to report an error)."""
    print(f"qvl: {message}", file=sys.stderr)


def one_line(exc: BaseException) -> str:
    """An error's message on one line (drivers like to wrap theirs)."""
    return " ".join(str(exc).split())


def load_embedder(spec: str, *, device: str = "auto", api_key: str | None = None,
                  path_roots: Sequence[str] | None = None, retries: int | None = None) -> Any:
    """:func:`embedder.load_embedder` (a URL gives a checked ``RemoteEmbedder``), without the weights' progress bar."""
    if not _is_url(spec):
        quiet_model_loading()
    return _load_embedder(spec, device=device, api_key=api_key, path_roots=path_roots, retries=retries)


def load_reranker(spec: str, *, device: str = "auto", api_key: str | None = None) -> Any:
    """:func:`embedder.load_reranker` (a URL gives a checked ``RemoteReranker``), without the weights' progress bar."""
    if not _is_url(spec):
        quiet_model_loading()
    return _load_reranker(spec, device=device, api_key=api_key)


def model_spec(args: argparse.Namespace) -> str:
    """``--model``, else ``$QVL_MODEL``, else the released embedding model."""
    return args.model or os.environ.get("QVL_MODEL") or DEFAULT_MODEL


def reranker_spec(args: argparse.Namespace) -> str:
    """``--reranker``, else ``$QVL_RERANKER``, else the released reranker."""
    return getattr(args, "reranker", None) or os.environ.get("QVL_RERANKER") or DEFAULT_RERANKER


def api_key_of(args: argparse.Namespace) -> str | None:
    """The ``qvl serve`` key: ``--api-key``, else ``$QVL_API_KEY``, else None."""
    return getattr(args, "api_key", None) or os.environ.get(API_KEY_ENV) or None


def close_quietly(obj: Any) -> None:
    """Close ``obj`` if it can be closed; a failure to close is logged, never raised."""
    close = getattr(obj, "close", None)
    if callable(close):
        try:
            close()
        except Exception as exc:  # noqa: BLE001 - closing must not hide the real outcome
            log.debug("closing %r failed: %s", obj, exc)


def progress_bar(total: int | None, *, enabled: bool, desc: str) -> tuple[Any, Callable[[Any], None]]:
    """A tqdm bar on stderr (rows done of ``total``, rate, ETA; off when stderr is not a terminal) and its
    ``on_progress`` callback for :func:`connectors.ingest.ingest`."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, unit="row", desc=desc, file=sys.stderr, disable=None if enabled else True,
               dynamic_ncols=True, smoothing=0.1)
    lock = threading.Lock()

    def update(p: Any) -> None:
        with lock:
            if p.done > bar.n:
                bar.update(p.done - bar.n)
            bar.set_postfix(embedded=p.embedded, written=p.written, skipped=p.skipped, failed=p.failed,
                            refresh=False)

    return bar, update


def format_summary(summary: Any) -> str:
    """The one-line summary of an ingest."""
    rate = summary.done / summary.elapsed if summary.elapsed > 0 else 0.0
    return (f"read {summary.read}, embedded {summary.embedded}, written {summary.written}, "
            f"skipped {summary.skipped} (already present), failed {summary.failed}, "
            f"elapsed {summary.elapsed:.1f} s ({rate:.1f} rows/s)")



def _checkpoint_config(spec: str) -> dict | None:
    if _is_url(spec) or not os.path.isdir(spec):
        return None
    try:
        config = json.loads((pathlib.Path(spec) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def checkpoint_dim(spec: str) -> int | None:
    """The full dim of a local checkpoint folder, read from its ``config.json`` (None when unknown)."""
    config = _checkpoint_config(spec)
    try:
        return int((config.get("text_config") or config)["hidden_size"]) if config else None
    except (ValueError, KeyError, TypeError):
        return None


ANY_MODEL_MIN_DIM = 32  # Qwen3-Embedding's smallest Matryoshka dim (Qwen3-VL-Embedding's is 64)


def checkpoint_min_dim(spec: str) -> int | None:
    """The smallest Matryoshka dim of a local checkpoint folder (32 for the Qwen3-Embedding text
    models, 64 for Qwen3-VL), from its ``config.json``'s architectures; None when unknown."""
    config = _checkpoint_config(spec)
    if not config:
        return None
    from embedder.contracts import MIN_DIM

    text = {"Qwen3ForCausalLM", "Qwen3Model"} & set(config.get("architectures") or [])
    return ANY_MODEL_MIN_DIM if text else MIN_DIM


def check_dim_arg(dim: int | None, *, full: int | None = None, minimum: int | None = None,
                  flag: str = "--dim") -> str | None:
    """Why ``--dim`` cannot be used (one line), or None. ``full`` and ``minimum``: the model's full
    and smallest dims, when known. Unknown before the model loads (a hub id, a URL), the smallest
    is the least any supported model takes (32, the text models'): a Qwen3-Embedding hub id
    must not be refused ``--dim 32``; the loaded model checks its own range."""
    if dim is None:
        return None
    low = minimum or ANY_MODEL_MIN_DIM
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < low or (full is not None and dim > full):
        allowed = f"from {low} to {full} (the model's full dim)" if full else f"at least {low}"
        return f"{flag} {dim}: the dim must be an integer {allowed}; nothing was created"
    return None


def print_missing_collection(exc: Exception, target: str, collection: str) -> None:
    """The one-line error for a search on a collection that does not exist, with the command that makes it."""
    print_error(f"{exc} (in {target}; ingest something first: qvl ingest SOURCE --to {target} "
                f"--collection {collection})")


#: schemes whose stores talk to a database that can be checked before the model loads
_DATABASE_SCHEMES = frozenset({"milvus", "postgresql", "postgres", "weaviate", "qdrant", "faiss"})


def open_target_first(target: str, collection: str, *, dim: int | None = None) -> None:
    """Check a target before the model loads: its scheme is known and its database answers.

    Opens the store without an embedder and closes it again, so that a typo in the
    scheme or an unreachable database is reported in a second instead of after the
    model load.

    Raises:
        ValueError: the scheme is not one of the registered ones.
        UnavailableError: the database cannot be reached.
        MissingDependencyError: the database's client is not installed.
    """
    import connectors

    scheme = connectors.scheme_of(target)
    if scheme not in connectors._REGISTRY:
        raise ValueError(f"unknown target {target!r}: scheme {scheme!r} is not one of "
                         f"{sorted(set(connectors._REGISTRY))}")
    if scheme not in _DATABASE_SCHEMES:
        return
    from embedder.errors import MissingDependencyError, UnavailableError

    # pymilvus shares one gRPC connection per URI and health-checks it after 30 s idle (the model
    # load); Milvus Lite answers an idle channel's keepalive pings with "too many pings", and the
    # recovery then fails: the early check gets a connection of its own, closed with it.
    extra = {"dedicated": True} if scheme == "milvus" else {}
    try:
        store = connectors.connect(target, collection=collection, embedder=None, dim=dim, **extra)
    except (UnavailableError, MissingDependencyError):
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. "pass dim=": the real open, with the model, decides
        log.debug("early open of %s: %s: %s", target, type(exc).__name__, exc)
        return
    close_quietly(store)


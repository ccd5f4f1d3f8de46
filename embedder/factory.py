"""One way from a model spec to a model: a ``qvl serve`` URL gives a remote client, anything else a local checkpoint.

:func:`load_embedder` and :func:`load_reranker` are what the ``qvl`` commands, the
examples and library users call with ``--model`` / ``--reranker``; the remote path
imports neither torch nor transformers (a light install without the ``local`` extra
is enough for it).

Example:
    >>> emb = load_embedder("http://127.0.0.1:8080", api_key="...")     # doctest: +SKIP
    >>> emb = load_embedder("Qwen/Qwen3-VL-Embedding-2B", device="cpu")  # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

from .errors import RemoteError

if TYPE_CHECKING:
    from .embedder import Embedder
    from .remote import RemoteEmbedder, RemoteReranker, _Remote
    from .reranker import Reranker

API_KEY_ENV = "QVL_API_KEY"  # what the qvl command reads; the library reads no environment


def is_url(spec: str | os.PathLike) -> bool:
    """Whether a model spec names a running ``qvl serve`` (``http://`` or ``https://``)."""
    return isinstance(spec, str) and spec.lower().startswith(("http://", "https://"))


def load_embedder(spec: str | os.PathLike, *, device: str = "auto", api_key: str | None = None,
                  path_roots: Sequence[str | os.PathLike] | None = None,
                  retries: int | None = None) -> "Embedder | RemoteEmbedder":
    """An :class:`~embedder.Embedder` for a checkpoint, or a :class:`~embedder.RemoteEmbedder` for a URL.

    Args:
        spec: a local checkpoint folder, a Hugging Face id, or ``http(s)://host:port`` of a ``qvl serve``.
        device: torch device for a local model (``auto``: CUDA, then MPS, then CPU).
        api_key: the service's key (sent as a bearer token; ignored for local models).
        path_roots: folders local media paths must be in (their real paths, links resolved);
            a path elsewhere is refused as that item's error (None: any readable file). For
            media paths that come from data (``qvl pg worker --media-root``).
        retries: a remote client's own retries after a 503/504, timeout or refused connection
            (default: the client's). A caller that retries with its own policy passes 0, so
            retries do not nest (``qvl ingest`` does).

    Returns:
        A model implementing :class:`~embedder.contracts.EmbedderLike`. A remote one has
        already answered ``/meta``, so a wrong key or an unreachable service fails here,
        before any work.

    Raises:
        ModelLoadError: the checkpoint cannot be loaded (a hub id that is not cached on a
            machine without network says so at once, in one line).
        MissingDependencyError: a local checkpoint without the ``local`` extra (torch).
        RemoteError: the service refused the key (HTTP 401/403) or cannot be reached.
    """
    if is_url(spec):
        from .remote import RemoteEmbedder

        extra = {} if retries is None else {"retries": retries}
        return _checked(RemoteEmbedder(str(spec), api_key=api_key, path_roots=path_roots, **extra), str(spec),
                        api_key)
    from .embedder import Embedder

    return Embedder.from_pretrained(os.fspath(spec), device=device, load_options=_options(path_roots))


def load_reranker(spec: str | os.PathLike, *, device: str = "auto", api_key: str | None = None,
                  path_roots: Sequence[str | os.PathLike] | None = None) -> "Reranker | RemoteReranker":
    """A :class:`~embedder.Reranker` for a checkpoint, or a :class:`~embedder.RemoteReranker` for a URL.

    Same arguments, checks and errors as :func:`load_embedder`; the result implements
    :class:`~embedder.contracts.RerankerLike`.
    """
    if is_url(spec):
        from .remote import RemoteReranker

        return _checked(RemoteReranker(str(spec), api_key=api_key, path_roots=path_roots), str(spec), api_key)
    from .reranker import Reranker

    return Reranker.from_pretrained(os.fspath(spec), device=device, load_options=_options(path_roots))


def _options(path_roots: Sequence[str | os.PathLike] | None) -> Any:
    if path_roots is None:
        return None
    from .items import LoadOptions

    return LoadOptions(path_roots=tuple(os.fspath(r) for r in path_roots))


def _checked(remote: "_Remote", spec: str, api_key: str | None) -> Any:
    """Ask the service for its ``/meta`` now, so that a wrong key is one clear line before any work."""
    try:
        remote.meta()
    except RemoteError as exc:
        remote.close()
        if exc.status in (401, 403):
            given = "was refused" if api_key else "is needed"
            raise RemoteError(f"the service at {spec} answered HTTP {exc.status}: its API key {given}; pass it with "
                              f"--api-key KEY or ${API_KEY_ENV} (library: api_key=)", status=exc.status,
                              code=exc.code) from None
        raise
    return remote

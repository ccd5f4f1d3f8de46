"""Qwen3-VL embedder and reranker: text, images, video and fused inputs in one vector space.

The text-only Qwen3-Embedding / Qwen3-Reranker checkpoints load through the same
``Embedder.from_pretrained`` / ``Reranker.from_pretrained`` (the kind is read from the
checkpoint's ``config.json``; :mod:`embedder.text`).

:func:`load_embedder` / :func:`load_reranker` turn a model spec into a model: a local
checkpoint or hub id gives :class:`Embedder` / :class:`Reranker` (the ``local`` extra:
torch, transformers), a ``qvl serve`` URL gives :class:`RemoteEmbedder` /
:class:`RemoteReranker`. Both kinds implement :class:`EmbedderLike` / :class:`RerankerLike`
(:mod:`embedder.contracts`) and describe their vectors with ``fingerprint()``
(:mod:`embedder.fingerprint`).

Heavy modules (torch, transformers) are imported on first use of a local model, so
``import embedder`` is fast and the remote path never imports them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (ConnectorError, InputError, MissingDependencyError, ModelLoadError, NotFoundError,
                     OverloadedError, PartialUpsertError, QVLError, RemoteError, SchemaMismatchError,
                     UnavailableError)

__all__ = [
    "Embedder", "EmbedResult", "Reranker", "ScoreResult", "RemoteEmbedder", "RemoteReranker",
    "EmbedderLike", "RerankerLike", "fingerprint_conflicts", "load_embedder", "load_reranker",
    "QVLError", "InputError", "ModelLoadError", "OverloadedError", "MissingDependencyError", "RemoteError",
    "ConnectorError", "UnavailableError", "NotFoundError", "SchemaMismatchError", "PartialUpsertError",
]

if TYPE_CHECKING:  # type checkers see the real names; at run time they load on first use
    from .contracts import EmbedderLike, EmbedResult, RerankerLike, ScoreResult
    from .embedder import Embedder
    from .factory import load_embedder, load_reranker
    from .fingerprint import fingerprint_conflicts
    from .remote import RemoteEmbedder, RemoteReranker
    from .reranker import Reranker

_LAZY = {
    "Embedder": ".embedder", "EmbedResult": ".contracts",
    "Reranker": ".reranker", "ScoreResult": ".contracts",
    "EmbedderLike": ".contracts", "RerankerLike": ".contracts",
    "fingerprint_conflicts": ".fingerprint",
    "load_embedder": ".factory", "load_reranker": ".factory",
    "RemoteEmbedder": ".remote", "RemoteReranker": ".remote",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module 'embedder' has no attribute {name!r}")

"""Qwen3-VL embedder and reranker: text, images, video and fused inputs in one vector space.

Heavy modules (torch, transformers) are imported on first use of a model class, so
``import embedder`` is fast.
"""
from __future__ import annotations

from typing import Any

from .errors import (ConnectorError, InputError, MissingDependencyError, ModelLoadError, NotFoundError,
                     OverloadedError, PartialUpsertError, QVLError, RemoteError, SchemaMismatchError,
                     UnavailableError)

__all__ = [
    "Embedder", "EmbedResult", "Reranker", "ScoreResult", "RemoteEmbedder", "RemoteReranker",
    "EmbedderLike", "RerankerLike", "fingerprint_conflicts", "load_embedder", "load_reranker",
    "QVLError", "InputError", "ModelLoadError", "OverloadedError", "MissingDependencyError", "RemoteError",
    "ConnectorError", "UnavailableError", "NotFoundError", "SchemaMismatchError", "PartialUpsertError",
]

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

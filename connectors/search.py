"""Search helpers every store shares: the rerank policy, query vectors, and search-then-rerank.

One policy for every store: without ``candidates``, ``max(4k, 20)`` vector hits are reranked
(:func:`rerank_candidates`); a precomputed query vector cannot be reranked
(:func:`check_rerank_query`); a candidate whose document cannot be loaded keeps its vector rank
(:func:`rerank_hits`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from embedder.contracts import EmbedderLike, RerankerLike
from embedder.errors import InputError

from .core import Hit, bad_vector_reason, document_item

log = logging.getLogger(__name__)


RERANK_NEEDS_ITEM = ("rerank needs the query item (text/image/video), not a vector: the reranker reads the query")


def default_rerank_candidates(k: int) -> int:
    """How many vector hits every store reranks when ``candidates`` is not given."""
    return max(4 * k, 20)


def rerank_candidates(k: int, candidates: int | None, *, limit: int | None = None) -> int:
    """The number of vector hits to fetch for reranking: ``candidates``, checked, or the default.

    One policy for every store: the default is :func:`default_rerank_candidates` (capped at
    the database's ``limit``); a given ``candidates`` must be an integer from ``k`` to ``limit``.

    Raises:
        InputError: ``candidates`` is not an integer, is below ``k`` or above ``limit``.
    """
    if candidates is None:
        n = max(k, default_rerank_candidates(k))
        return min(n, limit) if limit is not None else n
    if isinstance(candidates, bool) or not isinstance(candidates, (int, np.integer)):
        raise InputError(f"candidates must be an integer from k={k}"
                         f"{f' to {limit}' if limit is not None else ' up'}, got {candidates!r}")
    if candidates < k or (limit is not None and candidates > limit):
        raise InputError(f"candidates must be an integer from k={k}"
                         f"{f' to {limit}' if limit is not None else ' up'}, got {candidates!r}")
    return int(candidates)


def is_query_vector(query: Any) -> bool:
    """True for a precomputed query vector: a non-empty list, tuple or 1-d array of numbers (or a
    ``(1, dim)`` array). An image given as a pixel array is an item, not a vector."""
    if isinstance(query, np.ndarray) and query.ndim == 2 and query.shape[0] == 1:
        query = query[0]
    return (isinstance(query, (list, tuple, np.ndarray)) and len(query) > 0
            and isinstance(query[0], (int, float, np.integer, np.floating)) and not isinstance(query[0], bool))


def check_rerank_query(query: Any, rerank: RerankerLike | None) -> None:
    """Refuse a precomputed-vector query with ``rerank``, before any search (every store).

    Raises:
        InputError: ``rerank`` is given and ``query`` is a vector.
    """
    if rerank is not None and is_query_vector(query):
        raise InputError(RERANK_NEEDS_ITEM)


def query_vector(embedder: EmbedderLike | None, query: Any, dim: int, instruction: str | None = None) -> np.ndarray:
    """A query item embedded with a query instruction, or a precomputed vector checked for size."""
    if is_query_vector(query):
        vec = np.asarray(query, dtype=np.float32).reshape(-1)
        if vec.shape[0] != dim:
            raise InputError(f"query vector has {vec.shape[0]} dims, the store has {dim}")
        reason = bad_vector_reason(vec)
        if reason is not None:
            raise InputError(f"query {reason}")
        return vec
    if embedder is None:
        raise InputError("this store has no embedder: pass a query vector, or an embedder when opening it")
    return embedder.embed_queries([query], dim=dim, instruction=instruction)[0]  # None: the embedder's default


@dataclass(frozen=True)
class RerankOutcome:
    """Reranked hits and the candidates that could not be reranked (id, reason)."""

    hits: list[Hit]
    failed: list[tuple[str, str]] = field(default_factory=list)


def rerank_hits(reranker: RerankerLike, query: Any, candidates: Sequence[Hit], *, k: int,
                document_of: Callable[[Hit], Any] = lambda h: document_item(h.fields),
                instruction: str | None = None) -> RerankOutcome:
    """Rerank candidates (best vector score first) and return the best ``k``.

    A candidate whose document cannot be rebuilt or loaded keeps its vector rank: it is
    placed after every reranked candidate, in vector order, with ``rerank_score=None``,
    and reported in ``failed``; it is never dropped.
    """
    if not candidates:
        return RerankOutcome([])
    docs = []
    pre_failed: dict[int, str] = {}
    for i, hit in enumerate(candidates):
        try:
            doc = document_of(hit)
            if not doc:
                raise ValueError("no stored text or media reference to rerank with")
        except Exception as exc:  # noqa: BLE001
            doc, pre_failed[i] = {}, f"cannot rebuild document: {exc}"
        docs.append(doc)
    result = reranker.score(query, docs, instruction=instruction, on_error="skip")
    scores = result.scores if hasattr(result, "scores") else np.asarray(result)
    errors = dict(getattr(result, "errors", []))
    errors.update(pre_failed)
    reranked = sorted((i for i in range(len(candidates)) if i not in errors),
                      key=lambda i: (-float(scores[i]), i))
    order = reranked + [i for i in range(len(candidates)) if i in errors]
    hits = []
    for i in order[:k]:
        c = candidates[i]
        rs = None if i in errors else float(scores[i])
        hits.append(Hit(id=c.id, score=c.score, rerank_score=rs, fields=c.fields))
    failed = [(candidates[i].id, errors[i]) for i in sorted(errors)]
    for cid, reason in failed:
        log.warning("rerank: candidate %s kept at its vector rank: %s", cid, reason)
    return RerankOutcome(hits, failed)

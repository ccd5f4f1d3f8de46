"""Vector quantization: the one option name every store takes, and the exact numpy reference.

``quantization=`` is one of :data:`PRECISIONS`:

=========  ==========================================================================
float32    the vectors as embedded (4 bytes a dimension); the default
float16    half precision (2 bytes a dimension); cosine on the half-precision values
int8       symmetric *global* scalar quantization (1 byte a dimension): every component
           is ``round(x * 127 / m)`` with ``m`` the largest ``|x|`` of the vectors
           encoded together. The query stays float (asymmetric), and the score is the
           cosine between the query and the decoded vector, which a global (or a per-row)
           scale does not change. A store's own int8 differs in how it picks the range:
           Faiss ``SQ8`` and Milvus ``IVF_SQ8`` train a min/max *per dimension*, Qdrant's
           scalar quantization clips at a quantile of all components, Weaviate's SQ a
           trained global range; their recall is close to this one, not equal.
binary     one sign bit a dimension (``x > 0``), packed 8 to a byte; the query is
           binarised too and candidates are ranked by Hamming distance, then the best
           ``RESCORE_OVERSAMPLING * k`` candidates are re-scored with the float vectors
           wherever the store keeps them (every store here does), so the final scores
           are cosines. :func:`similarities` gives the binary stage alone
           (``1 - 2 * hamming / dim``), :func:`reference_search` the whole of it.
=========  ==========================================================================

:func:`encode` gives the stored form of L2-normalised float32 vectors, :func:`similarities`
what an exact index over that stored form computes (higher is better), and
:func:`bytes_per_vector` the stored bytes of one vector's index entry (the float copy kept for
re-scoring binary candidates is not counted).

A store that cannot honour an option refuses it at ``create`` with
:class:`QuantizationUnsupportedError`, naming the store, the option and what it offers.

Example:
    >>> import numpy as np
    >>> v = np.array([[0.6, -0.8], [1.0, 0.0]], dtype=np.float32)
    >>> encode(v, "binary").tolist()
    [[128], [128]]
    >>> bytes_per_vector(2048, "int8"), bytes_per_vector(2048, "binary")
    (2048, 256)
"""
from __future__ import annotations

import numpy as np

from embedder.errors import ConnectorError, InputError

PRECISIONS = ("float32", "float16", "int8", "binary")

#: Binary candidates fetched per wanted hit before re-scoring with the float vectors.
RESCORE_OVERSAMPLING = 4


class QuantizationUnsupportedError(ConnectorError, ValueError):
    """The store (or this deployment of it, e.g. Milvus Lite) cannot honour the quantization asked for."""


def check_precision(value: str | None) -> str:
    """The quantization option, checked: None means ``"float32"``.

    Raises:
        InputError (a ValueError): not one of :data:`PRECISIONS`; the message lists them.
    """
    if value is None:
        return "float32"
    if not isinstance(value, str) or value.lower() not in PRECISIONS:
        raise InputError(f"quantization must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value.lower()


def unsupported(store: str, precision: str, offered: tuple[str, ...] | list[str], why: str = "") -> \
        QuantizationUnsupportedError:
    """The error a store raises at ``create`` for an option it cannot honour (the caller raises it)."""
    because = f": {why}" if why else ""
    return QuantizationUnsupportedError(
        f"{store} cannot store vectors with quantization={precision!r}{because}; it offers "
        f"{', '.join(repr(p) for p in offered)}")


def encode(vectors: np.ndarray, precision: str) -> np.ndarray:
    """The stored form of ``vectors`` ((n, d) float32, L2-normalised).

    Returns:
        float32: the vectors as float32; float16: float16; int8: int8 with one global symmetric
        scale (see the module docstring); binary: uint8 of shape (n, ceil(d / 8)), sign bits
        packed big-endian (``np.packbits``), a bit set where the component is > 0.
    """
    precision = check_precision(precision)
    x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if precision == "float32":
        return x.copy()
    if precision == "float16":
        return x.astype(np.float16)
    if precision == "int8":
        m = float(np.abs(x).max()) if x.size else 0.0
        scale = 127.0 / m if m > 0 else 1.0
        return np.clip(np.rint(x * scale), -127, 127).astype(np.int8)
    return np.packbits(x > 0, axis=1)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return x / norms


def similarities(query: np.ndarray, stored: np.ndarray, precision: str) -> np.ndarray:
    """What an exact index over the stored form computes between a float query and each stored row.

    Args:
        query: (d,) or (m, d) float query vector(s).
        stored: :func:`encode`'s output for ``precision``.

    Returns:
        (n,) or (m, n) scores, higher is better: the cosine between the query and the decoded
        stored vector (float32, float16, int8), or ``1 - 2 * hamming / d`` between the query's
        sign bits and the stored ones (binary; 1.0 for identical bits, -1.0 for opposite).
    """
    precision = check_precision(precision)
    q = np.asarray(query, dtype=np.float32)
    single = q.ndim == 1
    q2 = np.atleast_2d(q)
    if precision == "binary":
        dim = q2.shape[1]
        qbits = np.packbits(q2 > 0, axis=1)
        stored = np.atleast_2d(np.asarray(stored, dtype=np.uint8))
        if stored.shape[1] != qbits.shape[1]:
            raise InputError(f"stored binary vectors have {stored.shape[1]} bytes, a {dim}-dim query "
                             f"packs to {qbits.shape[1]}")
        hamming = np.unpackbits(qbits[:, None, :] ^ stored[None, :, :], axis=2).sum(axis=2)
        out = 1.0 - 2.0 * hamming.astype(np.float32) / dim
    else:
        decoded = np.atleast_2d(np.asarray(stored)).astype(np.float32)
        out = _unit(q2) @ _unit(decoded).T
    return out[0] if single else out


def reference_search(query: np.ndarray, vectors: np.ndarray, k: int, precision: str, *,
                     stored: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` over the quantized vectors, as the memory store searches: row indices and scores.

    ``binary`` ranks by Hamming distance, keeps ``RESCORE_OVERSAMPLING * k`` candidates and
    re-scores them with the float ``vectors`` (cosine). ``stored`` (``encode(vectors, precision)``)
    may be passed to avoid encoding again. Ties keep the row order.
    """
    precision = check_precision(precision)
    vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    stored = encode(vectors, precision) if stored is None else stored
    scores = similarities(np.asarray(query, dtype=np.float32).reshape(-1), stored, precision)
    if precision != "binary":
        order = np.argsort(-scores, kind="stable")[:k]
        return order, scores[order].astype(np.float32)
    candidates = np.argsort(-scores, kind="stable")[:RESCORE_OVERSAMPLING * k]
    exact = similarities(query, vectors[candidates], "float32")
    order = candidates[np.argsort(-exact, kind="stable")[:k]]
    return order, similarities(query, vectors[order], "float32").astype(np.float32)


def bytes_per_vector(dim: int, precision: str) -> int:
    """Bytes of one vector's index entry at ``dim`` (binary: ``ceil(dim / 8)``; the float copy
    a store keeps for re-scoring is not counted)."""
    precision = check_precision(precision)
    dim = int(dim)
    return {"float32": 4 * dim, "float16": 2 * dim, "int8": dim, "binary": (dim + 7) // 8}[precision]

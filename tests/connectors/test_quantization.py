"""The ``quantization=`` store option on every store, and the numpy reference it is measured against.

Per store: each option it honours round-trips (create, upsert, planted vectors find themselves,
the collection remembers the option when reopened without it and refuses another), each option it
cannot honour is refused at ``create`` with a message naming the store, the option and what it offers.
"""
from __future__ import annotations

import contextlib
import importlib

import numpy as np
import pytest

import connectors
from connectors import quantization as qz
from connectors.quantization import PRECISIONS, QuantizationUnsupportedError
from embedder.errors import InputError, NotFoundError, SchemaMismatchError
from tests.connectors.test_contract import BACKENDS, MEMORY_SPACE, _new_store

DIM = 64

# What each store honours (the README's table); everything else must be refused at create.
SUPPORTED = {
    "memory": PRECISIONS,
    "pgvector": ("float32", "float16", "binary"),
    "weaviate": ("float32", "int8", "binary"),
    "milvus": ("float32", "float16", "int8"),  # HNSW_SQ; Milvus Lite has no BINARY_VECTOR
    "qdrant": PRECISIONS,
    "faiss": PRECISIONS,
}
CASES = [(b, p) for b in BACKENDS for p in PRECISIONS]


# ---------------------------------------------------------------------------- the reference
def test_reference_on_hand_made_vectors():
    v = np.array([[0.6, -0.8, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [-0.6, 0.8, 0.0, 0.0]], dtype=np.float32)
    assert qz.check_precision(None) == "float32" and qz.check_precision("INT8") == "int8"
    with pytest.raises(ValueError, match="float32, float16, int8, binary"):
        qz.check_precision("int4")
    assert qz.encode(v, "float16").dtype == np.float16
    assert qz.encode(v, "int8").tolist() == [[76, -102, 0, 0], [0, 0, 127, 0], [-76, 102, 0, 0]]  # one scale: 127 / max|x|
    assert qz.encode(v, "binary").tolist() == [[0b1000_0000], [0b0010_0000], [0b0100_0000]]
    q = np.array([0.6, -0.8, 0.0, 0.0], dtype=np.float32)
    np.testing.assert_allclose(qz.similarities(q, qz.encode(v, "float32"), "float32"), [1, 0, -1], atol=1e-6)
    np.testing.assert_allclose(qz.similarities(q, qz.encode(v, "int8"), "int8"), [1, 0, -1], atol=1e-3)
    # sign bits 1000 vs 1000, 0010, 0100: Hamming 0, 2, 2 of 4 -> 1 - 2 * h / 4
    np.testing.assert_allclose(qz.similarities(q, qz.encode(v, "binary"), "binary"), [1, 0, 0])
    order, scores = qz.reference_search(q, v, 2, "binary")
    assert order.tolist() == [0, 1] and scores[0] == pytest.approx(1.0)  # re-scored with the floats
    assert [qz.bytes_per_vector(100, p) for p in PRECISIONS] == [400, 200, 100, 13]


# ---------------------------------------------------------------------------- the stores
def _planted(n: int = 40) -> np.ndarray:
    rng = np.random.default_rng(7)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@contextlib.contextmanager
def _created(backend, tmp_path, name, precision):
    """A store created with ``quantization=precision``; dropped afterwards."""
    if backend == "memory":
        store = connectors.connect(MEMORY_SPACE, collection=name, dim=DIM, quantization=precision)
        store.drop()
        try:
            store.create()
            yield store
        finally:
            store.drop()
        return
    module = importlib.import_module(f"tests.connectors.backend_{backend}")
    with module.open_test_store(tmp_path, name, embedder=None, dim=DIM, quantization=precision) as store:
        yield store


def _reopen(backend, tmp_path, name, **kwargs):
    store = _new_store(backend, tmp_path, name, embedder=None, dim=None, **kwargs)
    if backend == "memory":
        return store
    store.count()  # a store that adopts the collection lazily does it here
    return store


@pytest.mark.parametrize("backend,precision", CASES)
def test_quantization_round_trips_or_is_refused(backend, precision, tmp_path, request):
    name = f"quant_{backend}_{precision}"
    if precision not in SUPPORTED[backend]:
        with pytest.raises(QuantizationUnsupportedError) as info, _created(backend, tmp_path, name, precision):
            pass
        message = str(info.value)
        assert backend in message.lower() and repr(precision) in message and "offers" in message
        return
    vectors = _planted()
    with _created(backend, tmp_path, name, precision) as store:
        assert store.quantization == precision
        report = store.upsert([{"id": f"r{i}", "vector": v} for i, v in enumerate(vectors)])
        assert report.ok and store.count() == len(vectors)
        noise = np.random.default_rng(1).normal(scale=0.02, size=(5, DIM)).astype(np.float32)
        for i, q in zip(range(0, 40, 8), vectors[0:40:8] + noise):
            hits = store.search(q, k=3)
            assert hits[0].id == f"r{i}", (backend, precision, [h.id for h in hits])
            assert hits[0].score == pytest.approx(1.0, abs=0.05)  # a cosine (binary: re-scored with floats)
        with contextlib.closing(_reopen(backend, tmp_path, name)) as again:  # the collection remembers it
            assert again.quantization == precision
            assert again.search(vectors[3], k=1)[0].id == "r3"
        other = next(p for p in SUPPORTED[backend] if p != precision)
        with pytest.raises(SchemaMismatchError, match="quantization"):
            _reopen(backend, tmp_path, name, quantization=other).close()


def test_unknown_quantization_is_an_input_error():
    with pytest.raises(InputError, match="float32, float16, int8, binary"):
        connectors.connect("memory:", dim=DIM, quantization="int4")
    store = connectors.connect("memory:", dim=DIM, quantization="binary")
    with pytest.raises(NotFoundError):
        store.count()

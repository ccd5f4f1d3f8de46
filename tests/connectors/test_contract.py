"""One behavioural suite for every backend, and congruence with the exact numpy store.

Each backend module ``tests/connectors/backend_<name>.py`` provides
``open_test_store(tmp_path, name, *, embedder, dim, **kwargs)``; adding a database adds
one module and one entry in :data:`BACKENDS`.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re

import numpy as np
import pytest

import connectors
from connectors.core import NONFINITE_VECTOR, ZERO_VECTOR
from connectors.search import RERANK_NEEDS_ITEM
from embedder.errors import InputError, NotFoundError, SchemaMismatchError


# backend -> open_store kwargs that make its index exact for the congruence test
BACKENDS = {
    "memory": {},
    "milvus": {"index": "FLAT"},
    "pgvector": {},
    "weaviate": {},
}
# A store added later is one more backend module, tests/connectors/backend_<name>.py (with
# open_test_store, new_store and EXACT, the kwargs for an exact index): it joins the suite here.
for _name in ("qdrant", "faiss"):
    if importlib.util.find_spec(f"tests.connectors.backend_{_name}") is not None:
        BACKENDS[_name] = importlib.import_module(f"tests.connectors.backend_{_name}").EXACT
DIM = 64
MEMORY_SPACE = "memory://contract"  # a named space: a collection can be opened again, as on a database


@contextlib.contextmanager
def open_store(backend: str, tmp_path, name: str, *, embedder, dim: int, **kwargs):
    if backend == "memory":
        store = connectors.connect(MEMORY_SPACE, collection=name, embedder=embedder, dim=dim)
        store.drop()
        store.create(fields=kwargs.get("fields"))
        yield store
        connectors.connect(MEMORY_SPACE, collection=name, dim=dim).drop()  # the test may have closed it
        return
    module = importlib.import_module(f"tests.connectors.backend_{backend}")
    with module.open_test_store(tmp_path, name, embedder=embedder, dim=dim, **kwargs) as store:
        yield store


@pytest.fixture(params=list(BACKENDS))
def backend(request):
    return request.param


@pytest.fixture()
def store(backend, tmp_path, request, embedder):
    with open_store(backend, tmp_path, "contract_" + request.node.name, embedder=embedder, dim=DIM,
                    fields={"color": str}) as s:
        yield s


def test_is_a_store(store):
    assert isinstance(store, connectors.Store)
    assert store.dim == DIM and store.count() == 0


def test_mixed_rows_land_and_bad_rows_are_reported(store, image_files, tmp_path):
    rows = [
        {"id": "text", "text": "a red car", "color": "red"},
        {"id": "image", "image": image_files[0], "color": "blue"},
        {"id": "fused", "text": "a caption", "image": image_files[1], "color": "red"},
        {"id": "vector", "vector": np.full(DIM, 0.125, dtype=np.float32), "text": "precomputed", "color": "green"},
        {"id": "missing", "image": str(tmp_path / "gone.png"), "color": "red"},
    ]
    report = store.upsert(rows)
    assert sorted(report.written) == ["fused", "image", "text", "vector"]
    assert [rid for rid, _ in report.failed] == ["missing"]
    assert "file not found" in report.failed[0][1]
    assert store.count() == 4
    again = store.upsert(rows[:4])
    assert again.ok and store.count() == 4


def test_items_find_themselves_with_their_fields(store, embedder, image_files):
    rows = [{"id": "t", "text": "a red car", "color": "red"},
            {"id": "i", "image": image_files[0], "color": "blue"},
            {"id": "f", "text": "a caption", "image": image_files[2], "color": "red"}]
    assert store.upsert(rows).ok
    for row in rows:
        item = {k: v for k, v in row.items() if k in ("text", "image")}
        vec = embedder.embed_documents([item], dim=DIM)[0]
        hit = store.search(vec, k=1)[0]
        assert hit.id == row["id"] and hit.score == pytest.approx(1.0, abs=1e-3)
        assert hit.rerank_score is None
        assert hit.fields["color"] == row["color"]
        assert hit.fields.get("text") == row.get("text")
    assert store.search(embedder.embed_documents([{"image": image_files[0]}], dim=DIM)[0], k=1)[0].fields[
        "media"] == image_files[0]


def test_search_then_rerank_gives_both_scores(store, reranker):
    store.upsert([{"id": str(i), "text": t, "color": "x"} for i, t in enumerate(
        ["a red car", "a blue car", "stock market", "weather today", "red apples", "a red bicycle"])])
    hits = store.search("red car", k=3, rerank=reranker, candidates=6)
    assert len(hits) == 3
    assert all(h.rerank_score is not None and 0 < h.rerank_score < 1 for h in hits)
    assert [h.rerank_score for h in hits] == sorted((h.rerank_score for h in hits), reverse=True)
    plain = {h.id: h.score for h in store.search("red car", k=6)}
    for h in hits:
        assert h.score == pytest.approx(plain[h.id], abs=1e-3)


class CountingReranker:
    """The session reranker, recording how many documents each call asked it to score."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.asked: list[int] = []

    def score(self, query, documents, **kwargs):
        self.asked.append(len(documents))
        return self.inner.score(query, documents, **kwargs)


def _vector_rows(n: int, seed: int = 5) -> list[dict]:
    rng = np.random.RandomState(seed)
    return [{"id": f"v{i}", "vector": rng.normal(size=DIM).astype(np.float32), "text": f"row {i}", "color": "c"}
            for i in range(n)]


def test_one_default_number_of_rerank_candidates(store, reranker):
    """Without ``candidates``, every store reranks max(4k, 20) vector hits."""
    assert store.upsert(_vector_rows(30)).ok
    counting = CountingReranker(reranker)
    assert len(store.search("row 3", k=2, rerank=counting)) == 2
    assert len(store.search("row 3", k=6, rerank=counting)) == 6
    assert len(store.search("row 3", k=3, rerank=counting, candidates=7)) == 3
    assert counting.asked == [20, 24, 7]


def test_rerank_misuse_is_an_input_error_before_any_search(store, reranker):
    """``candidates`` below k, or a precomputed query vector with ``rerank``: InputError on every store."""
    assert store.upsert(_vector_rows(3)).ok
    counting = CountingReranker(reranker)
    for bad in (4, 2.5, "9"):
        with pytest.raises(InputError, match=rf"candidates must be an integer from k=5.*got {bad!r}"):
            store.search("row 1", k=5, rerank=counting, candidates=bad)
    # an all-zero vector is refused too, later: the rerank check comes first, before any search
    for vector in (np.zeros(DIM, dtype=np.float32), [0.0] * DIM, np.ones((1, DIM))):
        with pytest.raises(InputError, match=re.escape(RERANK_NEEDS_ITEM)):
            store.search(vector, k=1, rerank=counting)
    assert counting.asked == []
    assert [h.id for h in store.search("row 1", k=3, rerank=counting, candidates=3)]  # the store still works


@pytest.mark.parametrize("declared", [{"color": str}, None], ids=["declared", "none"])
def test_undeclared_top_level_keys_go_to_metadata(backend, tmp_path, request, declared):
    """One field policy: declared fields are fields; every other top-level key lands in metadata."""
    vec = np.random.RandomState(3).normal(size=DIM).astype(np.float32)
    rows = [{"id": "p", "vector": vec, "text": "x", "color": "red", "size": 3, "metadata": {"year": 2020}},
            {"id": "clash", "vector": -vec, "text": "y", "size": 4, "metadata": {"size": 5}}]
    with open_store(backend, tmp_path, "fields_" + request.node.name, embedder=None, dim=DIM,
                    fields=declared) as store:
        report = store.upsert(rows)
        assert report.written == ["p"] and [rid for rid, _ in report.failed] == ["clash"]
        assert "undeclared field(s) ['size'] go into metadata, which already has this key" in report.failed[0][1]
        hit = store.search(vec, k=1)[0]
        assert hit.id == "p" and "size" not in hit.fields
        if declared:
            assert hit.fields["color"] == "red" and hit.fields["metadata"] == {"year": 2020, "size": 3}
        else:
            assert "color" not in hit.fields
            assert hit.fields["metadata"] == {"year": 2020, "size": 3, "color": "red"}
        assert hit.fields["text"] == "x"


def test_delete_count_drop_close(store, backend, tmp_path, request):
    from embedder.errors import ConnectorError

    vectors = np.random.RandomState(4).rand(5, DIM).astype(np.float32)
    assert store.upsert([{"id": str(i), "vector": v, "text": "x", "color": "c"} for i, v in enumerate(vectors)]).ok
    assert store.count() == 5
    store.delete(["1", "3", "does-not-exist"])
    store.delete([])
    assert store.count() == 3
    assert {h.id for h in store.search(vectors[1], k=10)} == {"0", "2", "4"}
    with contextlib.closing(_new_store(backend, tmp_path, "contract_" + request.node.name, embedder=None,
                                       dim=DIM)) as other:  # a second handle sees the same collection
        assert other.count() == 3
        other.drop()
        other.drop()  # idempotent
    for call in (store.count, lambda: store.upsert([{"id": "x", "vector": vectors[0]}])):
        with pytest.raises(NotFoundError, match="does not exist"):
            call()
    store.create(fields={"color": str})  # the same layout again
    assert store.count() == 0
    store.close()
    store.close()  # idempotent
    with pytest.raises(ConnectorError, match="closed"):
        store.count()


class CrashingEmbedder:
    """The session embedder, except that a call with the text "boom" in it raises (as a batch that runs out
    of memory would) instead of reporting a per-item error."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.calls: list[int] = []

    def embed_documents(self, items, **kwargs):
        self.calls.append(len(items))
        if any(item.get("text") == "boom" for item in items):
            raise RuntimeError("CUDA out of memory")
        return self.inner.embed_documents(items, **kwargs)


def test_a_row_that_crashes_its_batch_fails_alone(backend, tmp_path, request, embedder):
    """A batch whose embedding call raised is embedded row by row: the culprit fails (not transient)."""
    crashing = CrashingEmbedder(embedder)
    with open_store(backend, tmp_path, "crash_" + request.node.name, embedder=crashing, dim=DIM) as store:
        report = store.upsert([{"id": "a", "text": "one"}, {"id": "b", "text": "boom"},
                               {"id": "c", "text": "three"}, {"id": "d", "vector": np.ones(DIM)}])
        assert sorted(report.written) == ["a", "c", "d"] and store.count() == 3
        assert report.failed == [("b", "embedding failed: RuntimeError: CUDA out of memory")]
        assert report.failed[0].stage == "embed" and not report.failed[0].transient
        assert crashing.calls == [3, 1, 1, 1]


def test_congruence_with_the_exact_store(backend, tmp_path, request):
    """Same rows, same queries: every backend returns the exact top-k of the numpy oracle."""
    rng = np.random.RandomState(42)
    vectors = rng.normal(size=(40, DIM)).astype(np.float32)
    queries = rng.normal(size=(5, DIM)).astype(np.float32)
    rows = [{"id": f"r{i}", "vector": v, "text": f"row {i}"} for i, v in enumerate(vectors)]
    oracle = connectors.connect("memory:", dim=DIM)
    oracle.create()
    oracle.upsert(rows)
    with open_store(backend, tmp_path, "congruence_" + request.node.name, embedder=None, dim=DIM,
                    **BACKENDS[backend]) as store:
        report = store.upsert(rows)
        assert report.ok and store.count() == 40
        for q in queries:
            expected = oracle.search(q, k=5)
            got = store.search(q, k=5)
            assert [h.id for h in got] == [h.id for h in expected]
            assert np.allclose([h.score for h in got], [h.score for h in expected], atol=1e-3)


def test_existing_ids(store):
    store.upsert([{"id": f"e{i}", "vector": np.random.RandomState(i).rand(DIM), "text": "x", "color": "c"}
                  for i in range(3)])
    assert store.existing_ids(["e0", "e2", "nope"]) == {"e0", "e2"}
    assert store.existing_ids([]) == set()


def test_zero_and_nonfinite_vectors_are_bad_rows(store):
    """Cosine similarity is undefined for an all-zero vector: such a row fails, naming its id."""
    rng = np.random.RandomState(11)
    good = rng.rand(2, DIM).astype(np.float32)
    nan = good[0].copy()
    nan[3] = np.nan
    rows = [{"id": "good", "vector": good[0], "text": "x", "color": "c"},
            {"id": "zero", "vector": np.zeros(DIM, dtype=np.float32), "text": "x", "color": "c"},
            {"id": "negzero", "vector": [-0.0] * DIM, "text": "x", "color": "c"},
            {"id": "nan", "vector": nan, "text": "x", "color": "c"}]
    report = store.upsert(rows)  # vectors only: the bulk path (pgvector streams it)
    assert report.written == ["good"]
    assert dict(report.failed) == {"zero": ZERO_VECTOR, "negzero": ZERO_VECTOR, "nan": NONFINITE_VECTOR}
    mixed = [{"id": "text", "text": "a red car", "color": "c"},  # embedded with the rows below
             {"id": "zero2", "vector": np.zeros(DIM, dtype=np.float32), "text": "x", "color": "c"},
             {"id": "good2", "vector": good[1], "text": "x", "color": "c"}]
    report = store.upsert(mixed)
    assert sorted(report.written) == ["good2", "text"] and report.failed == [("zero2", ZERO_VECTOR)]
    assert store.count() == 3 and store.existing_ids(["zero", "negzero", "nan", "zero2"]) == set()
    with pytest.raises(InputError, match=r"query vector is all zeros \(cosine similarity is undefined\)"):
        store.search(np.zeros(DIM, dtype=np.float32), k=1)


def _new_store(backend: str, tmp_path, name: str, *, embedder, dim: int | None, **kwargs):
    """A store object for a collection (table) that does not exist yet, on the backend's server."""
    if backend == "memory":
        return connectors.connect(MEMORY_SPACE, collection=name, embedder=embedder, dim=dim, **kwargs)
    if backend == "milvus":
        from tests.connectors.backend_milvus import collection_name, target_for

        return connectors.connect(target_for(tmp_path), collection=collection_name(name), embedder=embedder,
                                  dim=dim, **kwargs)
    if backend not in ("milvus", "weaviate", "pgvector"):  # a backend module of a later store
        return importlib.import_module(f"tests.connectors.backend_{backend}").new_store(
            tmp_path, name, embedder=embedder, dim=dim, **kwargs)
    if backend == "weaviate":
        from tests.connectors.backend_weaviate import test_collection_name, test_server

        return connectors.connect(test_server().target, collection=test_collection_name(name),
                                  embedder=embedder, dim=dim, **kwargs)
    from tests.connectors.backend_pgvector import table_name
    from tests.connectors.postgres_server import basetemp_of, test_server

    return connectors.connect(test_server(basetemp_of(tmp_path)).dsn, table=table_name(name),
                              embedder=embedder, dim=dim, **kwargs)


@pytest.mark.parametrize("dim", [10, 63, 256])  # the tiny checkpoint's full dim is 128
def test_a_dim_outside_the_model_range_creates_nothing(backend, tmp_path, request, embedder, dim):
    name = "dim_" + request.node.name
    failed = None
    with pytest.raises(InputError, match=rf"dim .*64.*128.*{dim}"):
        failed = _new_store(backend, tmp_path, name, embedder=embedder, dim=dim)  # may raise here already
        try:
            failed.create(fields={"color": str})
        finally:
            if backend != "memory":  # an in-memory store is its own data: look at it below
                failed.close()
    # a store opened afterwards (the same object for the in-memory one) finds nothing
    after = failed if backend == "memory" else _new_store(backend, tmp_path, name, embedder=embedder, dim=DIM)
    with contextlib.closing(after):
        with pytest.raises(NotFoundError):
            after.count()


# ---------------------------------------------------------------------------- the portable filter
FILTER_FIELDS = {"color": str, "price": int, "weight": float, "flag": bool}
QUOTED = 'say "hi" \\ it\'s'


def _filter_rows() -> list[dict]:
    rng = np.random.RandomState(7)
    colors = ["red", "blue", "green", None, QUOTED, "red"]
    rows = []
    for i in range(12):
        row = {"id": f"f{i}", "vector": rng.normal(size=DIM).astype(np.float32), "text": f"row {i}",
               "price": None if i == 4 else i * 5, "weight": [0.5, 1.5, 2.25, 3.25][i % 4],
               "flag": None if i == 7 else i % 3 == 0,
               "metadata": {"year": 2018 + i % 5, "tag": "xyz"[i % 3], "score": i / 8,
                            "code": 5 if i % 2 else "5", **({"note": QUOTED, QUOTED: i} if i in (2, 9) else {})}}
        if colors[i % 6] is not None:
            row["color"] = colors[i % 6]
        if i == 11:
            del row["metadata"]["year"]  # a missing key matches nothing, $ne included
        rows.append(row)
    return rows


FILTERS = [
    {"color": "red"},
    {"color": {"$eq": "blue"}},
    {"color": {"$in": ["red", "green"]}},
    {"color": {"$ne": "red"}},  # rows without a color do not match
    {"price": {"$gt": 10, "$lte": 40}},
    {"price": {"$gt": 12.5}},  # a float bound on an int field
    {"price": 15.0},
    {"weight": {"$gte": 1.5, "$lt": 3.25}},
    {"weight": 2.25},
    {"flag": True},
    {"flag": {"$ne": True}},
    {"color": "red", "flag": True},
    {"$and": [{"color": {"$in": ["red", "blue"]}}, {"price": {"$lt": 40}}]},
    {"$or": [{"color": "green"}, {"year": {"$gte": 2021}}]},
    {"$or": [{"$and": [{"color": "red"}, {"flag": False}]}, {"tag": {"$in": ["y", "z"]}, "weight": 0.5}]},
    {"year": 2020},
    {"year": {"$ne": 2020}},
    {"year": {"$in": [2018, 2022]}},
    {"score": {"$lt": 0.5}},
    {"score": 0.25},
    {"code": 5},
    {"code": "5"},
    {"code": {"$ne": 5}},
    {"tag": "x", "year": {"$gte": 2019}},
    {"color": QUOTED},
    {"note": QUOTED},
    {QUOTED: {"$gt": 2}},  # a metadata key with quotes and a backslash
    {"color": 'x" or color != "'},  # a value that would break a spliced expression
    {"text": "row 3"},
    {},
]


def test_portable_filters_agree_with_the_exact_store(backend, tmp_path, request):
    """Every filter of the table gives, on every store, the ids (in order) of the exact memory store."""
    from connectors.filters import matches, parse

    rows = _filter_rows()
    query = np.random.RandomState(8).normal(size=DIM).astype(np.float32)
    oracle = connectors.connect("memory:", dim=DIM)
    oracle.create(fields=FILTER_FIELDS)
    assert oracle.upsert(rows).ok
    with open_store(backend, tmp_path, "filters_" + request.node.name, embedder=None, dim=DIM,
                    fields=FILTER_FIELDS, **BACKENDS[backend]) as store:
        assert store.upsert(rows).ok
        for flt in FILTERS:
            expected = [h.id for h in oracle.search(query, k=len(rows), filter=flt)]
            # the oracle is the reference evaluator applied to the rows as given
            node = parse(flt, FILTER_FIELDS)
            assert set(expected) == {r["id"] for r in rows if matches(node, {**r, "metadata": r["metadata"]})}
            got = [h.id for h in store.search(query, k=len(rows), filter=flt)]
            assert got == expected, f"{backend} filter {flt}"
            if len(expected) > 1:  # k smaller than the matches: the best k of them
                assert [h.id for h in store.search(query, k=1, filter=flt)] == expected[:1], f"{backend} {flt}"
        assert all(len([h for h in oracle.search(query, k=12, filter=f)]) < 12 for f in FILTERS[:-1])


BAD_FILTERS = [
    ({"color": ["red", "blue"]}, r"'color'.*\$in"),
    ({"color": {"$like": "r%"}}, r"'color'.*unknown operator '\$like'.*\$in"),
    ({"price": {"$gt": "10"}}, r"'price'.*\$gt takes a number"),
    ({"price": "ten"}, r"'price'.*the field is int"),
    ({"color": {"$eq": {"a": 1}}}, r"'color'.*\$eq takes a str, int, float or bool"),
    ({"year": {"$in": 2020}}, r"'year'.*\$in takes a non-empty list"),
    ({"year": {"$in": [[2020]]}}, r"'year'.*\$in takes a str"),
    ({"$or": []}, r"\$or takes a non-empty list"),
    ({"$nor": [{"color": "red"}]}, r"unknown filter operator '\$nor'"),
    ({"weight": float("nan")}, r"'weight'.*finite"),
    ({"id": "f1"}, r"'id' cannot be filtered"),
    ({"color": {"$in": ["red"] * 1001}}, r"'color'.*at most 1000"),
    ({"price": {"$lt": 2**64}}, r"'price'.*64-bit integer"),
]
_deep: dict = {"color": "red"}
for _ in range(40):
    _deep = {"$or": [_deep]}
BAD_FILTERS.append((_deep, "deeper than 32"))


def test_bad_portable_filters_are_input_errors(backend, tmp_path, request):
    """A bad filter is an InputError naming the key and what is allowed, on every store."""
    with open_store(backend, tmp_path, "badfilter_" + request.node.name, embedder=None, dim=DIM,
                    fields=FILTER_FIELDS) as store:
        for flt, message in BAD_FILTERS:
            with pytest.raises(InputError, match=message):
                store.search(np.ones(DIM, dtype=np.float32), k=1, filter=flt)


# ---------------------------------------------------------------------------- ids, vectors
def test_ids_that_collide_within_a_batch_keep_the_last_row(store):
    rng = np.random.RandomState(21)
    first, last = rng.normal(size=(2, DIM)).astype(np.float32)
    report = store.upsert([{"id": "same", "vector": first, "text": "first", "color": "a"},
                           {"id": "other", "vector": -first, "text": "o", "color": "b"},
                           {"id": "same", "vector": last, "text": "last", "color": "c"}])
    assert sorted(report.written) == ["other", "same"] and report.ok
    assert store.count() == 2
    hit = store.search(last, k=1)[0]
    assert hit.id == "same" and hit.fields["text"] == "last" and hit.fields["color"] == "c"
    assert hit.score == pytest.approx(1.0, abs=1e-3)


def test_a_vector_of_another_dim_is_a_bad_row(store):
    rng = np.random.RandomState(22)
    report = store.upsert([{"id": "short", "vector": rng.rand(DIM - 1), "text": "x", "color": "c"},
                           {"id": "ok", "vector": rng.rand(DIM), "text": "y", "color": "c"}])
    assert report.written == ["ok"]
    assert report.failed == [("short", f"vector has {DIM - 1} dims, the store has {DIM}")]
    assert report.failed[0].stage == "validate" and not report.failed[0].transient


# ---------------------------------------------------------------------------- a collection remembers its vectors
@pytest.fixture(scope="session")
def other_embedder(tmp_path_factory):
    """Another tiny checkpoint (other weights): its vectors must not join the session embedder's."""
    from embedder import Embedder
    from embedder.testing import build_tiny_checkpoint

    path = build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-embedding-other"), kind="embedding", seed=7)
    with Embedder.from_pretrained(path, device="cpu") as emb:
        yield emb


def test_the_fingerprint_is_stored_and_read_back(store, backend, tmp_path, request, embedder):
    assert store.fingerprint == embedder.fingerprint()
    with contextlib.closing(_new_store(backend, tmp_path, "contract_" + request.node.name, embedder=embedder,
                                       dim=None)) as again:
        assert again.fingerprint == embedder.fingerprint() and again.dim == DIM
        assert again.fields == {"color": str} and again.count() == 0


def test_reopening_at_another_dim_is_a_schema_mismatch(store, backend, tmp_path, request, embedder):
    with pytest.raises(SchemaMismatchError, match=rf"dim {DIM}.*dim=128"):
        with contextlib.closing(_new_store(backend, tmp_path, "contract_" + request.node.name, embedder=embedder,
                                           dim=128)) as again:
            again.count()


def test_another_model_is_a_schema_mismatch_unless_allowed(store, backend, tmp_path, request, other_embedder,
                                                            embedder):
    assert store.upsert([{"id": "a", "text": "a red car", "color": "red"}]).ok
    name = "contract_" + request.node.name
    with pytest.raises(SchemaMismatchError) as err:
        with contextlib.closing(_new_store(backend, tmp_path, name, embedder=other_embedder, dim=DIM)) as again:
            again.upsert([{"id": "b", "text": "a blue car", "color": "blue"}])
    # the message names both sides
    assert "weights" in str(err.value) and embedder.fingerprint()["weights"] in str(err.value)
    assert other_embedder.fingerprint()["weights"] in str(err.value)
    assert store.count() == 1  # nothing was written
    with contextlib.closing(_new_store(backend, tmp_path, name, embedder=other_embedder, dim=DIM,
                                       allow_mismatch=True)) as allowed:
        assert allowed.count() == 1


def test_a_vector_only_collection_records_no_fingerprint(backend, tmp_path, request, embedder):
    with open_store(backend, tmp_path, "nofp_" + request.node.name, embedder=None, dim=DIM) as store:
        assert store.fingerprint is None
        with contextlib.closing(_new_store(backend, tmp_path, "nofp_" + request.node.name, embedder=embedder,
                                           dim=DIM)) as again:
            assert again.fingerprint is None and again.count() == 0


def test_a_missing_collection_is_not_found(backend, tmp_path, request):
    with contextlib.closing(_new_store(backend, tmp_path, "missing_" + request.node.name, embedder=None,
                                       dim=DIM)) as missing:
        for call in (missing.count, lambda: missing.search(np.ones(DIM), k=1),
                     lambda: missing.upsert([{"id": "a", "vector": np.ones(DIM)}]),
                     lambda: list(missing.scan())):
            with pytest.raises(NotFoundError, match="does not exist"):
                call()


# ---------------------------------------------------------------------------- scan and migrate
def _stored_rows(n: int) -> list[dict]:
    rng = np.random.RandomState(31)
    rows = []
    for i in range(n):
        row = {"id": f"m{i:03d}", "vector": rng.normal(size=DIM).astype(np.float32), "color": "rgb"[i % 3],
               "metadata": {"i": i, "tag": "t" if i % 2 else "u"}}
        if i % 4 != 1:
            row["text"] = f"row {i}"
        if i % 4 in (1, 2):
            row["image"] = f"/photos/{i}.jpg"
        if i % 4 == 3:
            row["video"] = f"/clips/{i}.mp4"
        rows.append(row)
    return rows


def _everything(store) -> dict:
    out = {}
    for page, _ in store.scan(page_size=7):
        for r in page:
            assert r.id not in out
            out[r.id] = r
    return out


def test_scan_gives_every_row_with_its_vector_page_by_page(store):
    rows = _stored_rows(17)
    assert store.upsert(rows).ok
    pages = list(store.scan(page_size=7))
    assert [len(p) for p, _ in pages] == [7, 7, 3] and pages[-1][1] is None
    seen = _everything(store)
    assert sorted(seen) == [r["id"] for r in rows]
    for row in rows:
        got = seen[row["id"]]
        assert np.allclose(got.vector, row["vector"], atol=1e-6)
        assert got.fields["color"] == row["color"] and got.fields["metadata"] == row["metadata"]
        assert got.fields.get("text") == row.get("text")
        assert got.fields["media"] == (row.get("image") or row.get("video"))
    rest = [r.id for p, _ in store.scan(page_size=7, cursor=pages[0][1]) for r in p]
    assert sorted(rest) == sorted(set(seen) - {r.id for r in pages[0][0]})


@pytest.mark.parametrize("target", list(BACKENDS))
def test_migrate_copies_a_collection_without_re_embedding(backend, target, tmp_path, request, embedder):
    from connectors.migrate import migrate

    rows = _stored_rows(23)
    name = request.node.name
    with open_store(backend, tmp_path, "src_" + name, embedder=embedder, dim=DIM, fields={"color": str}) as src:
        assert src.upsert(rows).ok
        dst = _new_store(target, tmp_path, "dst_" + name, embedder=None, dim=DIM)
        try:
            dst.drop()
            report = migrate(src, dst, page_size=10)
            assert sorted(report.written) == [r["id"] for r in rows] and report.ok
            assert dst.count() == 23 and dst.fields == {"color": str}
            assert dst.fingerprint == src.fingerprint == embedder.fingerprint()
            a, b = _everything(src), _everything(dst)
            assert sorted(a) == sorted(b)
            for rid in a:
                assert np.allclose(a[rid].vector, b[rid].vector, atol=1e-6)
                assert {k: v for k, v in a[rid].fields.items() if v is not None} == \
                    {k: v for k, v in b[rid].fields.items() if v is not None}
            q = rows[5]["vector"]
            assert [h.id for h in dst.search(q, k=5)] == [h.id for h in src.search(q, k=5)]
        finally:
            dst.drop()
            dst.close()


def test_migrate_resumes_after_the_last_page_that_landed(backend, tmp_path, request, embedder):
    from connectors.migrate import migrate

    rows = _stored_rows(25)
    state = tmp_path / "copy.json"
    with open_store("memory", tmp_path, "resume_src_" + request.node.name, embedder=embedder, dim=DIM,
                    fields={"color": str}) as src:
        assert src.upsert(rows).ok
        dst = _new_store(backend, tmp_path, "resume_dst_" + request.node.name, embedder=None, dim=DIM)
        try:
            dst.drop()

            def interrupt(progress):
                if progress.pages == 2:
                    raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                migrate(src, dst, page_size=10, state=state, on_progress=interrupt)
            assert dst.count() == 20
            report = migrate(src, dst, page_size=10, state=state)
            assert sorted(report.written) == [r["id"] for r in rows[20:]] and dst.count() == 25
            assert migrate(src, dst, page_size=10, state=state).written == []  # done: nothing left
        finally:
            dst.drop()
            dst.close()


def test_create_again_needs_exist_ok_and_the_same_fields(store, backend, tmp_path, request, embedder):
    from embedder.errors import ConnectorError

    with pytest.raises(ConnectorError, match="already exists; pass exist_ok=True"):
        store.create(fields={"color": str})
    store.create(fields={"color": str}, exist_ok=True)
    store.create(exist_ok=True)  # no fields given: nothing to compare
    with pytest.raises(SchemaMismatchError, match=r"exists with fields \{'color': 'str'\}, not \{'color': 'int'\}"):
        store.create(fields={"color": int}, exist_ok=True)
    assert store.fields == {"color": str} and store.count() == 0


# ---------------------------------------------------------------------------- issue 20: a text-only embedder
TEXT_DIM = 32  # the text models' smallest Matryoshka dimension


def test_text_model_lands_text_rows_and_reports_media_rows(backend, tmp_path, request, text_embedder,
                                                           image_files):
    rows = [{"id": "t1", "text": "a red car", "color": "red"},
            {"id": "img", "image": image_files[0], "color": "blue"},
            {"id": "fused", "text": "a caption", "image": image_files[1], "color": "red"},
            {"id": "t2", "text": "stock market news", "color": "green"}]
    with open_store(backend, tmp_path, "text_" + request.node.name, embedder=text_embedder, dim=TEXT_DIM,
                    fields={"color": str}) as store:
        report = store.upsert(rows)
        assert sorted(report.written) == ["t1", "t2"] and store.count() == 2
        assert sorted(rid for rid, _ in report.failed) == ["fused", "img"]
        assert all("this model embeds text only" in reason for _, reason in report.failed)
        for row in (rows[0], rows[3]):
            hit = store.search(text_embedder.embed_documents([row["text"]], dim=TEXT_DIM)[0], k=1)[0]
            assert hit.id == row["id"] and hit.score == pytest.approx(1.0, abs=1e-3)
            assert hit.fields["color"] == row["color"]
        assert sorted(h.id for h in store.search("red car", k=5)) == ["t1", "t2"]  # a query, embedded as one
        assert store.fingerprint["kind"] == "text-embedding"


# ---------------------------------------------------------------------------- issue 22: the search page
def test_search_page_answers_what_store_search_answers(backend, tmp_path, request, embedder, reranker):
    """``qvl ui``'s search API on every store: the same ids, order and scores as ``store.search`` for a
    text query with a filter on a declared field, with and without reranking; an unknown field is refused."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from connectors.ui import create_app

    rows = [{"id": f"r{i}", "text": f"note {i} about {c}", "color": c}
            for i, c in enumerate(["red", "blue", "red", "green", "red", "red"])]
    with open_store(backend, tmp_path, "ui_" + request.node.name, embedder=embedder, dim=DIM,
                    fields={"color": str}) as store:
        assert store.upsert(rows).ok
        with TestClient(create_app(store, reranker=reranker)) as client:
            for extra, kwargs in (({}, {}), ({"rerank": True, "candidates": 4}, {"rerank": reranker, "candidates": 4})):
                body = {"text": "a note about red", "k": 3, "filter": {"color": "red"}, **extra}
                got = client.post("/api/search", json=body)
                assert got.status_code == 200, got.text
                want = store.search("a note about red", k=3, filter={"color": "red"}, **kwargs)
                assert [h["id"] for h in got.json()["hits"]] == [h.id for h in want]
                assert [h["score"] for h in got.json()["hits"]] == pytest.approx([h.score for h in want], abs=1e-5)
            bad = client.post("/api/search", json={"text": "x", "filter": {"colour": "red"}})
            assert bad.status_code == 400 and "unknown filter field 'colour'" in bad.json()["error"]

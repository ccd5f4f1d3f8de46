"""Milvus connector against real Milvus Lite (never a mock).

One Milvus Lite file per module (Milvus Lite starts once); every test has its own
collection, named after the test and dropped afterwards. With ``MILVUS_URI`` set, the
same tests run against that Milvus server.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="the Milvus tests need the 'milvus' extra (pymilvus, milvus-lite)")

from tests.connectors.backend_milvus import collection_name, open_test_store, target_for  # noqa: E402

from tests.conftest import make_image, skip_or_fail  # noqa: E402
from embedder.errors import (ConnectorError, InputError, NotFoundError, SchemaMismatchError,  # noqa: E402
                             UnavailableError)

DIM = 128  # the tiny checkpoint's full dim


@pytest.fixture(scope="module")
def lite_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("milvus")


@pytest.fixture()
def store_factory(lite_dir, request):
    """``make(suffix="", **kwargs)`` -> a created, empty store for this test (dropped afterwards)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        def make(suffix: str = "", *, embedder=None, dim=DIM, **kwargs):
            return stack.enter_context(open_test_store(lite_dir, request.node.name + suffix, embedder=embedder,
                                                       dim=dim, **kwargs))
        yield make


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    paths = []
    for i in range(4):
        p = d / f"img{i}.png"
        make_image(64 + 16 * i, 48 + 8 * i, seed=10 + i).save(p)
        paths.append(str(p))
    return paths


def corpus(media):
    return [
        {"id": "t0", "text": "a red apple on a table", "color": "red", "metadata": {"n": 0}},
        {"id": "t1", "text": "a blue car in the rain", "color": "blue", "metadata": {"n": 1}},
        {"id": "t2", "text": "green leaves in spring", "color": "green", "metadata": {"n": 2}},
        {"id": "i0", "image": media[0], "color": "red", "metadata": {"n": 3}},
        {"id": "i1", "image": media[1], "color": "blue", "metadata": {"n": 4}},
        {"id": "f0", "text": "a cat photo", "image": media[2], "color": "red", "metadata": {"n": 5}},
    ]


# ---------------------------------------------------------------------------- targets and arguments
def test_parse_target_forms():
    from connectors.milvus import parse_target

    assert parse_target("milvus:./x.db").uri == "./x.db" and parse_target("milvus:./x.db").lite
    assert parse_target("photos.db").lite
    assert parse_target("milvus:///abs/x.db").uri == "/abs/x.db"
    assert parse_target("milvus://host:19530").uri == "http://host:19530"
    assert parse_target("milvus+https://host:443").uri == "https://host:443"
    assert not parse_target("https://host:19530").lite
    with pytest.raises(InputError, match="must end in .db"):
        parse_target("milvus:./data")


def test_bad_arguments_name_allowed_values(lite_dir):
    from connectors.milvus import open_store

    target = target_for(lite_dir)
    with pytest.raises(InputError, match=r"'L2'.*COSINE.*IP"):
        open_store(target, collection="c", dim=64, metric="L2")
    with pytest.raises(InputError, match=r"'DISKANN'.*HNSW"):
        open_store(target, collection="c", dim=64, index="DISKANN")
    with pytest.raises(InputError, match="collection name"):
        open_store(target, collection="bad-name", dim=64)
    with pytest.raises(InputError, match="coarse_dim"):
        open_store(target, collection="c", dim=64, coarse_dim=64)


def test_unreachable_server_is_unavailable():
    from connectors.milvus import open_store

    with pytest.raises(UnavailableError, match="127.0.0.1:1"):
        open_store("http://127.0.0.1:1", collection="c", dim=64, timeout=2)


def test_connect_registry_opens_milvus_lite(lite_dir, embedder):
    import connectors
    from connectors.milvus import MilvusStore

    if os.environ.get("MILVUS_URI"):
        pytest.skip("checks the Milvus Lite target forms")
    name = collection_name("test_connect_registry")
    with connectors.connect(str(lite_dir / "milvus.db"), collection=name, embedder=embedder) as store:
        assert isinstance(store, MilvusStore) and isinstance(store, connectors.Store)
        assert store.dim == DIM  # the embedder's full dim by default
        store.create()
        try:
            assert store.client.has_collection(name)
        finally:
            store.drop()
        store.close()  # idempotent


# ---------------------------------------------------------------------------- schema
@pytest.mark.parametrize("dim", [64, 128])
def test_create_schema_at_dim(store_factory, embedder, dim):
    store = store_factory(embedder=embedder, dim=dim, fields={"color": str, "n": int, "price": float, "ok": bool})
    desc = store.client.describe_collection(store.collection)
    types = {f["name"]: getattr(f["type"], "name", str(f["type"])) for f in desc["fields"]}
    assert types == {"id": "VARCHAR", "vector": "FLOAT_VECTOR", "text": "VARCHAR", "media": "VARCHAR",
                     "modality": "VARCHAR", "metadata": "JSON", "color": "VARCHAR", "n": "INT64",
                     "price": "DOUBLE", "ok": "BOOL"}
    vec = next(f for f in desc["fields"] if f["name"] == "vector")
    assert vec["params"]["dim"] == dim and store.dim == dim
    assert store.client.describe_index(store.collection, "vector")["metric_type"] == "COSINE"
    assert str(store.client.get_load_state(store.collection)["state"]).endswith("Loaded")
    assert store.count() == 0
    report = store.upsert([{"id": "a", "text": "hello", "color": "x", "n": 1, "price": 2.5, "ok": True}])
    assert report.written == ["a"] and report.ok
    assert store.search("hello", k=1)[0].fields["price"] == 2.5


@pytest.mark.parametrize("index", ["AUTOINDEX", "IVF_FLAT", "FLAT"])
def test_other_index_types_and_ip(store_factory, index):
    store = store_factory(dim=64, index=index, metric="IP")
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(10, 64)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    assert store.upsert([{"id": str(i), "vector": v} for i, v in enumerate(vecs)]).ok
    info = store.client.describe_index(store.collection, "vector")
    assert (info["index_type"], info["metric_type"]) == (index, "IP")
    assert store.search(vecs[4], k=1)[0].id == "4"


def test_reopen_checks_dim_fields_and_metric(store_factory, embedder):
    from connectors.milvus import open_store

    store = store_factory(embedder=embedder, dim=64, fields={"color": str})
    target, name = target_for_store(store), store.collection
    with open_store(target, collection=name, embedder=embedder, dim=64) as again:
        again.create(fields={"color": str}, exist_ok=True)  # matching: fine
        assert again.fields == {"color": str}
        with pytest.raises(ConnectorError, match="already exists"):
            again.create(fields={"color": str})
        with pytest.raises(SchemaMismatchError, match=r"exists with fields \{'color': 'str'\}, not \{'color': 'int'\}"):
            again.create(fields={"color": int}, exist_ok=True)
        with pytest.raises(SchemaMismatchError, match="exists with fields"):
            again.create(fields={"color": str, "size": float}, exist_ok=True)
    with open_store(target, collection=name) as adopted:  # no dim: adopt the collection's
        assert adopted.dim == 64 and adopted.fields == {"color": str}
    with pytest.raises(SchemaMismatchError, match=r"dim 64.*dim=128"):
        open_store(target, collection=name, embedder=embedder, dim=128)
    with pytest.raises(SchemaMismatchError, match="metric COSINE.*'IP'"):
        open_store(target, collection=name, dim=64, metric="IP")
    with pytest.raises(SchemaMismatchError, match="coarse_dim=None.*coarse_dim=32"):
        open_store(target, collection=name, dim=64, coarse_dim=32)


def test_foreign_collection_is_a_schema_mismatch(store_factory):
    from connectors.milvus import open_store

    store = store_factory(dim=64)
    client, name = store.client, store.collection + "_foreign"
    client.create_collection(name, dimension=64)  # pymilvus quick setup: int id, "vector" field
    try:
        with pytest.raises(SchemaMismatchError, match="'id' is INT64, expected VARCHAR"):
            open_store(target_for_store(store), collection=name, dim=64)
    finally:
        client.drop_collection(name)


def target_for_store(store) -> str:
    return store.target.uri if not store.target.lite else f"milvus:{store.target.uri}"


# ---------------------------------------------------------------------------- upsert
def test_upsert_mixed_rows_reports_bad_ones(store_factory, embedder, media, tmp_path):
    store = store_factory(embedder=embedder, fields={"color": str})
    rows = corpus(media) + [
        {"id": "v0", "vector": np.ones(DIM, np.float32), "color": "red"},
        {"id": "missing", "image": str(tmp_path / "nope.png"), "color": "red"},
        {"id": "wrongdim", "vector": np.ones(7, np.float32)},
        {"id": "badfield", "text": "x", "colour": "red", "metadata": {"colour": "blue"}},  # undeclared: metadata's
        {"id": "badtype", "text": "x", "color": 3},
    ]
    report = store.upsert(rows)
    failed = dict(report.failed)
    assert set(failed) == {"missing", "wrongdim", "badfield", "badtype"}
    assert "nope.png" in failed["missing"] or "not found" in failed["missing"].lower()
    assert "7 dims" in failed["wrongdim"] and "colour" in failed["badfield"] and "color" in failed["badtype"]
    assert sorted(report.written) == sorted(["t0", "t1", "t2", "i0", "i1", "f0", "v0"])
    assert len(report.written) + len(report.failed) == len(rows)
    assert store.count() == 7
    got = {r["id"]: r for r in store.client.get(store.collection, ids=["i0", "f0", "v0"],
                                                 output_fields=["media", "modality", "text"])}
    assert got["i0"]["media"] == media[0] and got["i0"]["modality"] == "image"
    assert got["f0"]["modality"] == "vl" and got["f0"]["text"] == "a cat photo"
    # idempotent: the same rows again leave the same count
    again = store.upsert(rows)
    assert sorted(again.written) == sorted(report.written) and store.count() == 7


def test_rows_without_ids_get_stable_ids(store_factory, embedder):
    store = store_factory(embedder=embedder)
    first = store.upsert([{"text": "one"}, {"text": "two"}])
    second = store.upsert([{"text": "one"}, {"text": "two"}])
    assert first.written == second.written and len(set(first.written)) == 2 and store.count() == 2


@pytest.mark.parametrize("dim", [3000, 4096])
def test_precomputed_vectors_at_large_dims(store_factory, dim):
    store = store_factory(dim=dim)  # no embedder: a vector-only store
    rng = np.random.default_rng(dim)
    vecs = rng.normal(size=(12, dim)).astype(np.float32)
    report = store.upsert([{"id": f"r{i}", "vector": v, "metadata": {"i": i}} for i, v in enumerate(vecs)]
                          + [{"id": "text-only", "text": "needs an embedder"}])
    assert report.failed == [("text-only", report.failed[0][1])] and "no embedder" in report.failed[0][1]
    assert store.count() == 12
    hits = store.search(vecs[7], k=3)
    assert hits[0].id == "r7" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert hits[0].fields["metadata"] == {"i": 7}
    with pytest.raises(InputError, match=f"3 dims, the store has {dim}"):
        store.search([0.1, 0.2, 0.3])
    with pytest.raises(InputError, match="no embedder"):
        store.search("a text query")


def test_byte_budget_splits_requests(store_factory, caplog):
    store = store_factory(dim=64)
    rng = np.random.default_rng(3)
    rows = [{"id": f"r{i}", "vector": rng.normal(size=64)} for i in range(20)]
    with caplog.at_level(logging.DEBUG, logger="connectors.milvus"):
        report = store.upsert(rows, max_bytes=1200)  # ~400 bytes a row: <= 3 rows a request
    writes = [r for r in caplog.records if r.getMessage().startswith("milvus upsert:")]
    sizes = [int(r.getMessage().split()[2]) for r in writes]
    assert report.ok and store.count() == 20
    assert len(writes) >= 7 and max(sizes) <= 3 and sum(sizes) == 20


# ---------------------------------------------------------------------------- search
def test_search_native_filters_and_output_fields(store_factory, embedder, media):
    store = store_factory(embedder=embedder, fields={"color": str})
    assert store.upsert(corpus(media)).ok
    hits = store.search("a red apple", k=6)
    assert len(hits) == 6 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert set(hits[0].fields) == {"text", "media", "modality", "metadata", "color"}
    red = store.search({"image": media[0]}, k=10, filter='color == "red"')
    assert {h.id for h in red} == {"t0", "i0", "f0"}
    by_meta = store.search("anything", k=10, filter='metadata["n"] >= 4', output_fields=["color"])
    assert {h.id for h in by_meta} == {"i1", "f0"} and set(by_meta[0].fields) == {"color"}
    with pytest.raises(InputError, match="filter 'colour =="):
        store.search("x", filter='colour == "red"')
    with pytest.raises(InputError, match="unknown output field"):
        store.search("x", output_fields=["nope"])


def test_coarse_field_shortlists_then_rescores_at_full_dim(store_factory, embedder, media):
    store = store_factory(embedder=embedder, coarse_dim=64, fields={"color": str})
    desc = store.client.describe_collection(store.collection)
    assert {f["name"]: f["params"].get("dim") for f in desc["fields"]}["coarse_vector"] == 64
    rows = corpus(media)
    assert store.upsert(rows).ok
    stored = store.client.get(store.collection, ids=["t1"], output_fields=["vector", "coarse_vector"])[0]
    full = np.asarray(stored["vector"], np.float32)
    coarse = full[:64] / np.linalg.norm(full[:64])
    assert np.allclose(stored["coarse_vector"], coarse, atol=1e-5)  # the MRL prefix
    hits = store.search(full, k=3)
    assert hits[0].id == "t1" and hits[0].score == pytest.approx(1.0, abs=1e-4)
    # scores are full-dim cosines, not coarse ones
    q = embedder.embed_queries(["a blue car"], dim=DIM)[0]
    got = store.search("a blue car", k=6)
    vecs = {r["id"]: np.asarray(r["vector"]) for r in store.client.get(store.collection, ids=[h.id for h in got],
                                                                       output_fields=["vector"])}
    for h in got:
        assert h.score == pytest.approx(float(vecs[h.id] @ q / np.linalg.norm(vecs[h.id])), abs=1e-4)
    assert [h.score for h in got] == sorted((h.score for h in got), reverse=True)
    assert {h.id for h in store.search("x", k=10, filter='color == "blue"')} == {"t1", "i1"}
    reranked = store.search("a blue car", k=2, rerank=None, coarse_candidates=6)
    assert [h.id for h in reranked] == [h.id for h in got[:2]]


# ---------------------------------------------------------------------------- pymilvus integration
def test_embedding_function_is_pymilvus_model_compatible(store_factory, embedder, media):
    from connectors.milvus import QwenVLEmbeddingFunction

    ef = QwenVLEmbeddingFunction(embedder, dim=64)
    assert ef.dim == 64 and QwenVLEmbeddingFunction(embedder).dim == DIM
    docs = ["a red apple", "a blue car", {"image": media[0]}]
    dvecs = ef.encode_documents(docs)
    qvecs = ef.encode_queries(["a red apple"])
    assert isinstance(dvecs, list) and len(dvecs) == 3 and all(isinstance(v, np.ndarray) for v in dvecs)
    assert dvecs[0].shape == (64,) and qvecs[0].shape == (64,)
    assert np.allclose(ef(docs[:1])[0], dvecs[0])
    # the plain pymilvus flow
    store = store_factory(dim=64)  # only for a collection name and cleanup
    client, name = store.client, store.collection + "_ef"
    client.create_collection(name, dimension=ef.dim, id_type="string", max_length=64)
    try:
        client.insert(name, [{"id": f"d{i}", "vector": v} for i, v in enumerate(dvecs)])
        res = client.search(name, data=[dvecs[2].tolist()], limit=1)
        assert res[0][0]["id"] == "d2"
    finally:
        client.drop_collection(name)


@pytest.fixture()
def openai_service(embedder):
    """``qvl serve``'s app over the tiny embedder, on a free local port: ``(base_url, requests seen)``."""
    try:
        import uvicorn

        from embedder.service import ServiceSettings
        from embedder.service.app import create_app
    except ImportError as exc:
        skip_or_fail(f"the embedding service (embedder.service, uvicorn) is not importable: {exc}")
    seen: list[str] = []

    class Counting:
        """ASGI middleware counting the requests Milvus makes."""

        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http":
                seen.append(scope["path"])
            await self.app(scope, receive, send)

    app = Counting(create_app(ServiceSettings(), embedder=embedder))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail("the embedding service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1", seen
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_text_embedding_function_in_milvus_lite(store_factory, openai_service, embedder):
    from pymilvus import DataType

    from connectors.milvus import add_text_embedding_function, text_embedding_function

    if os.environ.get("MILVUS_URI"):
        pytest.skip("a Milvus server cannot reach this test's local embedding service")
    base_url, seen = openai_service
    store = store_factory(dim=64)
    client, name = store.client, store.collection + "_fn"
    schema = client.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=1000)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=64)
    schema.add_function(text_embedding_function(base_url=base_url, model_name="qwen3-vl-tiny", dim=64,
                                                input_field="text", output_field="vector"))
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    client.create_collection(name, schema=schema, index_params=index)
    try:
        texts = ["a red apple", "a blue car", "green leaves"]
        client.insert(name, [{"id": f"s{i}", "text": t} for i, t in enumerate(texts)])  # Milvus embeds
        assert "/v1/embeddings" in seen, "Milvus Lite never called the embedding service"
        stored = client.get(name, ids=["s1"], output_fields=["vector"])[0]["vector"]
        assert np.allclose(stored, embedder.embed_documents(["a blue car"], dim=64)[0], atol=1e-4)
        res = client.search(name, data=["a blue car"], anns_field="vector", limit=1)  # Milvus embeds the query
        assert res[0][0]["id"] == "s1"
        with pytest.raises(ConnectorError, match="Milvus Lite .* cannot add a function .*text_embedding_function"):
            add_text_embedding_function(client, name, base_url=base_url, model_name="qwen3-vl-tiny", dim=64,
                                        input_field="text", output_field="vector")
    finally:
        client.drop_collection(name)


def test_add_text_embedding_function_on_a_server(store_factory):
    """Adding a function to an existing collection needs a Milvus 2.6 server (not in CI)."""
    if not os.environ.get("MILVUS_URI") or not os.environ.get("QVL_OPENAI_BASE_URL"):
        pytest.skip("needs a Milvus 2.6 server (MILVUS_URI) and a qvl serve OpenAI endpoint reachable from it "
                    "(QVL_OPENAI_BASE_URL): Milvus Lite cannot add functions to existing collections")
    from connectors.milvus import add_text_embedding_function

    store = store_factory(dim=64)
    fn = add_text_embedding_function(store.client, store.collection, base_url=os.environ["QVL_OPENAI_BASE_URL"],
                                     model_name=os.environ.get("QVL_MODEL", "qwen3-vl"), dim=64,
                                     input_field="text", output_field="vector")
    desc = store.client.describe_collection(store.collection)
    assert any(f.get("name") == fn.name for f in desc.get("functions", []))


# ---------------------------------------------------------------------------- large dims, item kinds
DOCUMENT_INSTRUCTION = "Represent the user's input."  # what upsert embeds documents with


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    vecs = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


@pytest.mark.parametrize("dim", [256, 1024])
def test_create_at_dim_with_precomputed_vectors_and_reopen(store_factory, embedder, dim):
    from connectors.milvus import open_store

    store = store_factory(dim=dim, fields={"color": str})  # wider than the tiny checkpoint: vectors given
    vec_field = next(f for f in store.client.describe_collection(store.collection)["fields"] if f["name"] == "vector")
    assert vec_field["params"]["dim"] == dim and store.dim == dim
    vecs = unit_vectors(10, dim, seed=dim)
    rows = [{"id": f"r{i}", "vector": v, "color": ("red", "blue")[i % 2]} for i, v in enumerate(vecs)]
    report = store.upsert(rows + [{"id": "short", "vector": np.ones(DIM, np.float32)}])
    assert sorted(report.written) == sorted(r["id"] for r in rows)
    assert report.failed == [("short", f"vector has {DIM} dims, the store has {dim}")]
    target, name = target_for_store(store), store.collection
    with open_store(target, collection=name) as again:  # no dim given: the collection's is adopted
        again.create(fields={"color": str}, exist_ok=True)
        assert (again.dim, again.fields, again.count()) == (dim, {"color": str}, 10)
        hits = again.search(vecs[3], k=3)
        assert hits[0].id == "r3" and hits[0].score == pytest.approx(1.0, abs=1e-4)
        blue = again.search(vecs[3], k=10, filter='color == "blue"')
        exact = sorted((i for i in range(10) if i % 2), key=lambda i: -float(vecs[i] @ vecs[3]))
        assert [h.id for h in blue] == [f"r{i}" for i in exact]
        assert again.upsert(rows).ok and again.count() == 10  # idempotent after reopening
    with pytest.raises(SchemaMismatchError, match=f"dim {dim}, but dim={dim // 2}"):
        open_store(target, collection=name, dim=dim // 2)
    # the tiny embedder tops out at 128 dims: its rows fail with both dims named, vector rows still land
    with open_store(target, collection=name, embedder=embedder) as with_embedder:
        report = with_embedder.upsert([{"id": "txt", "text": "hello"}, {"id": "r0", "vector": vecs[0]}])
        assert report.written == ["r0"] and [rid for rid, _ in report.failed] == ["txt"]
        assert f"from 64 to {DIM}, got {dim}" in report.failed[0][1]


QUERY_ITEMS = {  # kind -> (the stored row the item equals, the item)
    "text": ("t0", lambda media: "a red apple on a table"),
    "image": ("i0", lambda media: {"image": media[0]}),
    "fused": ("f0", lambda media: {"text": "a cat photo", "image": media[2]}),
}


@pytest.mark.parametrize("kind", sorted(QUERY_ITEMS))
def test_search_by_item_kind_filter_and_rerank(store_factory, embedder, reranker, media, kind):
    from connectors.core import document_item

    store = store_factory(embedder=embedder, fields={"color": str})
    rows = corpus(media)
    assert store.upsert(rows).ok
    own, make_query = QUERY_ITEMS[kind]
    query = make_query(media)
    own_color = next(r["color"] for r in rows if r["id"] == own)
    got = store.client.get(store.collection, ids=[r["id"] for r in rows], output_fields=["vector", "color"])
    stored = {r["id"]: (np.asarray(r["vector"], np.float32), r["color"]) for r in got}

    def exact(qvec: np.ndarray, color: str | None = None) -> list[tuple[str, float]]:
        scores = [(i, float(v @ qvec)) for i, (v, c) in stored.items() if color is None or c == color]
        return sorted(scores, key=lambda s: -s[1])

    def assert_ranked_like(hits, expected) -> None:
        assert [h.id for h in hits] == [i for i, _ in expected]
        assert [h.score for h in hits] == pytest.approx([s for _, s in expected], abs=1e-4)

    # With the document instruction the query embeds exactly like its stored row: that row comes first.
    doc_vec = embedder.embed_documents([query], dim=DIM)[0]
    assert np.allclose(doc_vec, stored[own][0], atol=1e-5)
    as_document = store.search(query, k=6, instruction=DOCUMENT_INSTRUCTION)
    assert as_document[0].id == own and as_document[0].score == pytest.approx(1.0, abs=1e-3)
    assert_ranked_like(as_document, exact(doc_vec))
    # With the default query instruction it is another vector, ranked exactly as an exact search with it.
    query_vec = embedder.embed_queries([query], dim=DIM)[0]
    assert float(query_vec @ stored[own][0]) < 0.999
    as_query = store.search(query, k=6)
    assert_ranked_like(as_query, exact(query_vec))
    # A filter keeps its rows only, in the same order.
    other_color = "blue" if own_color != "blue" else "red"
    for color in (own_color, other_color):
        filtered = store.search(query, k=6, filter=f'color == "{color}"', instruction=DOCUMENT_INSTRUCTION)
        assert_ranked_like(filtered, exact(doc_vec, color))
        assert all(h.fields["color"] == color for h in filtered)
    assert store.search(query, k=1, filter=f'color == "{own_color}"', instruction=DOCUMENT_INSTRUCTION)[0].id == own
    # Rerank: the query item and each candidate's stored text/media go to the reranker.
    reranked = store.search(query, k=3, rerank=reranker, candidates=6)
    assert len(reranked) == 3 and {h.id for h in reranked} <= set(stored)
    direct = reranker.score(query, [document_item(h.fields) for h in reranked])
    assert [h.rerank_score for h in reranked] == pytest.approx([float(s) for s in direct], abs=1e-3)
    assert [h.rerank_score for h in reranked] == sorted((h.rerank_score for h in reranked), reverse=True)
    vector_scores = dict(exact(query_vec))
    assert all(h.score == pytest.approx(vector_scores[h.id], abs=1e-4) for h in reranked)
    all_six = store.search(query, k=6, rerank=reranker, candidates=6)
    assert {h.id for h in all_six} == set(stored)  # every candidate reranked, none dropped
    assert reranked == all_six[:3]
    red = store.search(query, k=3, rerank=reranker, filter='color == "red"', instruction=DOCUMENT_INSTRUCTION)
    assert {h.id for h in red} == {"t0", "i0", "f0"} and all(h.rerank_score is not None for h in red)


def test_refresh_index_keeps_results_and_is_idempotent(store_factory):
    store = store_factory(dim=64)
    vecs = unit_vectors(30, 64, seed=5)
    assert store.upsert([{"id": f"r{i}", "vector": v} for i, v in enumerate(vecs)]).ok
    before = [(h.id, round(h.score, 4)) for h in store.search(vecs[2], k=5)]
    store.refresh_index()
    store.refresh_index()  # nothing new: instant
    assert [(h.id, round(h.score, 4)) for h in store.search(vecs[2], k=5)] == before
    assert before[0][0] == "r2" and store.count() == 30
    store.drop()
    with pytest.raises(NotFoundError, match="create"):
        store.refresh_index()


# ---------------------------------------------------------------------------- separate processes
_WRITER = """
import sys, numpy as np, connectors
target, name = sys.argv[1], sys.argv[2]
vecs = np.random.default_rng(7).normal(size=(40, 64)).astype(np.float32)
with connectors.connect(target, collection=name, dim=64, index="HNSW") as store:
    store.create()
    report = store.upsert([{"id": f"r{i}", "vector": v, "text": f"row {i}"} for i, v in enumerate(vecs)])
    assert report.ok, report.failed
print("written", flush=True)
"""

_HOLDER = """
import sys, connectors
with connectors.connect(sys.argv[1], collection="held", dim=64) as store:
    store.create(exist_ok=True)
print("holding", flush=True)  # closed, but Milvus Lite keeps the file until this process exits
sys.stdin.read()
"""


def _python(script: str, *args: str, **kwargs):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_a_new_process_searches_what_another_wrote(tmp_path):
    """``qvl ingest`` then ``qvl search`` are two processes: the second finds the collection
    released and must load it to search (it raised "in state 'released'" before)."""
    import connectors

    target, name = target_for(tmp_path), collection_name("test_a_new_process_searches")
    writer = _python(_WRITER, target, name)
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    assert out.strip() == "written"
    vecs = np.random.default_rng(7).normal(size=(40, 64)).astype(np.float32)
    oracle = connectors.connect("memory:", dim=64)
    oracle.create()
    oracle.upsert([{"id": f"r{i}", "vector": v} for i, v in enumerate(vecs)])
    with connectors.connect(target, collection=name) as store:  # a new process: this one
        try:
            assert store.dim == 64 and store.count() == 40
            for q in np.random.default_rng(8).normal(size=(5, 64)):
                got, want = store.search(q, k=5), oracle.search(q, k=5)
                assert [h.id for h in got] == [h.id for h in want]
                assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-4)
            assert store.search(vecs[3], k=1)[0].fields["text"] == "row 3"
            assert store.existing_ids(["r0", "r39", "r40"]) == {"r0", "r39"}
            store.refresh_index()  # still fine on a collection loaded at open
            assert [h.id for h in store.search(vecs[3], k=1)] == ["r3"]
        finally:
            store.drop()


def test_a_file_open_in_another_process_is_refused_in_one_line(tmp_path):
    """Milvus Lite keeps its file for the life of the process that opened it, even after close()."""
    import connectors

    if os.environ.get("MILVUS_URI"):
        pytest.skip("a Milvus Lite file rule; a server takes any number of processes")
    path = tmp_path / "held.db"
    holder = _python(_HOLDER, f"milvus:{path}", stdin=__import__("subprocess").PIPE)
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        with pytest.raises(UnavailableError) as info:
            connectors.connect(f"milvus:{path}", collection="held", dim=64)
        assert str(info.value) == (f"{path} is open in another process; Milvus Lite allows one process per "
                                   "file; use a Milvus server or close that process")
        assert isinstance(info.value.__cause__, OSError)
    finally:
        holder.communicate(input="", timeout=60)
    assert holder.returncode == 0
    with connectors.connect(f"milvus:{path}", collection="held") as store:  # that process has exited
        assert store.count() == 0


# ---------------------------------------------------------------------------- ids in expressions
HOSTILE_IDS = ["plain", "x'] or not id in ['y", 'x"] or not id in ["y', "Bob's photo.jpg", 'say "hi"',
               "back\\slash", "ends with \\", "\\'", "\\\"", "ünï 😀 日本", "tab\there", "new\nline", "cr\rx",
               "{ids}", "' or ''='", "%s", "$meta", "id in []"]


def test_an_id_cannot_rewrite_a_delete(store_factory):
    """``delete`` once spliced ids into ``id in ['...']``: this id deleted 8 of 9 rows."""
    store = store_factory(dim=64)
    vecs = unit_vectors(9, 64, seed=3)
    assert store.upsert([{"id": f"k{i}", "vector": v} for i, v in enumerate(vecs)]).ok
    store.delete(["x'] or not id in ['y"])
    store.delete(['x"] or not id in ["y'])
    store.delete(["k0'] or id in ['k1"])
    assert store.count() == 9
    assert store.existing_ids(["k0'] or id in ['k1", "k0"]) == {"k0"}


def test_ids_with_any_characters_round_trip(store_factory):
    store = store_factory(dim=64, coarse_dim=32)  # the coarse pass fetches its shortlist by id
    vecs = unit_vectors(len(HOSTILE_IDS), 64, seed=4)
    report = store.upsert([{"id": rid, "vector": v, "text": rid} for rid, v in zip(HOSTILE_IDS, vecs)])
    assert report.ok, report.failed
    assert store.count() == len(HOSTILE_IDS)
    assert store.existing_ids(HOSTILE_IDS + ["absent"]) == set(HOSTILE_IDS)
    for rid, vec in zip(HOSTILE_IDS, vecs):
        hit = store.search(vec, k=1)[0]
        assert (hit.id, hit.fields["text"]) == (rid, rid)
    # scan pages by id: each page's last id is the next page's cursor, written as an escaped literal
    scanned = [r for page, _ in store.scan(page_size=4) for r in page]
    assert [r.id for r in scanned] == sorted(HOSTILE_IDS)
    assert all(np.allclose(r.vector, vecs[HOSTILE_IDS.index(r.id)], atol=1e-6) for r in scanned)
    left = len(HOSTILE_IDS)
    for rid in HOSTILE_IDS:
        store.delete([rid])
        left -= 1
        assert store.count() == left, rid
        assert store.existing_ids([rid]) == set()


def test_a_vector_whose_coarse_prefix_is_zero_is_a_bad_row(store_factory):
    """The coarse field holds the vector's MRL prefix: all zeros there is as undefined as a zero vector."""
    store = store_factory(dim=64, coarse_dim=32)
    prefix_zero = np.r_[np.zeros(32), np.ones(32)].astype(np.float32)
    good = unit_vectors(1, 64, seed=9)[0]
    report = store.upsert([{"id": "good", "vector": good}, {"id": "prefix-zero", "vector": prefix_zero},
                           {"id": "zero", "vector": np.zeros(64)}])
    assert report.written == ["good"]
    assert dict(report.failed) == {
        "prefix-zero": "the vector's first 32 dims (the coarse field) are all zeros (cosine similarity is undefined)",
        "zero": "vector is all zeros (cosine similarity is undefined)"}
    assert store.count() == 1
    with pytest.raises(InputError, match="first 32 dims .* all zeros"):
        store.search(prefix_zero, k=1)


def test_an_id_milvus_cannot_encode_fails_alone_and_is_never_found(store_factory):
    """A lone surrogate (an undecodable file name read with surrogateescape) is no UTF-8:
    its row fails with a reason, and looking it up or deleting it finds nothing instead of
    failing the whole batch (which disabled an ingest's existing-id check)."""
    store = store_factory(dim=64)
    odd = "photo-\udcff.jpg"
    report = store.upsert([{"id": "ok", "vector": np.ones(64)}, {"id": odd, "vector": np.ones(64)}])
    assert report.written == ["ok"]
    assert [rid for rid, _ in report.failed] == [odd] and "not valid Unicode" in report.failed[0][1]
    assert store.existing_ids(["ok", odd, "Bob's photo.jpg"]) == {"ok"}
    store.delete([odd])
    assert store.count() == 1


# ---------------------------------------------------------------------------- scan, fingerprint, errors
def test_scan_pages_in_id_order_across_segments_and_overwrites(store_factory):
    """A query with a limit promises no order: _page asks for primary-key order (as
    query_iterator does) and every row comes once, pages full, across several segments."""
    store = store_factory(dim=64, fields={"color": str})
    vecs = unit_vectors(2500, 64, seed=11)
    ids = [f"s{i:05d}" for i in np.random.default_rng(1).permutation(2500)]
    for start in range(0, 2500, 600):  # each upsert flushes on Milvus Lite: one segment each
        assert store.upsert([{"id": rid, "vector": vecs[start + j], "color": "c"}
                             for j, rid in enumerate(ids[start:start + 600])]).ok
    newer = unit_vectors(300, 64, seed=12)
    assert store.upsert([{"id": rid, "vector": v, "color": "new"} for rid, v in zip(ids[:300], newer)]).ok
    pages = list(store.scan(page_size=1000))
    assert [len(p) for p, _ in pages] == [1000, 1000, 500] and pages[-1][1] is None
    got = [r for p, _ in pages for r in p]
    assert [r.id for r in got] == sorted(ids)
    expected = {rid: v for rid, v in zip(ids, vecs)} | {rid: v for rid, v in zip(ids[:300], newer)}
    assert all(np.allclose(r.vector, expected[r.id], atol=1e-6) for r in got)
    assert sum(r.fields["color"] == "new" for r in got) == 300
    assert set(got[0].fields) == {"text", "media", "modality", "metadata", "color"}
    resumed = [r.id for p, _ in store.scan(page_size=1000, cursor=pages[0][1]) for r in p]
    assert resumed == sorted(ids)[1000:]
    store.max_bytes = 250 * (4 * 64 + 256)  # a page also stays under about max_bytes of vectors
    capped = list(store.scan(page_size=1000))
    assert [len(p) for p, _ in capped] == [250] * 10 and [r.id for p, _ in capped for r in p] == sorted(ids)


_FINGERPRINT_WRITER = """
import sys, json, connectors
with connectors.connect(sys.argv[1], collection=sys.argv[2], dim=64) as store:
    store.create(fingerprint=json.loads(sys.argv[3]))
print("created", flush=True)
"""


def test_the_fingerprint_is_a_collection_property_that_a_new_process_reads(tmp_path):
    """Milvus Lite drops a collection's description; its properties survive the process."""
    import json

    import connectors
    from connectors.milvus import FINGERPRINT_PROPERTY

    target, name = target_for(tmp_path), collection_name("test_fingerprint_new_process")
    fingerprint = {"model": "some/model", "dim": 128, "weights": "abc123", "kind": "embedding"}
    writer = _python(_FINGERPRINT_WRITER, target, name, json.dumps(fingerprint))
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    with connectors.connect(target, collection=name) as store:
        try:
            assert store.fingerprint == fingerprint and store.dim == 64
            props = store.client.describe_collection(name)["properties"]
            assert json.loads(props[FINGERPRINT_PROPERTY]) == fingerprint
        finally:
            store.drop()


def test_driver_errors_become_ours_and_say_whether_they_are_transient():
    import grpc
    from pymilvus.exceptions import MilvusException

    from connectors.core import is_transient
    from connectors.milvus.wire import translate

    class Rpc(grpc.RpcError):
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

    for exc in (MilvusException(code=2, message="Fail connecting to server on localhost:19530"),
                MilvusException(code=8, message="rate limit exceeded[rate=100]"),
                MilvusException(message="[upsert] Retry timeout: 10s, message=<UNAVAILABLE>"),
                Rpc(grpc.StatusCode.DEADLINE_EXCEEDED), Rpc(grpc.StatusCode.UNAVAILABLE)):
        err = translate(exc, "upsert", collection="c")
        assert isinstance(err, UnavailableError) and is_transient(err), exc
    missing = translate(MilvusException(code=100, message="collection not found[collection=c]"), "count",
                        collection="c")
    assert isinstance(missing, NotFoundError) and "'c' does not exist" in str(missing)
    bad = translate(MilvusException(code=1100, message="cannot parse expression"), "search", filter="x ==")
    assert isinstance(bad, InputError) and not is_transient(bad)
    other = translate(MilvusException(code=65535, message="field too long"), "upsert")
    assert type(other) is ConnectorError and not is_transient(other)


def test_an_unknown_search_option_is_an_input_error(store_factory):
    store = store_factory(dim=64)
    assert store.upsert([{"id": "a", "vector": unit_vectors(1, 64, seed=1)[0]}]).ok
    with pytest.raises(InputError, match=r"unknown search option\(s\) \['ef'\]; Milvus takes output_fields"):
        store.search(np.ones(64), k=1, ef=64)
    assert store.search(np.ones(64), k=1, search_params={"ef": 64})[0].id == "a"

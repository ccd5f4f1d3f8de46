"""The Weaviate connector against a real Weaviate server (no mocks).

One server per test session (``weaviate_server.SHARED``; ``WEAVIATE_URL`` for an external
one); each test has its own collection. The server-side tests also start ``qvl serve`` on
the tiny checkpoints, on the port the server's modules were pointed at.
"""
from __future__ import annotations

import base64
import io
import pathlib

import numpy as np
import pytest

from tests.connectors.backend_weaviate import drop_collection, open_test_store, test_collection_name, test_server
from tests.conftest import make_image, skip_or_fail
from tests.connectors.weaviate_server import SHARED, SHARED_SERVICE, ServerUnavailable, WeaviateServer

pytest.importorskip("weaviate", reason="weaviate-client is not installed (pip install 'qwen3-vl-search[weaviate]')")

from embedder.errors import ConnectorError, InputError, SchemaMismatchError, UnavailableError  # noqa: E402

DIM = 128
NAMED = {"full": DIM, "coarse": 64}
REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def weaviate_server() -> WeaviateServer:
    """The shared Weaviate server of this test session (stopped at the end)."""
    server = test_server()
    yield server
    SHARED.stop()


@pytest.fixture()
def store(weaviate_server, embedder, request, tmp_path):
    """A created, empty store with named vectors full=128, coarse=64 and two user fields."""
    with open_test_store(tmp_path, request.node.name, embedder=embedder, dim=DIM, named_vectors=NAMED,
                         fields={"color": str, "price": float}) as s:
        yield s


def _rows(image_files: list[str]) -> list[dict]:
    return [
        {"id": "t1", "text": "a red bicycle leaning on a wall", "color": "red", "price": 120.0,
         "metadata": {"source": "unit", "n": 1}},
        {"id": "t2", "text": "a bowl of green soup", "color": "green", "price": 8.5},
        {"id": "i1", "image": image_files[0], "color": "red", "price": 3.0},
        {"id": "f1", "text": "a blue square", "image": image_files[1], "color": "blue", "price": 42.0},
        {"id": "v1", "vector": _unit(np.random.RandomState(7).randn(DIM)), "text": "precomputed", "color": "blue",
         "price": 1.0},
    ]


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def _doc_vector(embedder, row: dict, dim: int = DIM) -> np.ndarray:
    if "vector" in row:
        return np.asarray(row["vector"], dtype=np.float32)[:dim] / np.linalg.norm(row["vector"][:dim])
    item = {k: row[k] for k in ("text", "image") if k in row}
    return embedder.embed_documents([item], dim=dim)[0]


# ---------------------------------------------------------------------------- schema
def test_create_named_vectors_and_reopen_checks(store, weaviate_server, embedder):
    config = store.weaviate_collection.config.get()
    assert set(config.vector_config) == {"full", "coarse"}
    assert store.dim == DIM and store.fields == {"color": str, "price": float}
    props = {p.name for p in config.properties}
    assert {"row_id", "text", "media", "modality", "metadata", "color", "price"} <= props
    hnsw = config.vector_config["full"].vector_index_config
    assert hnsw.distance_metric.value == "cosine" and hnsw.max_connections == 32

    from connectors.weaviate import open_store

    target, name = weaviate_server.target, store.name
    with pytest.raises(SchemaMismatchError, match="coarse"):
        open_store(target, collection=name, embedder=embedder, named_vectors={"full": DIM, "coarse": 32})
    with pytest.raises(SchemaMismatchError, match="missing"):
        open_store(target, collection=name, embedder=embedder, dim=DIM)  # one vector named "default"
    with open_store(target, collection=name, embedder=embedder, named_vectors=NAMED) as same:
        assert same.fields == store.fields
        same.create(fields={"color": str, "price": float}, exist_ok=True)
        with pytest.raises(SchemaMismatchError, match="price"):
            same.create(fields={"color": str, "price": int}, exist_ok=True)
        with pytest.raises(ConnectorError, match="already exists"):
            same.create(fields={"color": str, "price": float})


def test_the_description_records_dims_and_fingerprint(store, weaviate_server, embedder):
    """Weaviate keeps neither: the collection description does (``qvl:`` + JSON). A collection
    made before fingerprints were recorded opens with ``fingerprint`` None."""
    import json

    from connectors.weaviate import open_store

    description = store.weaviate_collection.config.get().description
    assert description.startswith("qvl:")
    assert json.loads(description[4:]) == {"vectors": NAMED, "fingerprint": embedder.fingerprint()}
    store.weaviate_collection.config.update(description='qvl:{"vectors": {"coarse": 64, "full": 128}}')
    with open_store(weaviate_server.target, collection=store.name, embedder=embedder) as old:
        assert old.fingerprint is None and old.named_vectors == NAMED and old.fields == store.fields


def test_scan_reads_the_full_named_vector(store):
    """A row is scanned with its largest named vector (the others are its MRL prefixes)."""
    vecs = np.random.RandomState(9).randn(5, DIM).astype(np.float32)
    assert store.upsert([{"id": f"s{i}", "vector": v, "color": "c", "price": float(i)}
                         for i, v in enumerate(vecs)]).ok
    pages = list(store.scan(page_size=2))
    assert [len(p) for p, _ in pages] == [2, 2, 1] and pages[-1][1] is None
    got = {r.id: r for page, _ in pages for r in page}
    for i, v in enumerate(vecs):
        row = got[f"s{i}"]
        assert row.vector.dtype == np.float32 and np.allclose(row.vector, v, atol=1e-6)
        assert row.fields["price"] == float(i) and row.fields["modality"] == "vector"


def test_connection_errors_are_translated(weaviate_server):
    from connectors.weaviate import open_store

    with pytest.raises(UnavailableError):
        open_store("weaviate://127.0.0.1:9?grpc=10", collection="Nowhere", dim=DIM)
    with pytest.raises(InputError):
        open_store("milvus://127.0.0.1:19530", collection="Nowhere", dim=DIM)


def test_a_lost_server_makes_transient_failures(tmp_path):
    """A server that goes away mid-upsert: every row of the batch fails as transient (retry later,
    after the client's own retries: about 15 s), and the next call raises UnavailableError."""
    from connectors.weaviate import open_store
    from tests.connectors.weaviate_server import running_weaviate

    rng = np.random.RandomState(4)
    with running_weaviate(tmp_path / "wv") as server:
        with open_store(server.target, collection="Lost", dim=64, timeout=(5, 10)) as store:
            store.create()

            def rows():  # the server stops while the batch is being read, before it is written
                yield {"id": "a", "vector": rng.rand(64)}
                server.stop()
                yield {"id": "b", "vector": rng.rand(64)}

            report = store.upsert(rows())
            assert report.written == [] and [f.id for f in report.failed] == ["a", "b"]
            assert all(f.stage == "write" and f.transient and "unavailable" in f.reason for f in report.failed)
            with pytest.raises(UnavailableError):
                store.upsert([{"id": "c", "vector": rng.rand(64)}])  # checks the collection first: at once


# ---------------------------------------------------------------------------- upsert and search
def test_upsert_search_filter_delete(store, embedder, image_files):
    rows = _rows(image_files)
    report = store.upsert(rows)
    assert report.ok, report.failed
    assert sorted(report.written) == sorted(r["id"] for r in rows)
    assert store.count() == len(rows)

    again = store.upsert(rows)  # idempotent: same UUIDs, objects replaced
    assert again.ok and store.count() == len(rows)

    # every item finds itself first, on both named vectors (coarse = MRL prefix)
    for row in rows:
        for name, d in NAMED.items():
            hits = store.search(_doc_vector(embedder, row, d), k=3, target_vector=name)
            assert hits[0].id == row["id"], (name, row["id"], [(h.id, h.score) for h in hits])
            assert hits[0].score == pytest.approx(1.0, abs=1e-3)
    full = store.search(_doc_vector(embedder, rows[3]), k=1)[0]  # precomputed full-dim query on "coarse"
    assert full.id == "f1"
    assert store.search(_doc_vector(embedder, rows[3]), k=1, target_vector="coarse")[0].id == "f1"

    hit = store.search(_doc_vector(embedder, rows[0]), k=1)[0]
    assert hit.fields["text"] == rows[0]["text"] and hit.fields["color"] == "red"
    assert hit.fields["metadata"] == {"source": "unit", "n": 1} and hit.fields["modality"] == "text"
    assert hit.rerank_score is None
    image_hit = store.search(_doc_vector(embedder, rows[2]), k=1)[0]
    assert image_hit.fields["media"] == image_files[0] and image_hit.fields["modality"] == "image"
    assert store.search(_doc_vector(embedder, rows[3]), k=1)[0].fields["modality"] == "vl"

    # text query through the embedder; multi-target search over both named vectors
    assert len(store.search("a red bicycle", k=3)) == 3
    assert store.search(_doc_vector(embedder, rows[1]), k=2, target_vector=["full", "coarse"])[0].id == "t2"

    # filters: native weaviate Filter objects pass through; a dict is the portable filter
    from weaviate.classes.query import Filter

    reds = store.search("anything red", k=10, filter=Filter.by_property("color").equal("red"))
    assert sorted(h.id for h in reds) == ["i1", "t1"]
    cheap = store.search("x", k=10, filter=Filter.by_property("price").less_than(10.0))
    assert sorted(h.id for h in cheap) == ["i1", "t2", "v1"]
    blue = store.search("x", k=10, filter={"color": "blue", "modality": {"$in": ["vl", "text"]}})
    assert sorted(h.id for h in blue) == ["f1", "v1"]

    store.delete(["t1", "i1", "does-not-exist"])
    assert store.count() == len(rows) - 2
    assert "t1" not in {h.id for h in store.search("a red bicycle", k=10)}


def test_bad_rows_are_reported_with_id_and_reason(store, embedder):
    rows = [
        {"id": "good", "text": "fine"},
        {"id": "empty"},                                       # client side: nothing to embed
        {"id": "badtype", "text": "x", "price": "not a number"},  # Weaviate's failed_objects
        {"id": "good2", "text": "also fine", "price": 2.0},
    ]
    report = store.upsert(rows)
    assert sorted(report.written) == ["good", "good2"]
    failed = dict(report.failed)
    assert set(failed) == {"empty", "badtype"} and "no text" in failed["empty"]
    assert "price" in failed["badtype"]  # Weaviate's own message names the property
    assert [f.stage for f in report.failed] == ["validate", "write"] and not any(f.transient for f in report.failed)
    assert store.count() == 2


def test_large_dim_precomputed_store(weaviate_server, request, tmp_path):
    rng = np.random.RandomState(0)
    vecs = rng.randn(40, 3000).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with open_test_store(tmp_path, request.node.name, embedder=None, dim=3000, index="flat") as s:
        assert s.dim == 3000 and s.named_vectors == {"default": 3000}
        report = s.upsert([{"id": f"r{i}", "vector": v, "metadata": {"i": i}} for i, v in enumerate(vecs)]
                          + [{"id": "needs-embedder", "text": "no embedder here"}])
        assert len(report.written) == 40
        assert report.failed and report.failed[0][0] == "needs-embedder" and "embedder" in report.failed[0][1]
        for i in (0, 17, 39):
            hit = s.search(vecs[i], k=1)[0]
            assert hit.id == f"r{i}" and hit.fields["metadata"] == {"i": i}
        with pytest.raises(InputError, match="3000"):
            s.search(np.ones(128), k=1)


def test_metadata_as_object(weaviate_server, embedder, request, tmp_path):
    import connectors

    with open_test_store(tmp_path, request.node.name, embedder=embedder, dim=DIM,
                         metadata_fields={"source": str, "n": int}, batching="fixed_size") as s:
        props = {p.name: p for p in s.weaviate_collection.config.get().properties}
        assert props["metadata"].data_type.value == "object"
        report = s.upsert([{"id": "a", "text": "alpha", "metadata": {"source": "unit", "n": 3}},
                           {"id": "b", "text": "beta", "metadata": {"n": "three"}}])  # wrong type
        assert report.written == ["a"] and report.failed[0][0] == "b"
        hit = s.search(embedder.embed_documents([{"text": "alpha"}], dim=DIM)[0], k=1)[0]
        assert hit.id == "a" and hit.fields["metadata"] == {"source": "unit", "n": 3}
        # an undeclared top-level key goes into metadata: fine when it is a metadata field, else the
        # row fails (Weaviate's auto-schema would add a nested property of a guessed type: 3 -> 3.0)
        report = s.upsert([{"id": "c", "text": "gamma", "source": "top", "metadata": {"n": 4}},
                           {"id": "d", "text": "delta", "size": 3}])
        assert report.written == ["c"] and report.failed[0].id == "d"
        assert "metadata key(s) ['size'] are not among metadata_fields ['n', 'source']" in report.failed[0].reason
        hit = s.search(embedder.embed_documents([{"text": "gamma"}], dim=DIM)[0], k=1, filter={"n": 4})[0]
        assert hit.id == "c" and hit.fields["metadata"] == {"source": "top", "n": 4}
        with connectors.connect(weaviate_server.target, collection=s.name) as again:  # adopts the object
            assert again.metadata_fields == {"source": "text", "n": "int"} and again.dim == DIM
            rows = {r.id: r.fields["metadata"] for page, _ in again.scan() for r in page}
            assert rows == {"a": {"source": "unit", "n": 3}, "c": {"source": "top", "n": 4}}


def test_metadata_filter_reaches_past_the_first_page(weaviate_server, request, tmp_path):
    """Weaviate cannot filter metadata: the rows that match are found however far they rank."""
    import connectors

    rng = np.random.RandomState(12)
    q = rng.normal(size=64).astype(np.float32)
    vecs = rng.normal(size=(300, 64)).astype(np.float32)
    vecs[:5] = -q + 0.05 * rng.normal(size=(5, 64))  # the 5 matching rows are the farthest from q
    rows = [{"id": f"m{i}", "vector": v, "metadata": {"rare": i < 5, "n": i}} for i, v in enumerate(vecs)]
    oracle = connectors.connect("memory:", dim=64)
    oracle.create()
    oracle.upsert(rows)
    with open_test_store(tmp_path, request.node.name, embedder=None, dim=64, index="flat") as s:
        assert s.upsert(rows).ok
        for flt, k in [({"rare": True}, 3), ({"rare": True, "n": {"$gte": 2}}, 10), ({"n": {"$in": [4, 299]}}, 2)]:
            want = [h.id for h in oracle.search(q, k=k, filter=flt)]
            assert want and [h.id for h in s.search(q, k=k, filter=flt, return_properties=["text"])] == want
        hit = s.search(q, k=1, filter={"rare": True}, return_properties=["text"])[0]
        assert "metadata" not in hit.fields  # read for the filter, not returned


def test_missing_binary_reason(monkeypatch, tmp_path):
    from tests.connectors.weaviate_server import ensure_binary

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no `go`
    with pytest.raises(ServerUnavailable, match="go"):
        ensure_binary()


def test_a_vector_whose_smaller_named_vector_is_zero_is_a_bad_row(store):
    """``coarse`` is the MRL prefix of ``full``: all zeros there is as undefined as a zero vector."""
    prefix_zero = np.r_[np.zeros(64), np.ones(DIM - 64)].astype(np.float32)
    report = store.upsert([{"id": "good", "vector": _unit(np.random.RandomState(3).randn(DIM)), "color": "c"},
                           {"id": "prefix-zero", "vector": prefix_zero, "color": "c"}])
    assert report.written == ["good"]
    assert report.failed == [("prefix-zero", "the vector's first 64 dims (named vector 'coarse') are all zeros "
                                             "(cosine similarity is undefined)")]
    assert store.count() == 1
    with pytest.raises(InputError, match="first 64 dims .*'coarse'.* all zeros"):
        store.search(prefix_zero, k=1, target_vector="coarse")
    assert store.search(prefix_zero, k=1)[0].id == "good"  # the full vector is fine


_WRITER = """
import sys, numpy as np, connectors
target, name = sys.argv[1], sys.argv[2]
vecs = np.random.default_rng(7).normal(size=(40, 128)).astype(np.float32)
with connectors.connect(target, collection=name, named_vectors={"full": 128, "coarse": 64}) as store:
    store.create(fields={"color": str})
    report = store.upsert([{"id": f"r{i}", "vector": v, "text": f"row {i}", "color": "red" if i % 2 else "blue"}
                           for i, v in enumerate(vecs)])
    assert report.ok, report.failed
print("written", flush=True)
"""


def test_a_new_process_searches_what_another_wrote(weaviate_server, request):
    """``qvl ingest`` and ``qvl search`` are separate processes: the second adopts the named
    vectors recorded on the collection and finds the exact ranking."""
    import subprocess
    import sys

    import connectors

    name = test_collection_name(request.node.name)
    drop_collection(weaviate_server, name)
    try:
        done = subprocess.run([sys.executable, "-c", _WRITER, weaviate_server.target, name],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0 and done.stdout.strip() == "written", done.stderr
        vecs = np.random.default_rng(7).normal(size=(40, DIM)).astype(np.float32)
        oracle = connectors.connect("memory:", dim=DIM)
        oracle.create()
        oracle.upsert([{"id": f"r{i}", "vector": v} for i, v in enumerate(vecs)])
        with connectors.connect(weaviate_server.target, collection=name) as store:  # no dim: adopted
            assert store.named_vectors == {"full": DIM, "coarse": 64} and store.fields == {"color": str}
            assert store.count() == 40
            for q in np.random.default_rng(8).normal(size=(5, DIM)):
                got, want = store.search(q, k=5), oracle.search(q, k=5)
                assert [h.id for h in got] == [h.id for h in want]
                assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-3)
            assert {h.id for h in store.search(vecs[0], k=40, filter={"color": "red"})} == {
                f"r{i}" for i in range(1, 40, 2)}
    finally:
        drop_collection(weaviate_server, name)


HOSTILE = ["plain", "x'] or not id in ['y", 'x"} or {"a', "Bob's photo.jpg", 'say "hi"', "back\\slash",
           "ends with \\", "ünï 😀 日本", "tab\there", "new\nline", "{ids}", "' or ''='", "%s"]


def test_ids_and_filter_values_with_any_characters(weaviate_server, request, tmp_path):
    """Ids become uuid5s and filter values are bound by the client: nothing is spliced."""
    rng = np.random.RandomState(5)
    vecs = rng.randn(len(HOSTILE), 64).astype(np.float32)
    with open_test_store(tmp_path, request.node.name, embedder=None, dim=64, index="flat",
                         fields={"color": str}) as s:
        report = s.upsert([{"id": rid, "vector": v, "text": rid, "color": rid} for rid, v in zip(HOSTILE, vecs)])
        assert report.ok, report.failed
        assert s.existing_ids(HOSTILE + ["absent"]) == set(HOSTILE)
        for rid, vec in zip(HOSTILE, vecs):
            hit = s.search(vec, k=1)[0]
            assert (hit.id, hit.fields["text"]) == (rid, rid)
            assert [h.id for h in s.search(vec, k=len(HOSTILE), filter={"color": rid})] == [rid]
        left = len(HOSTILE)
        for rid in HOSTILE:
            s.delete([rid])
            left -= 1
            assert s.count() == left and s.existing_ids([rid]) == set()


def test_a_string_weaviate_cannot_encode_fails_its_row_only(weaviate_server, request, tmp_path):
    """A lone surrogate (an undecodable file name read with surrogateescape) is no UTF-8: it
    failed the whole batch (uuid5 and gRPC encode UTF-8); now its row fails, with a reason."""
    odd = "photo-\udcff.jpg"
    vecs = np.random.RandomState(2).randn(4, 64).astype(np.float32)
    with open_test_store(tmp_path, request.node.name, embedder=None, dim=64, fields={"color": str}) as s:
        report = s.upsert([{"id": "ok", "vector": vecs[0]}, {"id": odd, "vector": vecs[1]},
                           {"id": "media", "vector": vecs[2], "text": odd},
                           {"id": "field", "vector": vecs[3], "color": odd}])
        assert report.written == ["ok"]
        assert [rid for rid, _ in report.failed] == [odd, "media", "field"]
        assert all("not valid Unicode" in reason for _, reason in report.failed)
        assert s.existing_ids(["ok", odd]) == {"ok"}
        s.delete([odd])
        assert s.count() == 1


# ---------------------------------------------------------------------------- server-side modules
@pytest.fixture(scope="session")
def qvl_service(weaviate_server, tiny_embedding_path, tiny_reranker_path):
    """``qvl serve`` on the tiny checkpoints, on the port the server's modules call."""
    if not (REPO / "embedder" / "service" / "app.py").exists():
        skip_or_fail("the embedding service (embedder/service/app.py) is not available")
    if not weaviate_server.inference_url:
        skip_or_fail("WEAVIATE_URL is set without WEAVIATE_INFERENCE_URL (the qvl serve URL its modules call)")
    try:
        service = SHARED_SERVICE.get(weaviate_server, model=tiny_embedding_path, reranker=tiny_reranker_path,
                                     default_dim=DIM)
    except ServerUnavailable as exc:
        pytest.fail(str(exc))
    yield service.url
    SHARED_SERVICE.stop()


def _png_b64(seed: int) -> str:
    buf = io.BytesIO()
    make_image(72, 56, seed=seed).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cos(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_server_side_vectorizer_and_reranker(weaviate_server, qvl_service, embedder, reranker, request):
    from weaviate.classes.data import DataObject
    from weaviate.classes.query import MetadataQuery, Rerank

    from connectors.weaviate import WeaviateTarget, connect_client, create_server_vectorized_collection, row_uuid

    name = test_collection_name(request.node.name)
    drop_collection(weaviate_server, name)
    client = connect_client(WeaviateTarget.parse(weaviate_server.target))
    try:
        collection = create_server_vectorized_collection(
            client, name, inference_url=qvl_service, image_fields=["image"], text_fields=["text"],
            weights={"image": 0.5, "text": 0.5}, text2vec_vector="text", text2vec_dimensions=64, reranker=True)
        images = {i: _png_b64(10 + i) for i in range(2)}
        objects = {
            "cat": {"text": "a small grey cat sleeping"},
            "soup": {"text": "tomato soup in a white bowl"},
            "img0": {"image": images[0]},
            "fused": {"text": "a picture of noise", "image": images[1]},
        }
        result = collection.data.insert_many([DataObject(properties=p, uuid=row_uuid(k))
                                              for k, p in objects.items()])  # no vectors: Weaviate asks qvl serve
        assert not result.errors, result.errors

        # stored vectors equal the embedder's, at the service's dims
        for key, props in objects.items():
            obj = collection.query.fetch_object_by_id(row_uuid(key), include_vector=True)
            stored = obj.vector["multimodal"]
            assert len(stored) == DIM
            parts = [embedder.embed([{"text": props["text"]}], dim=DIM)[0]] if "text" in props else []
            if "image" in props:
                parts.append(embedder.embed([{"image": base64.b64decode(props["image"])}], dim=DIM)[0])
            want = np.mean(parts, axis=0)  # Weaviate's (equal) field weighting for fused objects
            assert _cos(stored, want) >= 0.9999, key
            if "text" in props:
                text_vec = obj.vector["text"]
                assert len(text_vec) == 64
                assert _cos(text_vec, embedder.embed([props["text"]], dim=64)[0]) >= 0.9999, key

        # near_text / near_image go through the service and find the right object first
        res = collection.query.near_text("a small grey cat sleeping", target_vector="multimodal", limit=2)
        assert res.objects[0].uuid.hex == row_uuid("cat").replace("-", "")
        res = collection.query.near_image(images[0], target_vector="multimodal", limit=2)
        assert res.objects[0].uuid.hex == row_uuid("img0").replace("-", "")

        # Weaviate's rerank calls our reranker: same scores, reordered by them
        query = "a cat"
        res = collection.query.near_text(query, target_vector="multimodal", limit=4,
                                         rerank=Rerank(prop="text", query=query),
                                         return_metadata=MetadataQuery(distance=True))
        with_text = [o for o in res.objects if o.properties.get("text")]
        assert with_text
        want = reranker.score(query, [o.properties["text"] for o in with_text])
        got = [o.metadata.rerank_score for o in with_text]
        np.testing.assert_allclose(got, want, atol=1e-4)
        assert got == sorted(got, reverse=True)
    finally:
        client.collections.delete(name)
        client.close()

"""The Qdrant store against real Qdrant local mode (never a mock): what the contract suite
(``test_contract.py``) does not cover. With ``QDRANT_URL`` set the store tests run against
that server; the local-mode folder tests are skipped there.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

pytest.importorskip("qdrant_client", reason="the Qdrant tests need the 'qdrant' extra (qdrant-client)")

import connectors  # noqa: E402
from embedder.errors import InputError, SchemaMismatchError, UnavailableError  # noqa: E402
from tests.connectors.backend_qdrant import new_store, open_test_store, target_for  # noqa: E402

DIM = 64
LOCAL_ONLY = pytest.mark.skipif(bool(os.environ.get("QDRANT_URL")), reason="a local-mode folder rule")


@pytest.fixture()
def make(tmp_path, request):
    """``make(suffix="", **kwargs)`` -> a created, empty vector-only store (dropped afterwards)."""
    from contextlib import ExitStack

    with ExitStack() as stack:
        def factory(suffix: str = "", **kwargs):
            return stack.enter_context(open_test_store(tmp_path, request.node.name + suffix, embedder=None,
                                                       dim=kwargs.pop("dim", DIM), **kwargs))
        yield factory


def _rows(n: int, seed: int = 3, **extra) -> list[dict]:
    rng = np.random.RandomState(seed)
    return [{"id": f"r{i}", "vector": rng.normal(size=DIM).astype(np.float32), "text": f"row {i}", **extra}
            for i in range(n)]


def test_parse_target_forms_and_bad_arguments(tmp_path):
    from connectors.qdrant import parse_target

    assert parse_target("qdrant:./data").path == "./data"
    assert parse_target("qdrant:///abs/data").path == "/abs/data"
    assert parse_target("qdrant://db:6333").url == "http://db:6333"
    assert parse_target("qdrant+https://cloud.example:6333").url == "https://cloud.example:6333"
    with pytest.raises(InputError, match="qdrant:./folder"):
        parse_target("qdrant:")
    target = f"qdrant:{tmp_path / 'q'}"
    for kwargs, message in (({"collection": "a/b"}, "collection name"), ({"quantization": "pq"}, "scalar"),
                            ({"dim": 64, "coarse_dim": 64}, "smaller than dim=64"), ({"hnsw": 16}, "dict")):
        with pytest.raises(InputError, match=message):
            connectors.connect(target, **{"collection": "c", "dim": 64, **kwargs})


def test_an_unreachable_server_is_unavailable():
    with pytest.raises(UnavailableError, match="Qdrant .* failed: server unavailable"):
        connectors.connect("qdrant://127.0.0.1:9", collection="c", dim=64, timeout=2)


def test_points_have_uuid5_ids_and_keep_our_id_and_payload(make):
    store = make(fields={"color": str, "n": int})
    vec = np.random.RandomState(1).normal(size=DIM).astype(np.float32)
    assert store.upsert([{"id": "photo 1.jpg", "vector": vec, "text": "a cat", "color": "red", "n": 3,
                          "metadata": {"year": 2020}}]).ok
    pid = str(uuid.uuid5(uuid.NAMESPACE_DNS, "photo 1.jpg"))
    [point] = store.client.retrieve(store.collection, [pid], with_payload=True)
    assert point.payload["id"] == "photo 1.jpg" and point.payload["text"] == "a cat"
    assert point.payload["metadata"] == {"year": 2020} and point.payload["color"] == "red" and point.payload["n"] == 3
    hit = store.search(vec, k=1)[0]
    assert hit.id == "photo 1.jpg" and "id" not in hit.fields and "_norm" not in hit.fields


def test_the_schema_and_fingerprint_are_the_collection_metadata(tmp_path, request, embedder):
    with open_test_store(tmp_path, request.node.name, embedder=embedder, dim=DIM, coarse_dim=16,
                         quantization="scalar", fields={"color": str, "price": float}) as store:
        entry = store.client.get_collection(store.collection).config.metadata["qvl"]
        assert entry["dim"] == DIM and entry["coarse_dim"] == 16 and entry["quantization"] == "int8"
        assert entry["fields"] == {"color": "str", "price": "float"}
        assert entry["fingerprint"] == embedder.fingerprint()
        vectors = store.client.get_collection(store.collection).config.params.vectors
        assert {name: v.size for name, v in vectors.items()} == {"full": DIM, "coarse": 16}
        with new_store(tmp_path, request.node.name, embedder=embedder, dim=None) as again:  # adopts everything
            assert (again.dim, again.coarse_dim, again.quantization) == (DIM, 16, "int8")  # "scalar" is int8
            assert again.fields == {"color": str, "price": float}
        with pytest.raises(SchemaMismatchError, match="coarse_dim=16, but coarse_dim=32"):
            new_store(tmp_path, request.node.name, embedder=embedder, dim=None, coarse_dim=32)


def test_a_collection_made_elsewhere_is_a_schema_mismatch(make):
    from qdrant_client import models

    store = make()
    store.client.create_collection(store.collection + "_x", vectors_config=models.VectorParams(
        size=DIM, distance=models.Distance.COSINE))
    try:
        with pytest.raises(SchemaMismatchError, match="no named vector 'full'.*not created by this connector"):
            connectors.connect(str(store.target), collection=store.collection + "_x")
    finally:
        store.client.delete_collection(store.collection + "_x")


def test_coarse_to_fine_is_one_query_and_agrees_with_exact_search(make):
    store = make(coarse_dim=16)
    rows = _rows(60)
    oracle = connectors.connect("memory:", dim=DIM)
    oracle.create()
    oracle.upsert(rows)
    assert store.upsert(rows).ok
    calls = []
    query_points = store.client.query_points

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return query_points(*args, **kwargs)

    store.client.query_points = counting  # a spy on the real client: every call still reaches Qdrant
    try:
        q = np.random.RandomState(9).normal(size=DIM).astype(np.float32)
        got, want = store.search(q, k=5), oracle.search(q, k=5)  # the shortlist (50) covers most rows
        assert [h.id for h in got][:3] == [h.id for h in want][:3]
        exact = {h.id: h.score for h in oracle.search(q, k=60)}
        assert all(h.score == pytest.approx(exact[h.id], abs=1e-3) for h in got)  # re-scored at full dim
        assert len(calls) == 1 and calls[0]["prefetch"].using == "coarse" and calls[0]["using"] == "full"
        every = store.search(q, k=5, coarse_candidates=60)  # a shortlist of every row: exact
        assert [h.id for h in every] == [h.id for h in want]
        assert np.allclose([h.score for h in every], [h.score for h in want], atol=1e-3)
        full = store.search(q, k=5, using="full")
        assert [h.id for h in full] == [h.id for h in want] and "prefetch" not in calls[-1]
        coarse = store.search(q, k=3, using="coarse")
        assert calls[-1]["using"] == "coarse" and len(coarse) == 3
        with pytest.raises(InputError, match="coarse_candidates must be an integer of at least 5"):
            store.search(q, k=5, coarse_candidates=4)
        with pytest.raises(InputError, match="using must be one of"):
            store.search(q, k=5, using="other")
    finally:
        del store.client.query_points


def test_a_vector_whose_coarse_prefix_is_zero_fails_alone(make):
    store = make(coarse_dim=16)
    bad = np.zeros(DIM, dtype=np.float32)
    bad[20] = 1.0
    report = store.upsert([{"id": "bad", "vector": bad, "text": "x"}, *_rows(2)])
    assert sorted(report.written) == ["r0", "r1"]
    assert report.failed == [("bad", "the vector's first 16 dims (the coarse vector) are all zeros "
                                     "(cosine similarity is undefined)")]


def test_a_declared_field_of_another_type_fails_its_row_only(make):
    store = make(fields={"price": int})
    rows = _rows(3)
    rows[1]["price"] = "ten"
    rows[2]["price"] = 7
    report = store.upsert(rows)
    assert sorted(report.written) == ["r0", "r2"]
    assert report.failed == [("r1", "field 'price' must be int (or None), got str 'ten'")]


def test_the_native_filter_is_a_qdrant_filter(make):
    from qdrant_client import models

    store = make(fields={"color": str})
    rows = _rows(6)
    for i, row in enumerate(rows):
        row["color"] = "red" if i % 2 else "blue"
    assert store.upsert(rows).ok
    flt = models.Filter(must=[models.FieldCondition(key="color", match=models.MatchValue(value="red"))])
    assert {h.id for h in store.search(rows[0]["vector"], k=10, filter=flt)} == {"r1", "r3", "r5"}
    with pytest.raises(InputError, match="the portable filter.*qdrant_client.models.Filter"):
        store.search(rows[0]["vector"], k=1, filter="color == 'red'")


def test_metadata_keys_any_characters_and_lists_follow_the_portable_rules(make):
    store = make()
    rows = _rows(4)
    rows[0]["metadata"] = {"a.b": 1, "tags": ["x", "y"], "with space": "s"}
    rows[1]["metadata"] = {"a.b": 2, "tags": "x", "with space": "s"}
    rows[2]["metadata"] = {"a": {"b": 1}, "tags": ["x"]}
    assert store.upsert(rows).ok
    q = rows[3]["vector"]
    assert [h.id for h in store.search(q, k=4, filter={"a.b": 1})] == ["r0"]  # the key "a.b", not a.b
    assert [h.id for h in store.search(q, k=4, filter={"tags": "x"})] == ["r1"]  # a list matches nothing
    assert [h.id for h in store.search(q, k=4, filter={"tags": {"$ne": "z"}})] == ["r1"]
    assert {h.id for h in store.search(q, k=4, filter={"with space": "s"})} == {"r0", "r1"}


def test_quantization_searches_with_rescoring(make):
    store = make(quantization="binary")
    rows = _rows(20)
    assert store.upsert(rows).ok
    hit = store.search(rows[4]["vector"], k=1, rescore=True, oversampling=2.0)[0]
    assert hit.id == "r4" and hit.score == pytest.approx(1.0, abs=1e-3)
    plain = make("_plain")
    with pytest.raises(InputError, match="rescore and oversampling apply to a quantized collection"):
        plain.search(rows[0]["vector"], k=1, rescore=True)
    with pytest.raises(InputError, match="unknown search option.*Qdrant takes using"):
        plain.search(rows[0]["vector"], k=1, ef=10)


_HOLDER = """
import sys, connectors
store = connectors.connect(sys.argv[1], collection="held", dim=64)
store.create(exist_ok=True)
print("holding", flush=True)
sys.stdin.read()
store.close()
"""


@LOCAL_ONLY
def test_a_folder_open_in_another_process_is_refused_in_one_line(tmp_path):
    """Local mode locks its folder for one client; this process' stores share one, another process is refused."""
    folder = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, f"qdrant:{folder}"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
        with pytest.raises(UnavailableError) as info:
            connectors.connect(f"qdrant:{folder}", collection="held", dim=64)
        assert str(info.value) == (f"{folder} is open in another process; Qdrant local mode allows one process "
                                   "per folder: use a Qdrant server (qdrant://host:6333) or close that process")
    finally:
        holder.communicate(input="", timeout=60)
    assert holder.returncode == 0
    with connectors.connect(f"qdrant:{folder}", collection="held") as one, \
            connectors.connect(f"qdrant:{folder}", collection="held") as two:  # one client, shared
        assert one.client is two.client and one.count() == two.count() == 0
    with connectors.connect(f"qdrant:{folder}", collection="held") as again:  # the last close freed it
        assert again.count() == 0


@LOCAL_ONLY
def test_a_new_process_reads_what_another_wrote(tmp_path):
    script = ("import sys, numpy as np, connectors\n"
              "with connectors.connect(sys.argv[1], collection='w', dim=64, coarse_dim=16) as s:\n"
              "    s.create(fields={'color': str})\n"
              "    rng = np.random.RandomState(3)\n"
              "    r = s.upsert([{'id': f'r{i}', 'vector': rng.normal(size=64), 'color': 'c'} for i in range(10)])\n"
              "    print(len(r.written))\n")
    target = target_for(tmp_path)
    done = subprocess.run([sys.executable, "-c", script, target], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "10", done.stderr
    vecs = np.random.RandomState(3).normal(size=(10, DIM)).astype(np.float32)
    with connectors.connect(target, collection="w") as store:
        assert (store.count(), store.coarse_dim, store.fields) == (10, 16, {"color": str})
        assert store.search(vecs[6], k=1)[0].id == "r6"
        rows = {r.id: r for page, _ in store.scan() for r in page}
        assert np.allclose(rows["r2"].vector, vecs[2], atol=1e-5)  # as written, not normalised


def test_driver_errors_become_ours_and_say_whether_they_are_transient():
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    from connectors.core import is_transient
    from connectors.qdrant import translate
    from embedder.errors import ConnectorError, NotFoundError

    def status(code: int) -> UnexpectedResponse:
        return UnexpectedResponse(status_code=code, reason_phrase="x", content=b'{"status": {"error": "boom"}}',
                                  headers=httpx.Headers())

    refused = ResponseHandlingException(httpx.ConnectError("[Errno 111] Connection refused"))
    for exc in (refused, ResponseHandlingException(httpx.ReadTimeout("timed out")), status(503), status(429)):
        ours = translate(exc, "upsert")
        assert isinstance(ours, UnavailableError) and is_transient(ours), exc
    assert isinstance(translate(status(404), "count"), NotFoundError)
    assert isinstance(translate(ValueError("Collection photos not found"), "count"), NotFoundError)
    bad = translate(status(400), "upsert")
    assert type(bad) is ConnectorError and not is_transient(bad)

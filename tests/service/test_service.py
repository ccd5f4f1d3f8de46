"""``qvl serve`` end to end: the real app under uvicorn on 127.0.0.1, called with httpx.

Every protocol is checked against ``Embedder.embed`` / ``Reranker.score`` of the same
items (cosine >= 0.9999), with its error shapes, auth, limits, a full queue, dynamic
batching, and the RemoteEmbedder / RemoteReranker clients.
"""
from __future__ import annotations

import base64
import contextlib
import copy
import functools
import http.server
import io
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import numpy as np
import pytest

from embedder import EmbedResult, InputError, OverloadedError, RemoteEmbedder, RemoteError, RemoteReranker
from embedder.embedder import DEFAULT_QUERY_INSTRUCTION, Embedder
from embedder.service import ServiceSettings

from ..conftest import make_image

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

pytestmark = pytest.mark.timeout(120)

DASHSCOPE_PATH = "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding"


# ---------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def serve(settings: ServiceSettings, embedder: Any, reranker: Any = None) -> Iterator[str]:
    """Run the app with uvicorn in a background thread on a free 127.0.0.1 port; yield its URL."""
    import uvicorn

    from embedder.service import create_app

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(settings, embedder=embedder, reranker=reranker)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the service did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


class SlowEmbedder(Embedder):
    """The same model, with a sleep before each forward pass (to fill queues on purpose)."""

    delay = 0.3

    def forward(self, prepared):  # type: ignore[override]
        time.sleep(self.delay)
        return super().forward(prepared)


def slow(embedder: Embedder, delay: float) -> Embedder:
    view = copy.copy(embedder)
    view.__class__ = SlowEmbedder
    view.delay = delay
    return view


def png_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def raw_b64(image) -> str:
    return png_uri(image).split("base64,", 1)[1]


def assert_close(got: Any, want: np.ndarray) -> None:
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == want.shape, (got.shape, want.shape)
    cos = np.sum(got * want, axis=-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert np.all(cos >= 0.9999), cos


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{") and line.split("}")[0][len(name) + 1:] == want:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{want}}} not in metrics")


@pytest.fixture(scope="module")
def url(embedder, reranker) -> Iterator[str]:
    """The default service: no key, no URLs, no paths; multi2vec-clip routes default to 64 dims."""
    with serve(ServiceSettings(route_dims={"clip": 64}), embedder, reranker) as base:
        yield base


@pytest.fixture(scope="module")
def client(url) -> Iterator[Any]:
    with httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def media():
    return [make_image(96, 64, seed=3), make_image(64, 80, seed=4)]


# ---------------------------------------------------------------------------- health, meta, metrics
def test_health_readiness_meta(client):
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    assert client.get("/.well-known/live").status_code == 204
    assert client.get("/.well-known/ready").status_code == 204
    meta = client.get("/meta").json()
    assert meta["dim"] == 128 and meta["model"]["dim"] == 128
    assert meta["allow_urls"] is False and meta["allow_paths"] is False


def test_metrics_prometheus_text(client):
    client.post("/v1/embed", json={"inputs": ["metrics please"]})
    resp = client.get("/metrics")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert metric(text, "qvl_requests_total", route="/v1/embed", status="200") >= 1
    assert metric(text, "qvl_items_total", route="/v1/embed") >= 1
    assert metric(text, "qvl_queue_depth", model="embed") == 0
    assert metric(text, "qvl_request_seconds_count", route="/v1/embed") >= 1
    assert metric(text, "qvl_batch_size_count", model="embed") >= 1
    assert "# TYPE qvl_request_seconds histogram" in text


# ---------------------------------------------------------------------------- native + DashScope
def test_native_embed_equals_local(client, embedder, media):
    local_items = ["a red car", {"image": media[0]}, {"text": "fused", "image": media[1]}, ""]
    wire_items = ["a red car", {"image": png_uri(media[0])}, {"text": "fused", "image": raw_b64(media[1])}, ""]
    for dim in (None, 64):
        body = {"inputs": wire_items, "instruction": "Find the thing"}
        if dim:
            body["dimension"] = dim
        resp = client.post("/v1/embed", json=body)
        assert resp.status_code == 200, resp.text
        out = resp.json()
        assert out["dimension"] == (dim or 128)
        assert_close(out["embeddings"], embedder.embed(local_items, dim=dim, instruction="Find the thing"))
    # base64 float32 transport is exact
    resp = client.post("/v1/embed", json={"inputs": wire_items[:1], "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(resp["embeddings"][0]), dtype="<f4")
    assert_close(vec[None], embedder.embed(local_items[:1]))


def test_native_embed_on_error_skip(client, embedder):
    resp = client.post("/v1/embed", json={"inputs": ["ok", {"image": "data:image/png;base64,!!!"}, "fine"],
                                          "on_error": "skip"})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["embeddings"][1] is None
    assert out["errors"][0]["index"] == 1 and "base64" in out["errors"][0]["message"]
    assert_close([out["embeddings"][0], out["embeddings"][2]], embedder.embed(["ok", "fine"]))


@pytest.mark.parametrize("path", ["/v1/embed", DASHSCOPE_PATH])
def test_dashscope_shape(client, embedder, media, path):
    body = {"model": "qwen3-vl-embedding",
            "input": {"contents": ["plain string", {"text": "a text"}, {"image": png_uri(media[0])},
                                   {"text": "fused", "image": png_uri(media[1])},
                                   {"multi_images": [png_uri(media[0]), png_uri(media[1])]}]},
            "parameters": {"dimension": 64, "output_type": "dense", "instruct": "Find the thing"}}
    resp = client.post(path, json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    embs = out["output"]["embeddings"]
    assert [e["index"] for e in embs] == [0, 1, 2, 3, 4]
    assert [e["type"] for e in embs] == ["text", "text", "image", "vl", "multi_images"]
    assert out["usage"]["input_tokens"] > 0 and out["usage"]["image_tokens"] > 0 and out["request_id"]
    want = embedder.embed(["plain string", "a text", {"image": media[0]}, {"text": "fused", "image": media[1]},
                           {"image": media}], dim=64, instruction="Find the thing")
    assert_close([e["embedding"] for e in embs], want)
    bad = client.post(path, json={**body, "parameters": {"dimension": 5}})
    assert bad.status_code == 400
    assert bad.json()["code"] == "InvalidParameter" and "dimension" in bad.json()["message"]
    assert bad.json()["request_id"]


# ---------------------------------------------------------------------------- OpenAI, TEI
def test_openai_embeddings(client, embedder):
    resp = client.post("/v1/embeddings", json={"model": "qwen", "input": ["hello", "world"], "dimensions": 96})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["object"] == "list" and out["model"] == "qwen" and out["usage"]["prompt_tokens"] > 0
    assert [d["index"] for d in out["data"]] == [0, 1] and out["data"][0]["object"] == "embedding"
    want = embedder.embed(["hello", "world"], dim=96)
    assert_close([d["embedding"] for d in out["data"]], want)
    b64 = client.post("/v1/embeddings", json={"input": "hello", "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="float32")
    assert_close(vec[None], embedder.embed(["hello"]))
    err = client.post("/v1/embeddings", json={"input": "hello", "dimensions": 4096})
    assert err.status_code == 400
    assert err.json()["error"]["type"] == "invalid_request_error" and "4096" in err.json()["error"]["message"]
    assert client.post("/v1/embeddings", json={"input": [1, 2, 3]}).status_code == 400


def test_tei_embed_and_rerank(client, embedder, reranker):
    resp = client.post("/embed", json={"inputs": "one text", "truncate": True})
    assert resp.status_code == 200
    assert_close(resp.json(), embedder.embed(["one text"]))
    resp = client.post("/embed", json={"inputs": ["a", "b"], "dimensions": 64})
    assert_close(resp.json(), embedder.embed(["a", "b"], dim=64))
    docs = ["a red car", "a blue boat", "a green tree"]
    resp = client.post("/rerank", json={"query": "red car", "texts": docs, "return_text": True})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    want = reranker.score("red car", docs)
    assert [r["index"] for r in out] == list(np.argsort(-want, kind="stable"))
    assert all(r["text"] == docs[r["index"]] for r in out)
    assert np.allclose([r["score"] for r in sorted(out, key=lambda r: r["index"])], want, atol=1e-5)
    raw = client.post("/rerank", json={"query": "red car", "texts": docs, "raw_scores": True}).json()
    logits = np.log(want / (1 - want))
    assert np.allclose([r["score"] for r in sorted(raw, key=lambda r: r["index"])], logits, atol=1e-3)
    err = client.post("/rerank", json={"query": "q", "texts": ["ok", 3]})
    assert err.status_code == 400 and "error" in err.json() and err.json()["error_type"] == "Validation"


# ---------------------------------------------------------------------------- Weaviate modules
def test_weaviate_multi2vec_clip(client, embedder, media):
    # exactly what modules/multi2vec-clip/clients/vectorizer.go sends: raw base64 blobs
    resp = client.post("/vectorize", json={"texts": ["a cat", "a dog"], "images": [raw_b64(media[0])]})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert_close(out["textVectors"], embedder.embed(["a cat", "a dog"], dim=64))  # route default dim 64
    assert_close(out["imageVectors"], embedder.embed([{"image": media[0]}], dim=64))
    only_images = client.post("/vectorize", json={"texts": None, "images": [raw_b64(media[1])]}).json()
    assert only_images["textVectors"] == [] and len(only_images["imageVectors"]) == 1
    err = client.post("/vectorize", json={"texts": [], "images": ["bm90IGFuIGltYWdl" * 8]})
    assert err.status_code == 400 and isinstance(err.json()["error"], str)


def test_weaviate_text2vec_transformers(client, embedder):
    # the body of usecases/modulecomponents/clients/transformers: text, dims, vector, error, config
    body = {"text": "red shoes", "dims": 0, "vector": None, "error": "",
            "config": {"pooling_strategy": "masked_mean", "task_type": "query", "dimensions": 64}}
    out = client.post("/vectors", json=body).json()
    assert out["text"] == "red shoes" and out["dims"] == 64
    assert_close([out["vector"]], embedder.embed_queries(["red shoes"], dim=64))
    body["config"]["task_type"] = "passage"
    out = client.post("/vectors", json=body).json()
    assert_close([out["vector"]], embedder.embed_documents(["red shoes"], dim=64))
    assert not np.allclose(out["vector"], embedder.embed(["red shoes"], dim=64,
                                                         instruction=DEFAULT_QUERY_INSTRUCTION)[0])
    batch = client.post("/vectors", json={"texts": ["a", "b"], "config": {"task_type": "passage"}}).json()
    assert batch["dims"] == 128
    assert_close(batch["vectors"], embedder.embed(["a", "b"]))
    err = client.post("/vectors", json={"config": {}})
    assert err.status_code == 400 and isinstance(err.json()["error"], str)


def test_weaviate_reranker_transformers(client, reranker):
    docs = ["first doc", "second doc", "third doc"]
    resp = client.post("/rerank", json={"query": "a query", "documents": docs, "property": ""})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["query"] == "a query" and [s["document"] for s in out["scores"]] == docs
    assert np.allclose([s["score"] for s in out["scores"]], reranker.score("a query", docs), atol=1e-5)
    err = client.post("/rerank", json={"query": "q", "documents": ["ok", 1]})
    assert err.status_code == 400 and isinstance(err.json()["error"], str)


# ---------------------------------------------------------------------------- native rerank
def test_native_rerank(client, reranker, media):
    docs = ["a cat", {"image": png_uri(media[0])}, "a dog", {"text": "cat photo", "image": png_uri(media[1])}]
    local_docs = ["a cat", {"image": media[0]}, "a dog", {"text": "cat photo", "image": media[1]}]
    resp = client.post("/v1/rerank", json={"query": "cat", "documents": docs, "top_k": 2})
    assert resp.status_code == 200, resp.text
    want = reranker.rerank("cat", local_docs, top_k=2)
    got = resp.json()["results"]
    assert [r["index"] for r in got] == [i for i, _ in want]
    assert np.allclose([r["score"] for r in got], [s for _, s in want], atol=1e-5)
    bad = client.post("/v1/rerank", json={"query": "cat", "documents": ["ok", {"image": "data:image/png;base64,xx"}]})
    assert bad.status_code == 400 and bad.json()["error"]["index"] == 1
    assert bad.json()["error"]["message"].startswith("document 1:")
    badq = client.post("/v1/rerank", json={"query": {"image": "/etc/passwd"}, "documents": ["ok"]})
    assert badq.status_code == 400 and badq.json()["error"]["message"].startswith("query:")


# ---------------------------------------------------------------------------- errors and isolation
def test_error_shapes_name_the_item(client):
    resp = client.post("/v1/embed", json={"inputs": ["ok", "fine", {"image": "data:image/png;base64,AAAA"}]})
    assert resp.status_code == 400
    err = resp.json()["error"]
    assert err["code"] == "invalid_input" and err["index"] == 2 and err["message"].startswith("item 2:")
    resp = client.post("/v1/embed", json={"inputs": ["ok", {"txt": "typo"}]})
    assert resp.status_code == 400 and resp.json()["error"]["index"] == 1 and "txt" in resp.json()["error"]["message"]
    resp = client.post("/v1/embed", content=b"{not json", headers={"content-type": "application/json"})
    assert resp.status_code == 400 and "JSON" in resp.json()["error"]["message"]
    resp = client.post("/v1/embed", json={"inputs": ["x"], "dimension": 9999})
    assert resp.status_code == 400 and "dimension" in resp.json()["error"]["message"]
    resp = client.post("/v1/embeddings", json={"input": ["ok", {"image": "data:image/png;base64,AAAA"}]})
    assert resp.status_code == 400 and "item 1" in resp.json()["error"]["message"]


def test_bad_item_fails_only_its_own_request(url, embedder):
    good = [f"good request {i}" for i in range(6)]

    def call(body):
        with httpx.Client(base_url=url, timeout=60) as c:
            return c.post("/v1/embed", json=body)

    bodies = [{"inputs": [g]} for g in good]
    bodies.insert(3, {"inputs": ["fine", {"image": "data:image/png;base64,AAAA"}]})
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, bodies))
    assert results[3].status_code == 400 and results[3].json()["error"]["index"] == 1
    good_results = [r for i, r in enumerate(results) if i != 3]
    assert all(r.status_code == 200 for r in good_results)
    assert_close([r.json()["embeddings"][0] for r in good_results], embedder.embed(good))


# ---------------------------------------------------------------------------- security
@pytest.fixture()
def image_server(tmp_path):
    """A tiny HTTP server on 127.0.0.1 serving one PNG."""
    make_image(72, 56, seed=9).save(tmp_path / "pic.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None  # type: ignore[assignment]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/pic.png", str(tmp_path / "pic.png")
    httpd.shutdown()
    httpd.server_close()


def test_paths_and_urls_refused_by_default(client, image_server):
    image_url, path = image_server
    for source in (path, "file://" + path, image_url):
        resp = client.post("/v1/embed", json={"inputs": [{"image": source}]})
        assert resp.status_code == 400, source
        assert "refused" in resp.json()["error"]["message"] and resp.json()["error"]["index"] == 0
    resp = client.post("/vectorize", json={"texts": [], "images": [path]})
    assert resp.status_code == 400 and "refused" in resp.json()["error"]


def test_private_urls_refused_unless_enabled(embedder, image_server):
    image_url, _ = image_server
    with serve(ServiceSettings(allow_urls=True), embedder) as base, httpx.Client(base_url=base, timeout=60) as c:
        resp = c.post("/v1/embed", json={"inputs": ["ok", {"image": image_url}]})
        assert resp.status_code == 400
        err = resp.json()["error"]
        assert err["index"] == 1 and "non-public address 127.0.0.1" in err["message"]


def test_paths_and_urls_accepted_when_enabled(embedder, image_server):
    image_url, path = image_server
    with serve(ServiceSettings(allow_urls=True, allow_private_urls=True, allow_paths=True), embedder) as base, \
            httpx.Client(base_url=base, timeout=60) as c:
        resp = c.post("/v1/embed", json={"inputs": [{"image": path}, {"image": image_url}]})
        assert resp.status_code == 200, resp.text
        want = embedder.embed([{"image": path}])
        assert_close(resp.json()["embeddings"], np.vstack([want, want]))
        assert c.get("/meta").json()["allow_paths"] is True


def test_bearer_auth(embedder, reranker):
    with serve(ServiceSettings(api_key="s3cret"), embedder, reranker) as base, \
            httpx.Client(base_url=base, timeout=60) as c:
        body = {"inputs": ["x"]}
        assert c.post("/v1/embed", json=body).status_code == 401
        wrong = c.post("/v1/embed", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        assert "s3cret" not in wrong.text
        assert c.post("/v1/embed", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/v1/embeddings", json={"input": "x"}).json()["error"]["type"] == "invalid_request_error"
        assert c.post(DASHSCOPE_PATH, json={"input": {"contents": ["x"]}}).json()["code"] == "InvalidApiKey"
        assert c.post("/vectorize", json={"texts": ["x"]}).status_code == 401
        assert c.get("/metrics").status_code == 401
        assert c.get("/health").status_code == 200 and c.get("/.well-known/ready").status_code == 204
        assert c.get("/ready").status_code == 200 and c.get("/.well-known/live").status_code == 204
        assert c.get("/").status_code == 200
        # /meta shows the model path and the flags: only to key holders (issue 14.8)
        meta = c.get("/meta")
        assert meta.status_code == 401 and "tiny" not in meta.text and "allow_paths" not in meta.text
        assert c.get("/meta", headers={"Authorization": "Bearer s3cret"}).json()["dim"] == 128
        with RemoteEmbedder(base, api_key="s3cret") as remote:
            assert_close(remote.embed(["x"]), embedder.embed(["x"]))
        with RemoteEmbedder(base, retries=0) as remote, pytest.raises(RemoteError) as info:
            remote.embed(["x"], dim=64)
        assert info.value.status == 401


def test_limits_items_and_body(embedder):
    with serve(ServiceSettings(max_items=4, max_body_bytes=4096), embedder) as base, \
            httpx.Client(base_url=base, timeout=60) as c:
        resp = c.post("/v1/embed", json={"inputs": ["a"] * 5})
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_many_items"
        assert "limit is 4" in resp.json()["error"]["message"]
        resp = c.post("/v1/embed", json={"inputs": ["x" * 5000]})
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"
        assert c.post("/v1/embed", json={"inputs": ["a"] * 4}).status_code == 200
        # the client splits a large call to fit the server's limit
        with RemoteEmbedder(base) as remote:
            assert_close(remote.embed([f"t{i}" for i in range(9)]), embedder.embed([f"t{i}" for i in range(9)]))


# ---------------------------------------------------------------------------- backpressure, batching
def test_full_queue_is_503_with_retry_after(embedder):
    settings = ServiceSettings(max_queue=1, max_batch_items=1, max_wait_ms=0, retry_after=1.0)
    with serve(settings, slow(embedder, 0.4)) as base:
        def call(i):
            with httpx.Client(base_url=base, timeout=60) as c:
                return c.post("/v1/embed", json={"inputs": [f"load {i}"]})

        with ThreadPoolExecutor(6) as pool:
            results = list(pool.map(call, range(6)))
        refused = [r for r in results if r.status_code == 503]
        assert refused and any(r.status_code == 200 for r in results)
        assert refused[0].headers["retry-after"] == "1"
        assert refused[0].json()["error"]["code"] == "overloaded"
        # the client retries 503 with backoff and gets through
        with RemoteEmbedder(base, retries=8, backoff=0.05) as remote, ThreadPoolExecutor(3) as pool:
            outs = list(pool.map(lambda i: remote.embed([f"r{i}"], dim=64), range(3)))
        assert_close(np.vstack(outs), embedder.embed([f"r{i}" for i in range(3)], dim=64))


def test_request_timeout_is_504(embedder):
    with serve(ServiceSettings(timeout=0.2), slow(embedder, 0.6)) as base, \
            httpx.Client(base_url=base, timeout=60) as c:
        resp = c.post("/v1/embed", json={"inputs": ["too slow"]})
        assert resp.status_code == 504 and resp.json()["error"]["code"] == "timeout"


def test_concurrent_requests_share_batches_and_keep_order(embedder):
    requests = [[f"request {r} item {k} " + "word " * (3 * k + r % 4) for k in range(3)] for r in range(12)]
    with serve(ServiceSettings(max_wait_ms=20), slow(embedder, 0.25)) as base:
        def call(items):
            with httpx.Client(base_url=base, timeout=60) as c:
                return c.post("/v1/embed", json={"inputs": items, "dimension": 64})

        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(call, requests))
        for items, resp in zip(requests, results):
            assert resp.status_code == 200, resp.text
            assert_close(resp.json()["embeddings"], embedder.embed(items, dim=64))
        text = httpx.get(base + "/metrics").text
    batches = metric(text, "qvl_batch_size_count", model="embed")
    at_most_4 = metric(text, "qvl_batch_size_bucket", le="4.0", model="embed")  # prometheus_client: le first, a float
    assert at_most_4 < batches  # some forward pass held more than 4 items: requests were merged
    assert batches < 12


# ---------------------------------------------------------------------------- clients
def test_remote_embedder_parity(url, embedder, image_files, media):
    items = ["text one", media[0], image_files[0], {"image": image_files[1], "text": "fused"},
             np.asarray(media[1]), open(image_files[2], "rb").read(), {"text": ["two", "texts"]}]
    with RemoteEmbedder(url, max_items_per_request=2) as remote:
        assert remote.dim == embedder.dim == 128
        assert_close(remote.embed(items), embedder.embed(items))
        assert_close(remote.embed(items, dim=64, instruction="Find it"),
                     embedder.embed(items, dim=64, instruction="Find it"))
        assert_close(remote.embed_queries(["q1", "q2"], dim=64), embedder.embed_queries(["q1", "q2"], dim=64))
        assert_close(remote.embed_documents(["d1"]), embedder.embed_documents(["d1"]))
        bad = ["a", "b", "c", {"image": "data:image/png;base64,AAAA"}, "e"]
        with pytest.raises(InputError) as want:
            embedder.embed(bad)
        with pytest.raises(InputError) as got:
            remote.embed(bad)
        assert got.value.index == want.value.index == 3
        assert got.value.reason == want.value.reason
        missing = ["a", {"image": "/no/such/file.png"}]
        with pytest.raises(InputError) as info:
            remote.embed(missing)
        assert info.value.index == 1 and "not found" in str(info.value)
        res = remote.embed(bad + missing, on_error="skip")
        ref = embedder.embed(bad + missing, on_error="skip")
        assert isinstance(res, EmbedResult)
        assert res.indices == ref.indices == [0, 1, 2, 4, 5]
        assert [i for i, _ in res.errors] == [i for i, _ in ref.errors] == [3, 6]
        assert_close(res.vectors, ref.vectors)
        with pytest.raises(InputError):
            remote.embed("not a list")
        with pytest.raises(InputError):
            remote.embed(["x"], dim=4096)


def test_remote_reranker_parity(url, reranker, media):
    docs = ["a cat", media[0], "a dog", {"text": "cat photo", "image": media[1]}, "cats everywhere"]
    with RemoteReranker(url, max_items_per_request=2) as remote:
        assert np.allclose(remote.score("cat", docs), reranker.score("cat", docs), atol=1e-5)
        got, want = remote.rerank("cat", docs, top_k=3), reranker.rerank("cat", docs, top_k=3)
        assert [i for i, _ in got] == [i for i, _ in want]
        assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
        bad = ["ok", "fine", "good", {"image": "data:image/png;base64,AAAA"}]
        with pytest.raises(InputError) as info:
            remote.score("q", bad)
        assert info.value.index == 3 and str(info.value).startswith("document 3:")
        skipped = remote.score("q", bad, on_error="skip")
        assert np.isnan(skipped.scores[3]) and [i for i, _ in skipped.errors] == [3]
        assert np.allclose(skipped.scores[:3], reranker.score("q", bad[:3]), atol=1e-5)


def test_remote_unavailable_and_no_reranker(embedder):
    with serve(ServiceSettings(), embedder) as base:
        with RemoteReranker(base, retries=0) as remote, pytest.raises(RemoteError) as info:
            remote.score("q", ["d"])
        assert info.value.status == 501
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with RemoteEmbedder(f"http://127.0.0.1:{port}", retries=1, backoff=0.01) as remote:
        with pytest.raises(RemoteError) as info:
            remote.embed(["x"], dim=64)
        assert info.value.code == "unavailable"
    assert not isinstance(info.value, OverloadedError)


# ---------------------------------------------------------------------------- CLI and imports
def test_cli_parser_defaults_and_env(monkeypatch):
    from connectors.cli import build_parser
    from connectors.cli.serve import settings_from_args

    args = build_parser().parse_args(["serve", "--model", "some/model", "--route-dim", "clip=512"])
    monkeypatch.setenv("QVL_API_KEY", "from-env")
    settings = settings_from_args(args)
    assert settings.host == "127.0.0.1" and settings.port == 8080
    assert settings.allow_urls is False and settings.allow_paths is False
    assert settings.api_key == "from-env" and "from-env" not in repr(settings)
    assert settings.dim_for("clip") == 512 and settings.dim_for("native") is None
    assert callable(args.func)
    assert settings.allow_video is True and settings.max_body_bytes == 32 * 1024 * 1024
    limited = settings_from_args(build_parser().parse_args(
        ["serve", "--model", "m", "--no-video", "--max-text-chars", "10", "--max-frames", "8", "--max-inflight", "3",
         "--max-inflight-bytes", "1000", "--max-preprocess-queue", "7", "--body-timeout", "2.5",
         "--max-image-pixels", "4096", "--max-video-pixels", "65536", "--url-timeout", "3", "--url-min-rate", "100"]))
    assert (limited.allow_video, limited.max_text_chars, limited.max_frames, limited.max_inflight) == (False, 10, 8, 3)
    assert (limited.max_inflight_bytes, limited.max_preprocess_queue, limited.body_timeout) == (1000, 7, 2.5)
    assert (limited.max_image_pixels, limited.max_video_pixels, limited.url_timeout) == (4096, 65536, 3.0)
    from embedder.service.app import load_option_values
    from embedder.items import LoadOptions

    options = load_option_values(limited, list(LoadOptions.__dataclass_fields__))
    assert options["allow_video"] is False and options["max_source_pixels"] == 4096
    assert options["max_video_pixels"] == 65536 and options["url_min_rate"] == 100 and options["max_text_chars"] == 10


def test_imports_stay_light():
    code = ("import sys, embedder, embedder.service, connectors.cli.serve; embedder.RemoteEmbedder; "
            "heavy = [m for m in ('fastapi', 'uvicorn', 'httpx', 'torch', 'transformers') if m in sys.modules]; "
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_video_file_parity(url, embedder, tmp_path):
    pytest.importorskip("av")
    from ..test_embedder import write_video

    path = write_video(str(tmp_path / "clip.mp4"), n_frames=8, fps=4, size=(64, 64))
    with RemoteEmbedder(url) as remote:
        assert_close(remote.embed([{"video": path}], dim=64), embedder.embed([{"video": path}], dim=64))
    uri = "data:video/mp4;base64," + base64.b64encode(open(path, "rb").read()).decode()
    resp = httpx.post(url + "/v1/embed", json={"inputs": [{"video": uri, "text": "clip"}]}, timeout=60)
    assert resp.status_code == 200, resp.text
    assert_close(resp.json()["embeddings"], embedder.embed([{"video": path, "text": "clip"}]))


def test_unused_regex_guard():
    # the raw-base64 recogniser must not swallow ordinary paths or short strings
    from embedder.service.protocols import decode_media

    assert decode_media("/tmp/a.png", "image") == "/tmp/a.png"
    assert decode_media("abcd", "image") == "abcd"
    assert isinstance(decode_media("QUJD" * 20, "image"), bytes)
    assert re.match(r"data:", decode_media("data:image/png;base64,QUJD", "image"))


def test_dashscope_fps_samples_video_files(url, embedder, tmp_path):
    pytest.importorskip("av")
    from ..test_embedder import write_video

    path = write_video(str(tmp_path / "clip8.mp4"), n_frames=16, fps=4, size=(64, 64))
    uri = "data:video/mp4;base64," + base64.b64encode(open(path, "rb").read()).decode()
    body = {"model": "qwen3-vl-embedding", "input": {"contents": [{"video": uri}]},
            "parameters": {"dimension": 64, "fps": 0.5}}
    resp = httpx.post(url + "/api/v1/services/embeddings/multimodal-embedding/multimodal-embedding", json=body,
                      timeout=60)
    assert resp.status_code == 200, resp.text
    got = resp.json()["output"]["embeddings"][0]["embedding"]
    assert_close([got], embedder.embed([{"video": path, "fps": 0.5}], dim=64))
    assert float(np.dot(got, embedder.embed([{"video": path, "fps": 4.0}], dim=64)[0])) < 0.9999
    body["parameters"]["fps"] = 3
    resp = httpx.post(url + "/v1/embed", json=body, timeout=60)
    assert resp.status_code == 400 and "parameters.fps must be a number in [0, 1]" in resp.text

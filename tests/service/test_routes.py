"""The routers' shared machinery: validation errors in each protocol's shape, auth as a dependency,
per-app metrics, and ``/meta``'s fingerprint. The real app under uvicorn, called with httpx."""
from __future__ import annotations

import copy

import pytest

from embedder.embedder import Embedder
from embedder.service import ServiceSettings

from .test_service import DASHSCOPE_PATH, metric, serve

httpx = pytest.importorskip("httpx")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def client(embedder, reranker):
    with serve(ServiceSettings(), embedder, reranker) as base, httpx.Client(base_url=base, timeout=60) as c:
        yield c


def bad(client, path: str, body) -> dict:
    """POST a body that fails validation: 400 (never FastAPI's 422), JSON, never ``{"detail": ...}``."""
    resp = client.post(path, json=body)
    assert resp.status_code == 400, (path, body, resp.status_code, resp.text)
    out = resp.json()
    assert "detail" not in out, out
    return out


def test_validation_errors_take_each_protocols_shape(client):
    # native: {"error": {"code", "message", ...}}
    err = bad(client, "/v1/embed", {"inputs": ["x"], "dimension": "64"})["error"]
    assert err["code"] == "invalid_input" and "'dimension'" in err["message"] and "'64'" in err["message"]
    out = bad(client, "/v1/embed", {"inputs": ["x"], "encoding_format": "hex"})
    assert "encoding_format" in out["error"]["message"]
    assert "missing 'inputs'" in bad(client, "/v1/embed", {"input": ["x"]})["error"]["message"]
    assert "JSON object" in bad(client, "/v1/embed", ["x"])["error"]["message"]
    assert "'on_error'" in bad(client, "/v1/embed", {"inputs": ["x"], "on_error": "ignore"})["error"]["message"]
    assert "needs 'query'" in bad(client, "/v1/rerank", {"documents": ["x"]})["error"]["message"]
    err = bad(client, "/v1/rerank", {"query": "q", "documents": ["a", "b"], "top_k": 0})["error"]
    assert "'top_k'" in err["message"]
    # OpenAI: {"error": {"message", "type", "param", "code"}}
    err = bad(client, "/v1/embeddings", {"input": "x", "dimensions": True})["error"]
    assert err["type"] == "invalid_request_error" and "'dimensions'" in err["message"]
    assert "missing 'input'" in bad(client, "/v1/embeddings", {"inputs": "x"})["error"]["message"]
    # DashScope: {"code", "message", "request_id"}, on both of its paths
    for path in (DASHSCOPE_PATH, "/v1/embed"):
        out = bad(client, path, {"input": {"contents": ["x"]}, "parameters": {"dimension": "a"}})
        assert out["code"] == "InvalidParameter" and "dimension" in out["message"] and out["request_id"]
        out = bad(client, path, {"input": {"contents": ["x"]}, "parameters": {"max_video_frames": 2}})
        assert "max_video_frames must be an integer from 4 to 64" in out["message"]
    out = bad(client, DASHSCOPE_PATH, {"contents": ["x"]})  # no "input" at all (was a 500)
    assert out["code"] == "InvalidParameter" and "missing 'input'" in out["message"]
    # TEI: {"error", "error_type"}
    out = bad(client, "/embed", {"inputs": ["x"], "prompt_name": "summary"})
    assert out["error_type"] == "Validation" and "prompt_name" in out["error"]
    out = bad(client, "/rerank", {"query": "q", "texts": []})
    assert out["error_type"] == "Validation" and "texts" in out["error"]
    out = bad(client, "/", {"inputs": {"source_sentence": "a", "sentences": "not a list"}})
    assert out["error_type"] == "Validation" and "sentences" in out["error"]
    # Weaviate: {"error": "message"}
    for path, body in (("/vectors", {"text": 5}), ("/vectors", {"text": "x", "config": {"task_type": "other"}}),
                       ("/vectorize", {"texts": "not a list"}), ("/rerank", {"query": 1, "documents": ["a"]})):
        assert isinstance(bad(client, path, body)["error"], str), path


def test_item_errors_inside_lists_name_the_index(client):
    err = bad(client, "/v1/embed", {"inputs": ["ok", "fine", 7]})["error"]
    assert err["index"] == 2 and err["message"].startswith("item 2:")
    out = bad(client, "/v1/embeddings", {"input": ["ok", ["tokens"]]})
    assert "item 1" in out["error"]["message"] and "token-id" in out["error"]["message"]


def test_auth_dependency_keeps_shapes_and_is_metered(embedder):
    with serve(ServiceSettings(api_key="k3y"), embedder) as base, httpx.Client(base_url=base, timeout=60) as c:
        denied = c.post("/embed", json={"inputs": "x"})
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert denied.json()["error_type"] == "Unauthorized"
        assert c.post("/vectors", json={"text": "x"}).json() == {
            "error": "missing or invalid API key (send 'Authorization: Bearer <key>')"}
        assert c.get("/meta").json()["error"]["code"] == "unauthorized"
        # the key is checked before the body is read: a malformed body is still a 401
        assert c.post("/v1/embed", content=b"{not json").status_code == 401
        text = c.get("/metrics", headers={"Authorization": "Bearer k3y"}).text
    assert metric(text, "qvl_requests_total", route="/embed", status="401") == 1
    assert metric(text, "qvl_requests_total", route="/v1/embed", status="401") == 1
    assert 'route="/meta"' not in text  # probes, /meta and /metrics are not counted


def test_each_app_has_its_own_metrics(embedder):
    with serve(ServiceSettings(), embedder) as one, serve(ServiceSettings(), embedder) as two:
        for _ in range(3):
            assert httpx.post(one + "/v1/embed", json={"inputs": ["a"]}, timeout=60).status_code == 200
        assert httpx.post(two + "/vectors/", json={"text": "b"}, timeout=60).status_code == 200
        text_one = httpx.get(one + "/metrics").text
        text_two = httpx.get(two + "/metrics").text
    assert metric(text_one, "qvl_requests_total", route="/v1/embed", status="200") == 3
    assert metric(text_one, "qvl_items_total", route="/v1/embed") == 3
    assert 'route="/v1/embed"' not in text_two
    assert metric(text_two, "qvl_requests_total", route="/vectors", status="200") == 1  # "/vectors/" too
    assert "qvl_inflight_requests 0.0" in text_two.splitlines()


class Fingerprinted(Embedder):
    """The same model with a fixed fingerprint (and a count of how often it was asked)."""

    asked: list

    def fingerprint(self):  # type: ignore[override]
        self.asked.append(1)
        return {"fingerprint_version": 1, "model": "tiny", "dim": self.dim, "kind": "embedding"}


def test_meta_includes_the_fingerprint(embedder):
    view = copy.copy(embedder)
    view.__class__ = Fingerprinted
    view.asked = []
    with serve(ServiceSettings(), view) as base:
        first = httpx.get(base + "/meta", timeout=60).json()
        second = httpx.get(base + "/meta", timeout=60).json()
    assert first["fingerprint"] == {"fingerprint_version": 1, "model": "tiny", "dim": 128, "kind": "embedding"}
    assert second["fingerprint"] == first["fingerprint"] and len(view.asked) == 1  # computed once
    assert first["dim"] == 128 and first["limits"]["max_items"] == 256


def test_meta_fingerprint_is_the_served_embedders(client, embedder):
    if not hasattr(embedder, "fingerprint"):
        pytest.skip("this Embedder has no fingerprint()")
    meta = client.get("/meta").json()
    assert meta["fingerprint"] == embedder.fingerprint()

"""The Weaviate examples run end to end as subprocesses against the shared test server.

``examples/weaviate_quickstart.py`` loads the tiny checkpoints itself
(``--offline-test-model``); ``examples/weaviate_server_side.py`` talks to the shared
``qvl serve`` (tiny checkpoints) that the server's modules call.
"""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.connectors.backend_weaviate import drop_collection, test_collection_name, test_server
from tests.connectors.weaviate_server import SHARED, SHARED_SERVICE, ServerUnavailable, WeaviateServer

pytest.importorskip("weaviate", reason="weaviate-client is not installed (pip install 'qwen3-vl-search[weaviate]')")

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TIMEOUT_S = 600


@pytest.fixture(scope="session")
def weaviate_server() -> WeaviateServer:
    server = test_server()
    yield server
    SHARED.stop()


def run_example(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}\n--- stdout ---\n{proc.stdout}\n" \
                                 f"--- stderr ---\n{proc.stderr[-4000:]}"
    return proc


def test_quickstart_offline(weaviate_server, request):
    name = test_collection_name(request.node.name)
    drop_collection(weaviate_server, name)
    try:
        proc = run_example("weaviate_quickstart.py", "--weaviate", weaviate_server.target, "--collection", name,
                           "--offline-test-model")
    finally:
        drop_collection(weaviate_server, name)
    out = proc.stdout
    assert "RANDOM" in proc.stderr  # the offline model says its results mean nothing
    assert "named vectors {'full': 128, 'coarse': 64}" in out  # the tiny model's full dim and an MRL prefix
    assert "upserted: written 8, failed 0 []" in out
    assert "upserted again: written 8; count 8" in out
    reranked = re.findall(r"^  (\S+) +cosine (\S+)  rerank (\S+)  \S+ +price (\S+)$",
                          out.split("reranked:")[1].split("search by image")[0], re.M)
    assert len(reranked) == 3, out
    assert all(float(price) < 100 for *_, price in reranked)  # the filter applied
    scores = [float(r) for _, _, r, _ in reranked]
    assert scores == sorted(scores, reverse=True)  # reordered by the reranker
    image_hits = re.findall(r"^  ((?:img|vl)-\S+) +cosine", out.split("search by image")[1], re.M)
    assert len(image_hits) == 3, out  # only image and fused rows
    assert f"dropped {name}" in out


def test_server_side_example(weaviate_server, tiny_embedding_path, tiny_reranker_path, request):
    try:
        service = SHARED_SERVICE.get(weaviate_server, model=tiny_embedding_path, reranker=tiny_reranker_path,
                                     default_dim=128)
    except ServerUnavailable as exc:
        pytest.fail(str(exc))
    name = test_collection_name(request.node.name)
    drop_collection(weaviate_server, name)
    try:
        proc = run_example("weaviate_server_side.py", "--weaviate", weaviate_server.target,
                           "--service", service.url, "--collection", name)
    finally:
        drop_collection(weaviate_server, name)
    out = proc.stdout
    assert "vectors ['multimodal', 'video']" in out
    assert "inserted 5 objects without vectors; errors: {}" in out
    assert "client-side 128-dim 'video' vector" in out
    reranked = re.findall(r"^  (\S+) +distance (\S+)  rerank (\S+)$", out.split("reranked")[1].split("near_image")[0],
                          re.M)
    assert len(reranked) == 4, out
    scores = [float(r) for *_, r in reranked]
    assert scores == sorted(scores, reverse=True)  # Weaviate ordered the hits by our reranker's scores
    assert "near_image best match: img-red-circle" in out  # its stored vector is the image's own
    assert "near_vector on 'video' (query embedded by the service): video-red-disc" in out
    assert f"dropped {name}" in out

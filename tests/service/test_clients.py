"""Third-party clients against the real ``qvl serve`` (the console script, its own process).

Users talk to the service with their own SDKs: OpenAI's, Alibaba Cloud's DashScope and
Hugging Face's InferenceClient. Each is pointed at a ``qvl serve`` started with the tiny
checkpoints and an API key, and every vector must equal ``Embedder.embed`` of the same
items (to 1e-5), every score ``Reranker.score``.
"""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest

from ..conftest import make_image
from . import qvl_process

pytestmark = pytest.mark.timeout(300)

KEY = "client-test-key"


@pytest.fixture(scope="module")
def served(tiny_embedding_path, tiny_reranker_path):
    proc = qvl_process.start(tiny_embedding_path, args=["--reranker", tiny_reranker_path],
                             env={"QVL_API_KEY": KEY})
    try:
        yield proc
    finally:
        qvl_process.stop(proc)


@pytest.fixture(scope="module")
def images():
    return [make_image(96, 64, seed=11), make_image(64, 80, seed=12)]


def png_uri(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def close(got, want) -> None:
    got = np.asarray(got, dtype=np.float32)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert np.allclose(got, want, atol=1e-5), np.abs(got - want).max()


# ---------------------------------------------------------------------------- OpenAI
def test_openai_sdk_embeddings(served, embedder):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)
    texts = ["a red car", "a blue boat"]
    out = client.embeddings.create(model="qwen3-vl-embedding", input=texts, dimensions=64)
    assert [d.index for d in out.data] == [0, 1] and out.usage.prompt_tokens > 0
    close([d.embedding for d in out.data], embedder.embed(texts, dim=64))
    # The SDK's default asks for base64 and decodes it; explicit float and base64 too.
    close([d.embedding for d in client.embeddings.create(model="m", input=texts).data], embedder.embed(texts))
    floats = client.embeddings.create(model="m", input="one text", encoding_format="float")
    close([floats.data[0].embedding], embedder.embed(["one text"]))
    b64 = client.embeddings.create(model="m", input=texts, dimensions=96, encoding_format="base64")
    close([np.frombuffer(base64.b64decode(d.embedding), dtype="<f4") for d in b64.data],
          embedder.embed(texts, dim=96))
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="m", input="x", dimensions=4096)
    assert "4096" in str(info.value)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url + "/v1", api_key="wrong", max_retries=0).embeddings.create(
            model="m", input="x")


# ---------------------------------------------------------------------------- DashScope
def test_dashscope_sdk_multimodal_embedding(served, embedder, images):
    dashscope = pytest.importorskip("dashscope")
    from dashscope import MultiModalEmbedding

    base = served.url + "/api/v1"  # the SDK's base_http_api_url, per call (base_address)
    contents = [{"text": "a red car"}, {"image": png_uri(images[0])},
                {"text": "fused", "image": png_uri(images[1])}]
    local = ["a red car", {"image": images[0]}, {"text": "fused", "image": images[1]}]

    def call(**kwargs):
        return MultiModalEmbedding.call(model="qwen3-vl-embedding", input=contents, api_key=KEY,
                                        base_address=base, **kwargs)

    top = call(dimension=64)                               # sent as {"parameters": {"dimension": 64}}
    assert top.status_code == 200, (top.code, top.message)
    embs = top.output["embeddings"]
    assert [e["type"] for e in embs] == ["text", "image", "vl"]
    close([e["embedding"] for e in embs], embedder.embed(local, dim=64))
    assert top.usage["input_tokens"] > 0 and top.usage["image_tokens"] > 0

    nested = call(parameters={"dimension": 64, "instruct": "Find the thing"})  # {"parameters": {"parameters": ...}}
    assert nested.status_code == 200, (nested.code, nested.message)
    close([e["embedding"] for e in nested.output["embeddings"]],
          embedder.embed(local, dim=64, instruction="Find the thing"))

    both = call(dimension=64, instruct="Find the thing", output_type="dense")
    close([e["embedding"] for e in both.output["embeddings"]],
          embedder.embed(local, dim=64, instruction="Find the thing"))

    fused = call(dimension=64, enable_fusion=True)         # every content in ONE vector
    assert fused.status_code == 200 and len(fused.output["embeddings"]) == 1
    close([fused.output["embeddings"][0]["embedding"]],
          embedder.embed([{"text": ["a red car", "fused"], "image": [images[0], images[1]]}], dim=64))

    unknown = call(dimension=64, dimensions=64)            # a typo must not be dropped silently
    assert unknown.status_code == 400 and unknown.code == "InvalidParameter"
    assert "dimensions" in unknown.message and unknown.request_id
    conflict = call(dimension=64, parameters={"dimension": 128})
    assert conflict.status_code == 400 and conflict.code == "InvalidParameter" and "twice" in conflict.message
    bad = call(dimension=5)
    assert bad.status_code == 400 and bad.code == "InvalidParameter" and "dimension" in bad.message
    denied = MultiModalEmbedding.call(model="qwen3-vl-embedding", input=contents, api_key="wrong", base_address=base)
    assert denied.status_code == 401 and denied.code == "InvalidApiKey"
    assert dashscope  # the module imported above is the SDK under test


# ---------------------------------------------------------------------------- Hugging Face
def test_huggingface_inference_client(served, embedder, reranker):
    hub = pytest.importorskip("huggingface_hub")
    client = hub.InferenceClient(base_url=served.url, token=KEY)   # posts to "/" as to a TEI server
    close(client.feature_extraction("a red car"), embedder.embed(["a red car"]))
    close(client.feature_extraction(["a", "b"], dimensions=64), embedder.embed(["a", "b"], dim=64))
    close(client.feature_extraction(["red shoes"], prompt_name="query"), embedder.embed_queries(["red shoes"]))
    docs = ["a cat on a mat", "a red car", "cats sleeping"]
    # sentence_similarity is the client's query-vs-candidates call: scored by the reranker here
    scores = client.sentence_similarity("a cat", docs)
    assert np.allclose(scores, reranker.score("a cat", docs), atol=1e-5)
    with pytest.raises(hub.errors.HfHubHTTPError) as info:
        hub.InferenceClient(base_url=served.url, token="wrong").feature_extraction("x")
    assert info.value.response.status_code == 401


def test_huggingface_similarity_without_reranker(embedder):
    """With no reranker, sentence_similarity is the cosine of the embeddings (Hugging Face's definition)."""
    hub = pytest.importorskip("huggingface_hub")
    from .test_service import serve
    from embedder.service import ServiceSettings

    with serve(ServiceSettings(), embedder) as url:
        scores = hub.InferenceClient(base_url=url).sentence_similarity("a cat", ["a cat", "a red car"])
    vecs = embedder.embed(["a cat", "a cat", "a red car"])
    assert np.allclose(scores, vecs[1:] @ vecs[0], atol=1e-5)

"""The text-only Qwen3-Embedding / Qwen3-Reranker models (issue 20) on tiny offline checkpoints.

Pinned prompt tokens; vectors and scores against a reference computed here exactly as the
official README (github.com/QwenLM/Qwen3-Embedding) does it with plain transformers; the
kind read from config.json; MRL from 32; images refused by row; the service serving one.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from embedder import Embedder, InputError, ModelLoadError, Reranker
from embedder.model import checkpoint_modality, modality_of_config
from embedder.prompts import (TEXT_QUERY_INSTRUCTION, TEXT_RERANK_PREFIX, TEXT_RERANK_SUFFIX, text_rerank_pair,
                              tokenize_text, tokenize_text_rerank)

from .conftest import make_image

TASK = TEXT_QUERY_INSTRUCTION  # 'Given a web search query, retrieve relevant passages that answer the query'
QUERIES = ["What is the capital of China?", "Explain gravity"]
DOCUMENTS = ["The capital of China is Beijing.",
             "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects "
             "and is responsible for the movement of planets around the sun."]
EOT = 151643
# Instruct: Given a web search query, ... the query\nQuery:What is the capital of China?<|endoftext|>
QUERY_IDS = [641, 1235, 25, 16246, 264, 3482, 2711, 3239, 11, 17179, 9760, 46769, 429, 4226, 279, 3239, 198,
             2859, 25, 3838, 374, 279, 6722, 315, 5616, 30, EOT]
DOC_IDS = [785, 6722, 315, 5616, 374, 26549, 13, EOT]  # The capital of China is Beijing.<|endoftext|>
# <|im_start|>system\nJudge whether ... "yes" or "no".<|im_end|>\n<|im_start|>user\n
PREFIX_IDS = [151644, 8948, 198, 60256, 3425, 279, 11789, 20027, 279, 8502, 3118, 389, 279, 11361, 323, 279, 758,
              1235, 3897, 13, 7036, 429, 279, 4226, 646, 1172, 387, 330, 9693, 1, 476, 330, 2152, 3263, 151645, 198,
              151644, 872, 198]
SUFFIX_IDS = [151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271]  # <|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n
# <Instruct>: {TASK}\n<Query>: What is the capital of China?\n<Document>: The capital of China is Beijing.
PAIR_IDS = [27, 641, 1235, 26818, 16246, 264, 3482, 2711, 3239, 11, 17179, 9760, 46769, 429, 4226, 279, 3239, 198,
            27, 2859, 26818, 3555, 374, 279, 6722, 315, 5616, 5267, 75692, 26818, 576, 6722, 315, 5616, 374, 26549,
            13]


@pytest.fixture(scope="module")
def text_reranker_path(tmp_path_factory) -> str:
    from embedder.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-text-reranker"), kind="text-reranker", seed=3)


@pytest.fixture(scope="module")
def text_reranker(text_reranker_path):
    with Reranker.from_pretrained(text_reranker_path, device="cpu") as rr:
        yield rr


# ---------------------------------------------------------------------------- kind and prompts
def test_kind_comes_from_config_architectures_not_the_name(tiny_text_embedding_path, text_embedder, tmp_path):
    assert isinstance(text_embedder, Embedder) and text_embedder.kind == "text-embedding"
    assert text_embedder.dim == 128 and text_embedder.min_dim == 32
    # the same files under a VL model's name are still the text model
    disguised = tmp_path / "Qwen3-VL-Embedding-2B"
    disguised.mkdir()
    for name in os.listdir(tiny_text_embedding_path):
        os.symlink(os.path.join(tiny_text_embedding_path, name), disguised / name)
    assert checkpoint_modality(str(disguised)) == "text"  # what from_pretrained dispatches on
    assert Embedder.implementation("text") is type(text_embedder) and Embedder.implementation("vl") is Embedder
    assert Reranker.implementation("text").__name__ == "TextReranker"
    assert modality_of_config({"architectures": ["Qwen3VLForConditionalGeneration"]}) == "vl"
    assert modality_of_config({"architectures": ["Qwen3ForCausalLM"]}) == "text"
    with pytest.raises(ModelLoadError, match="unsupported architecture"):
        modality_of_config({"architectures": ["LlamaForCausalLM"]})


def test_pinned_prompt_tokens(text_embedder, text_reranker):
    assert text_embedder.prepare(QUERIES[0], instruction=TASK).input_ids == QUERY_IDS
    assert text_embedder.embed_queries.__func__ is not None and text_embedder.default_query_instruction == TASK
    assert text_embedder.prepare(DOCUMENTS[0]).input_ids == DOC_IDS  # a document has no instruction
    assert text_embedder.prepare({"text": QUERIES[0], "instruction": TASK}).input_ids == QUERY_IDS
    pair = text_reranker.prepare_pair(text_reranker.prepare_side(QUERIES[0]),
                                      text_reranker.prepare_side(DOCUMENTS[0]), TASK).input_ids
    assert pair == PREFIX_IDS + PAIR_IDS + SUFFIX_IDS
    assert text_reranker.tokenizer.decode(pair) == TEXT_RERANK_PREFIX + text_rerank_pair(
        TASK, QUERIES[0], DOCUMENTS[0]) + TEXT_RERANK_SUFFIX
    assert text_reranker.resolve_instruction(None) == TASK and text_reranker.max_length == 8192


def test_truncation_matches_the_release_and_keeps_the_pooled_token(text_embedder, text_reranker):
    tok, long = text_embedder.tokenizer, "word " * 200
    # the released tokenizer (appending <|endoftext|>) with truncation=True keeps room for it
    assert tokenize_text(tok, long, 16).input_ids == tok(long, truncation=True, max_length=16)["input_ids"]
    assert tokenize_text(tok, long, 16).input_ids[-1] == EOT
    rtok = text_reranker.tokenizer
    prefix = rtok.encode(TEXT_RERANK_PREFIX, add_special_tokens=False)
    suffix = rtok.encode(TEXT_RERANK_SUFFIX, add_special_tokens=False)
    for max_length in (64, 8192):  # the README's process_inputs
        body = rtok([text_rerank_pair(TASK, "q " * 10, long)], padding=False, truncation="longest_first",
                    return_attention_mask=False, max_length=max_length - len(prefix) - len(suffix))["input_ids"][0]
        got = tokenize_text_rerank(rtok, TASK, "q " * 10, long, max_length)
        assert got.input_ids == prefix + body + suffix and len(got.input_ids) <= max_length


# ---------------------------------------------------------------------------- against the official recipe
def test_vectors_equal_the_official_readme_way(tiny_text_embedding_path, text_embedder):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    def last_token_pool(last_hidden_states, attention_mask):  # the README's, verbatim in substance
        left_padding = (attention_mask[:, -1].sum() == attention_mask.shape[0])
        if left_padding:
            return last_hidden_states[:, -1]
        lengths = attention_mask.sum(dim=1) - 1
        return last_hidden_states[torch.arange(last_hidden_states.shape[0]), lengths]

    tokenizer = AutoTokenizer.from_pretrained(tiny_text_embedding_path, padding_side="left")
    model = AutoModel.from_pretrained(tiny_text_embedding_path, dtype=torch.float32).eval()
    texts = [f"Instruct: {TASK}\nQuery:{q}" for q in QUERIES] + DOCUMENTS
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, truncation=True, max_length=8192, return_tensors="pt")
        pooled = last_token_pool(model(**batch).last_hidden_state, batch["attention_mask"])
    for dim in (128, 32):  # the example's MRL: first dim components, then normalise
        want = F.normalize(pooled[:, :dim], p=2, dim=1).numpy()
        got = np.vstack([text_embedder.embed_queries(QUERIES, dim=dim), text_embedder.embed_documents(DOCUMENTS,
                                                                                                     dim=dim)])
        cos = np.sum(got * want, axis=1)
        assert got.shape == (4, dim) and np.all(cos >= 0.9999), cos


@pytest.mark.filterwarnings("ignore:`max_length` is ignored")  # the README passes it to tokenizer.pad
def test_scores_equal_the_official_readme_way(text_reranker_path, text_reranker):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(text_reranker_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(text_reranker_path, dtype=torch.float32).eval()
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    prefix = tokenizer.encode(TEXT_RERANK_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(TEXT_RERANK_SUFFIX, add_special_tokens=False)
    docs = DOCUMENTS + ["Beijing", "The sun is a star. " * 5]
    pairs = [f"<Instruct>: {TASK}\n<Query>: {QUERIES[0]}\n<Document>: {d}" for d in docs]
    inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                       max_length=8192 - len(prefix) - len(suffix))
    inputs["input_ids"] = [prefix + ids + suffix for ids in inputs["input_ids"]]
    inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=8192)
    with torch.no_grad():
        logits = model(**inputs).logits[:, -1, :]
        want = torch.log_softmax(torch.stack([logits[:, no], logits[:, yes]], dim=1), dim=1)[:, 1].exp().numpy()
    assert np.ptp(want) > 0.01  # the tiny model tells the documents apart
    shared = text_reranker.score(QUERIES[0], docs)  # shared-prefix reuse (one query, many documents)
    plain = np.array([text_reranker.score(QUERIES[0], [d])[0] for d in docs])  # one full pair per pass
    batched = text_reranker.forward([text_reranker.prepare_pair(text_reranker.prepare_side(QUERIES[0]),
                                                                text_reranker.prepare_side(d), TASK) for d in docs])
    for got in (shared, plain, batched):
        np.testing.assert_allclose(got, want, atol=1e-4)


# ---------------------------------------------------------------------------- MRL and refusals
def test_mrl_minimum_is_32(text_embedder):
    assert text_embedder.embed(["a"], dim=32).shape == (1, 32)
    with pytest.raises(InputError, match="from 32 to 128"):
        text_embedder.embed(["a"], dim=31)
    with pytest.raises(InputError, match="from 32 to 128"):
        text_embedder.embed(["a"], dim=129)


def test_images_videos_and_fused_items_are_refused_by_row(text_embedder, text_reranker):
    items = ["a text", make_image(64, 64), {"text": "caption", "image": make_image(64, 64)}, {"video": "clip.mp4"},
             "another text"]
    with pytest.raises(InputError, match=r"^item 1: this model embeds text only") as exc:
        text_embedder.embed(items)
    assert exc.value.index == 1
    out = text_embedder.embed_documents(items, on_error="skip")
    assert out.indices == [0, 4] and [i for i, _ in out.errors] == [1, 2, 3]
    assert all("this model embeds text only" in reason for _, reason in out.errors)
    np.testing.assert_allclose(out.vectors, text_embedder.embed_documents(["a text", "another text"]), atol=1e-5)
    with pytest.raises(InputError, match=r"^document 1: this model embeds text only"):
        text_reranker.score("q", ["d", make_image(64, 64)])
    with pytest.raises(InputError, match=r"^query: "):
        text_reranker.score(make_image(64, 64), ["d"])


# ---------------------------------------------------------------------------- the service
def test_service_serves_a_text_model(text_embedder, text_reranker):
    httpx = pytest.importorskip("httpx")
    from embedder.service import ServiceSettings

    from .service.test_service import serve

    with serve(ServiceSettings(), text_embedder, text_reranker) as base, httpx.Client(base_url=base,
                                                                                     timeout=60) as c:
        meta = c.get("/meta").json()
        assert (meta["kind"], meta["model"]["kind"], meta["model"]["min_dim"], meta["dim"]) == (
            "text-embedding", "text-embedding", 32, 128)
        assert meta["reranker"]["kind"] == "text-reranker" and meta["fingerprint"]["kind"] == "text-embedding"
        body = c.post("/v1/embeddings", json={"input": DOCUMENTS, "dimensions": 32}).json()
        got = np.array([row["embedding"] for row in body["data"]], dtype=np.float32)
        np.testing.assert_allclose(got, text_embedder.embed_documents(DOCUMENTS, dim=32), atol=1e-5)
        # Weaviate's text2vec-transformers, a query: the text model's own query instruction
        body = c.post("/vectors", json={"text": QUERIES[0], "config": {"task_type": "query"}}).json()
        np.testing.assert_allclose(body["vector"], text_embedder.embed_queries(QUERIES[:1])[0], atol=1e-5)
        # Weaviate's reranker-transformers: the text reranker's scores, in the documents' order
        body = c.post("/rerank", json={"query": QUERIES[0], "documents": DOCUMENTS}).json()
        assert [s["document"] for s in body["scores"]] == list(DOCUMENTS)
        np.testing.assert_allclose([s["score"] for s in body["scores"]],
                                   text_reranker.score(QUERIES[0], DOCUMENTS), atol=1e-5)


# ---------------------------------------------------------------------------- the CLI, as users run it
def test_cli_ingests_and_searches_at_the_text_models_smallest_dim(tiny_text_embedding_path, tmp_path):
    """`qvl ingest/search --dim 32` with a Qwen3-Embedding checkpoint (the VL models stop at 64); 31 is
    refused before the model loads, naming the model's range; an image in the folder is a reported row."""
    from tests.conftest import make_image
    from tests.test_cli_e2e import assert_clean_stderr, error_lines, qvl
    from tests.test_ingest import summary_of

    docs = tmp_path / "notes"
    docs.mkdir()
    for i, text in enumerate(["red bicycle for sale", "blue kettle, barely used", "garden chairs, set of four"]):
        (docs / f"note{i}.txt").write_text(text, encoding="utf-8")
    make_image(48, 48).save(docs / "photo.png")
    target = f"milvus:{tmp_path / 'notes.db'}"
    model = ["--model", tiny_text_embedding_path]

    bad = qvl("ingest", docs, "--to", target, *model, "--dim", 31)
    assert bad.returncode == 2 and error_lines(bad) == ["qvl: --dim 31: the dim must be an integer from 32 to 128 "
                                                        "(the model's full dim); nothing was created"], bad.stderr
    done = qvl("ingest", docs, "--to", target, *model, "--dim", 32, "--no-progress", cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr  # 1: a row failed (the image), the others landed
    assert summary_of(done.stdout)["written"] == 3 and summary_of(done.stdout)["failed"] == 1
    (dead,) = [json.loads(line) for line in (tmp_path / "qvl.dead-letters.jsonl").read_text().splitlines()]
    assert dead["location"] == "photo.png" and "this model embeds text only" in dead["reason"], dead
    found = qvl("search", "a bike", "--in", target, *model, "--dim", 32, "--json", "-k", 5)
    assert found.returncode == 0, found.stderr
    assert_clean_stderr(found)
    assert len(json.loads(found.stdout)["hits"]) == 3


def test_cli_dim_check_before_the_model_loads(tiny_text_embedding_path, tiny_embedding_path):
    """Before a model loads, --dim is checked against its own range when the folder tells it, and
    against the least any model takes (32) for a hub id or a URL, so Qwen3-Embedding's 32 passes."""
    from connectors.cli.common import check_dim_arg, checkpoint_min_dim

    assert (checkpoint_min_dim(tiny_text_embedding_path), checkpoint_min_dim(tiny_embedding_path)) == (32, 64)
    assert checkpoint_min_dim("Qwen/Qwen3-Embedding-0.6B") is None and check_dim_arg(32) is None
    assert "at least 32" in check_dim_arg(31)
    assert "from 64 to 128" in check_dim_arg(32, minimum=checkpoint_min_dim(tiny_embedding_path), full=128)

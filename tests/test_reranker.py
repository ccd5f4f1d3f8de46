"""Reranker: pinned prompt tokens, batched == one pair at a time, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from embedder import InputError, Reranker, ScoreResult
from embedder.prompts import IMAGE_PAD_ID, VISION_END_ID, VISION_START_ID

from .conftest import make_image

# <|im_start|>system\nJudge whether the Document meets ... "yes" or "no".<|im_end|>\n<|im_start|>user\n
SYSTEM_TEXT = ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and '
               'the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
               '<|im_start|>user\n<Instruct>: Given a search query, retrieve relevant candidates that answer '
               'the query.<Query>:')
TAIL = [151645, 198, 151644, 77091, 198]  # <|im_end|>\n<|im_start|>assistant\n


def pair_ids(rr, query, document, instruction="Given a search query, retrieve relevant candidates that answer the query."):
    return rr.prepare_pair(rr.prepare_side(query), rr.prepare_side(document), instruction).input_ids


def test_text_text_prompt(reranker):
    ids = pair_ids(reranker, "a red car", "A red car parked.")
    assert reranker.tokenizer.decode(ids) == (
        SYSTEM_TEXT + "a red car\n<Document>:A red car parked.<|im_end|>\n<|im_start|>assistant\n")
    assert ids[:3] == [151644, 8948, 198]
    assert ids[-5:] == TAIL  # no <|endoftext|> appended
    # pinned ids of the variable part: "a red car" "\n<Document>:" "A red car parked."
    doc = reranker.tokenizer("a red car\n<Document>:A red car parked.", add_special_tokens=False)["input_ids"]
    assert ids[-5 - len(doc):-5] == doc
    assert doc == [64, 2518, 1803, 198, 75692, 26818, 32, 2518, 1803, 42235, 13]


def test_text_image_prompt(reranker):
    ids = pair_ids(reranker, "a red car", make_image(64, 64))
    text = reranker.tokenizer.decode(ids)
    assert text == (SYSTEM_TEXT + "a red car\n<Document>:<|vision_start|>" + "<|image_pad|>" * 4
                    + "<|vision_end|><|im_end|>\n<|im_start|>assistant\n")
    assert ids[-5:] == TAIL


def test_text_fused_prompt_puts_image_before_text(reranker):
    ids = pair_ids(reranker, "a red car", {"text": "A red car.", "image": make_image(64, 64)})
    text = reranker.tokenizer.decode(ids)
    assert text.endswith("<Document>:<|vision_start|>" + "<|image_pad|>" * 4
                         + "<|vision_end|>A red car.<|im_end|>\n<|im_start|>assistant\n")


def test_empty_side_is_null(reranker):
    text = reranker.tokenizer.decode(pair_ids(reranker, {}, "doc"))
    assert "<Query>:NULL\n<Document>:doc" in text


def test_custom_instruction_has_no_punctuation_fixup(reranker):
    text = reranker.tokenizer.decode(pair_ids(reranker, "q", "d", instruction="Find cars"))
    assert "<Instruct>: Find cars<Query>:q" in text


def test_middle_truncation_keeps_special_visual_and_last_five(reranker):
    small = Reranker(reranker.model, reranker.tokenizer, reranker.image_processor, reranker.video_processor,
                     reranker.device, max_length=200)
    try:
        ids = pair_ids(small, "query " * 50, {"text": "document " * 300, "image": make_image(64, 64)})
        assert len(ids) == 200
        assert ids[-5:] == TAIL
        assert ids.count(IMAGE_PAD_ID) == 4 and ids.count(VISION_START_ID) == 1 and ids.count(VISION_END_ID) == 1
        assert ids.count(151644) == 3 and ids.count(151645) == 2
        scores = small.score("query " * 50, [{"text": "document " * 300, "image": make_image(64, 64)}])
        assert 0.0 < scores[0] < 1.0
    finally:
        small.close()


@pytest.fixture(scope="module")
def documents(tmp_path_factory):
    d = tmp_path_factory.mktemp("rerank-media")
    p = d / "car.png"
    make_image(128, 96, seed=11).save(p)
    return [
        "A red car parked on the street.",
        "Quarterly revenue grew by twelve percent. " * 30,
        {"image": str(p)},
        {"text": "a car", "image": make_image(64, 64, seed=12)},
        make_image(200, 120, seed=13),
        {"video": [make_image(64, 64, seed=i) for i in range(2)]},
        "",
        "red car",
    ]


def test_scores_in_unit_interval_and_batched_equals_single(reranker, documents):
    batched = reranker.score("a red car", documents)
    assert batched.dtype == np.float32 and batched.shape == (len(documents),)
    assert ((batched > 0) & (batched < 1)).all()
    single = np.array([reranker.score("a red car", [d])[0] for d in documents])
    assert np.abs(batched - single).max() <= 1e-4
    assert batched.std() > 1e-3  # different documents, different scores


def test_image_query(reranker, documents):
    scores = reranker.score({"image": make_image(64, 64, seed=12), "text": "a car"}, documents[:4])
    single = np.array([reranker.score({"image": make_image(64, 64, seed=12), "text": "a car"}, [d])[0]
                       for d in documents[:4]])
    assert np.abs(scores - single).max() <= 1e-4


def test_score_is_sigmoid_of_yes_minus_no_logits(reranker):
    """Check the head against the full LM head of the generation model."""
    import torch

    from embedder.model import collate

    prepared = reranker.prepare_pair(reranker.prepare_side("a red car"), reranker.prepare_side("red car"),
                                     "Given a search query, retrieve relevant candidates that answer the query.")
    batch = collate([prepared], pad_id=151643, left_pad=True, device=reranker.device)
    with torch.inference_mode():
        logits = reranker.model(**batch, use_cache=False).logits[0, -1].float()
    expected = torch.sigmoid(logits[9693] - logits[2152]).item()
    assert abs(reranker.score("a red car", ["red car"])[0] - expected) < 1e-5


def test_rerank_orders_best_first(reranker, documents):
    scores = reranker.score("a red car", documents)
    ranked = reranker.rerank("a red car", documents, top_k=3)
    assert [i for i, _ in ranked] == list(np.argsort(-scores)[:3])
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    assert len(reranker.rerank("a red car", documents)) == len(documents)


def test_bad_document_names_its_index(reranker, documents, tmp_path):
    docs = documents[:2] + [{"image": str(tmp_path / "gone.png")}] + documents[2:4]
    with pytest.raises(InputError, match="document 2: .*file not found") as info:
        reranker.score("a red car", docs)
    assert info.value.index == 2


def test_skip_scores_the_rest_and_reports_the_bad(reranker, documents, tmp_path):
    docs = documents[:2] + [{"image": str(tmp_path / "gone.png")}, 42] + documents[2:4]
    result = reranker.score("a red car", docs, on_error="skip")
    assert isinstance(result, ScoreResult)
    assert [i for i, _ in result.errors] == [2, 3]
    assert np.isnan(result.scores[2]) and np.isnan(result.scores[3])
    good = reranker.score("a red car", documents[:4])
    assert np.abs(result.scores[[0, 1, 4, 5]] - good).max() <= 1e-4
    ranked = reranker.rerank("a red car", docs, on_error="skip")
    assert {i for i, _ in ranked} == {0, 1, 4, 5}


def test_bad_query_is_named(reranker):
    with pytest.raises(InputError, match="query: unsupported item type int"):
        reranker.score(5, ["x"])


def test_shared_prefix_stops_before_document_media():
    from embedder.reranker import shared_prefix_length

    vs, ip = VISION_START_ID, IMAGE_PAD_ID
    head = [1, 2, 3, 4]
    a = head + [vs, ip, ip, 5, 9]
    b = head + [vs, ip, ip, 5, 8]      # same tokens, different pixels behind the pads
    assert shared_prefix_length([a, b], query_blocks=0) == 4
    q = [1, vs, ip, 7]                 # a query image belongs to the shared head
    assert shared_prefix_length([q + [vs, ip, 5], q + [vs, ip, 6]], query_blocks=1) == 4
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]], query_blocks=0) == 2   # one token left to run
    assert shared_prefix_length([[1, 2], [3, 4]], query_blocks=0) == 0


def test_same_size_images_behind_a_shared_prefix(reranker):
    """Documents whose tokens agree (same-size images) but whose pixels differ."""
    docs = [make_image(64, 64, seed=s) for s in (20, 21, 22)] + [{"image": make_image(64, 64, seed=23), "text": "x"}]
    for query in ("a red car", {"image": make_image(96, 64, seed=5), "text": "a car"}):
        batched = reranker.score(query, docs)
        single = np.array([reranker.score(query, [d])[0] for d in docs])
        assert np.abs(batched - single).max() <= 1e-4
        assert len(set(np.round(batched, 6))) == len(docs)
    # The prefix path is the one taken for several documents.
    calls = []
    original = reranker.forward_with_prefix
    reranker.forward_with_prefix = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        reranker.score("a red car", docs)
    finally:
        del reranker.forward_with_prefix
    assert calls

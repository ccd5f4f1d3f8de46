"""Huge texts are cut to LoadOptions.max_text_chars before tokenising (issue 14.4):
bounded time and peak memory, and the same tokens for every ordinary text."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from embedder.items import DEFAULT_MAX_TEXT_CHARS, LoadOptions
from embedder.prompts import DEFAULT_EMBED_INSTRUCTION, embed_prompt_parts, tokenize_embed_prompt


def whole_text_ids(emb, text: str) -> list[int]:
    """The prompt as tokenised from the WHOLE text (the behaviour before the cut)."""
    prefix, suffix = embed_prompt_parts(DEFAULT_EMBED_INSTRUCTION, "")
    return tokenize_embed_prompt(emb.tokenizer, prefix, text, suffix, emb.max_length).input_ids


def test_ordinary_texts_keep_exactly_their_tokens(embedder, reranker):
    assert embedder.load_options.max_text_chars == DEFAULT_MAX_TEXT_CHARS == 327_680
    words = "The quick brown fox jumps over the lazy dog; 12 ducks, 3.5 m. 你好世界 "
    for text in ("a dog on a beach", words * 500, words * 40_000):   # 34 kB, and 2.7 MB (cut)
        assert embedder.prepare(text).input_ids == whole_text_ids(embedder, text)
    # The reranker (middle truncation of the whole pair) keeps exactly the same tokens too.
    from embedder import Reranker

    unbounded = Reranker(reranker.model, reranker.tokenizer, reranker.image_processor, reranker.video_processor,
                         reranker.device, load_options=LoadOptions(max_text_chars=10**9))
    try:
        for query, doc in (("a red car", words * 40_000), (words * 40_000, "a red car")):
            def ids(rr):
                return rr.prepare_pair(rr.prepare_side(query), rr.prepare_side(doc), "x").input_ids

            assert ids(reranker) == ids(unbounded)
            assert len(ids(reranker)) == reranker.max_length
    finally:
        unbounded.close()


def test_text_longer_than_the_bound_is_cut_before_tokenising(embedder):
    from embedder import Embedder

    small = Embedder(embedder.model, embedder.tokenizer, embedder.image_processor, embedder.video_processor,
                     embedder.device, load_options=LoadOptions(max_text_chars=10))
    try:
        assert small.prepare("abcdefghijklmnopqrstuvwxyz").input_ids == embedder.prepare("abcdefghij").input_ids
        assert small.prepare({"text": ["abcdef", "ghijklmnop"]}).input_ids == embedder.prepare("abcdefghij").input_ids
    finally:
        small.close()


MEASURE = textwrap.dedent("""
    import json, resource, sys, time
    from embedder import Embedder
    emb = Embedder.from_pretrained(sys.argv[1], device="cpu")
    emb.embed(["warm up " * 100])
    text = "lorem ipsum dolor sit amet, consectetur adipiscing elit " * 150_000   # 8.4 MB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    vec = emb.embed([text])
    seconds = time.perf_counter() - t
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(json.dumps({"seconds": seconds, "growth_mb": growth, "chars": len(text), "shape": list(vec.shape)}))
""")


def test_huge_text_is_quick_with_bounded_memory(tiny_embedding_path):
    out = subprocess.run([sys.executable, "-c", MEASURE, tiny_embedding_path], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["chars"] > 8_000_000 and got["shape"] == [1, 128]
    # Tokenising it whole took 23 s and +1.2 GB here; cut first: 3.4 s and +112 MB.
    assert got["seconds"] < 10, got
    assert got["growth_mb"] < 300, got

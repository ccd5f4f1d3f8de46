"""Reranking throughput: batched pairs against one pair per forward pass (the release).

1 query x 32 and x 100 mixed candidates (texts of several lengths, images, fused), for a
text query and for an image query (search by photo), on a checkpoint with the real
Qwen3-VL-2B widths and 2 layers, random weights.

The baseline does what the release's ``Qwen3VLReranker.process`` does: for each document,
prepare the pair (query media included) and run one forward pass. Ours prepares each side
once on a thread pool, runs the shared prompt head (system prompt, instruction, query and
its media) once and reuses its key/value cache, batches the documents by a token budget,
and runs the vision patch embedding as a matrix product instead of a Conv3d.

On a CPU a forward pass costs about what its tokens cost, so the table also gives the
tokens each method runs and their ratio: the speed-up that token savings alone allow.

Usage:
    python benchmarks/bench_rerank.py [--sizes 32 100] [--layers 2] [--queries text image]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, bench_checkpoint, mixed_corpus, print_table  # noqa: E402

from embedder.testing import stock_patch_embed  # noqa: E402

INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."


def one_pair_per_forward(rr, query, documents) -> np.ndarray:
    """The release: each pair prepared (both sides) and scored on its own, with
    transformers' Conv3d patch embedding."""
    with stock_patch_embed(rr.model):
        return np.array([rr.forward([rr.prepare_pair(rr.prepare_side(query), rr.prepare_side(d), INSTRUCTION)])[0]
                         for d in documents])


def token_counts(rr, query, documents) -> tuple[int, int]:
    """Tokens the one-pair baseline runs, and tokens ours runs (shared head once, then tails)."""
    from embedder.prompts import VISION_START
    from embedder.reranker import MIN_SHARED_PREFIX, shared_prefix_length

    q = rr.prepare_side(query)
    pairs = [rr.prepare_pair(q, rr.prepare_side(d), INSTRUCTION) for d in documents]
    full = sum(p.n_tokens for p in pairs)
    prefix = shared_prefix_length([p.input_ids for p in pairs], query_blocks=q[0].count(VISION_START))
    if prefix < MIN_SHARED_PREFIX:
        return full, full
    return full, full - prefix * (len(pairs) - 1)


def make_query(kind: str):
    if kind == "text":
        return "a dog running on the beach at sunset"
    from PIL import Image

    rng = np.random.RandomState(7)
    return Image.fromarray((rng.rand(480, 640, 3) * 255).astype("uint8"))  # a 640x480 photo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 100])
    ap.add_argument("--queries", nargs="+", default=["text", "image"], choices=["text", "image"])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="default: the device's (4096 on CPU)")
    args = ap.parse_args()

    import torch

    from embedder import Reranker

    rr = Reranker.from_pretrained(bench_checkpoint("reranker", args.layers), device="cpu",
                                  max_batch_tokens=args.max_batch_tokens)
    rows = []
    for kind in args.queries:
        query = make_query(kind)
        for n in args.sizes:
            docs = mixed_corpus(n, seed=n)
            rr.score(query, docs[:2])  # warm-up
            base_tokens, our_tokens = token_counts(rr, query, docs)
            with Timer() as base:
                single = one_pair_per_forward(rr, query, docs)
            with Timer() as ours:
                batched = rr.score(query, docs)
            diff = float(np.abs(single - batched).max())
            rows.append([f"{kind} query", f"1 x {n}", f"{base_tokens:,}", f"{our_tokens:,}",
                         f"{base_tokens / our_tokens:.2f}x", f"{base.seconds:.2f}", f"{n / base.seconds:.1f}",
                         f"{ours.seconds:.2f}", f"{n / ours.seconds:.1f}", f"{base.seconds / ours.seconds:.2f}x",
                         f"{diff:.1e}"])
    print(f"\ncheckpoint: hidden 2048, vision 1024, {args.layers} layers (random weights); "
          f"CPU threads: {torch.get_num_threads()}\n")
    print_table(["query", "pairs", "one-pair tokens", "our tokens", "token ratio", "one-pair s", "one-pair pairs/s",
                 "batched s", "batched pairs/s", "speed-up", "max |diff|"], rows)
    rr.close()


if __name__ == "__main__":
    main()

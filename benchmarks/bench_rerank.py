"""Reranking throughput: batched pairs against one pair per forward pass (the release).

1 query x 32 and x 100 mixed candidates (texts of several lengths, images, fused),
on a checkpoint with the real Qwen3-VL-2B widths and 2 layers, random weights.

Usage:
    python benchmarks/bench_rerank.py [--sizes 32 100] [--layers 2]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, bench_checkpoint, mixed_corpus, print_table  # noqa: E402

INSTRUCTION = "Given a search query, retrieve relevant candidates that answer the query."


def one_pair_per_forward(rr, query, documents) -> np.ndarray:
    q = rr.prepare_side(query)
    return np.array([rr.forward([rr.prepare_pair(q, rr.prepare_side(d), INSTRUCTION)])[0] for d in documents])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 100])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--max-batch-tokens", type=int, default=16384)
    args = ap.parse_args()

    import torch

    from embedder import Reranker

    rr = Reranker.from_pretrained(bench_checkpoint("reranker", args.layers), device="cpu",
                                  max_batch_tokens=args.max_batch_tokens)
    query = "a dog running on the beach at sunset"
    rows = []
    for n in args.sizes:
        docs = mixed_corpus(n, seed=n)
        rr.score(query, docs[:2])  # warm-up
        with Timer() as base:
            single = one_pair_per_forward(rr, query, docs)
        with Timer() as ours:
            batched = rr.score(query, docs)
        diff = float(np.abs(single - batched).max())
        rows.append([f"1 x {n}", f"{base.seconds:.2f}", f"{n / base.seconds:.1f}", f"{ours.seconds:.2f}",
                     f"{n / ours.seconds:.1f}", f"{base.seconds / ours.seconds:.2f}x", f"{diff:.1e}"])
    print(f"\ncheckpoint: hidden 2048, vision 1024, {args.layers} layers (random weights); "
          f"CPU threads: {torch.get_num_threads()}\n")
    print_table(["pairs", "one-pair s", "one-pair pairs/s", "batched s", "batched pairs/s", "speed-up",
                 "max |diff|"], rows)
    rr.close()


if __name__ == "__main__":
    main()

"""Embedding throughput: this embedder against the release's way of batching.

Baseline ("release-style"): the same items in the caller's order, fixed batches of 8,
each prepared sequentially and run as one padded forward pass (how the official
``process()`` is used), with transformers' Conv3d patch embedding. Ours: ``Embedder.embed``
(token-budget batches sorted by length, preprocessing in a thread pool overlapping the
model, the patch embedding as one matrix product).

Both run on the same model in one process, on a checkpoint with the real Qwen3-VL-2B
widths (hidden 2048, vision 1024) and 2 layers, random weights (no hub here).

Usage:
    python benchmarks/bench_embed.py [--items 48] [--layers 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Timer, bench_checkpoint, mixed_corpus, print_table  # noqa: E402

from embedder.testing import stock_patch_embed  # noqa: E402


def baseline(emb, items, batch: int = 8) -> np.ndarray:
    out = []
    with stock_patch_embed(emb.model):  # the release runs transformers' Conv3d patch embedding
        for s in range(0, len(items), batch):
            prepared = [emb.prepare(item) for item in items[s:s + batch]]  # sequential, no overlap
            out.append(emb.forward(prepared))                              # one padded forward, caller's order
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=48)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="default: the device's (4096 on CPU)")
    args = ap.parse_args()

    import torch

    from embedder import Embedder

    path = bench_checkpoint("embedding", args.layers)
    emb = Embedder.from_pretrained(path, device="cpu", max_batch_tokens=args.max_batch_tokens)
    items = mixed_corpus(args.items)
    tokens = sum(emb.prepare(i).n_tokens for i in items)
    emb.embed(items[:4])  # warm-up
    baseline(emb, items[:4])

    results = {}
    for name, fn in (("baseline: caller order, batches of 8", lambda: baseline(emb, items)),
                     ("qvl: token budget, sorted, threaded prep", lambda: emb.embed(items))):
        best = float("inf")
        for _ in range(args.repeats):
            with Timer() as t:
                vecs = fn()
            best = min(best, t.seconds)
        results[name] = (best, vecs)

    (b_name, (b_t, b_v)), (o_name, (o_t, o_v)) = results.items()
    cos = float(np.min(np.sum(b_v * o_v, axis=1)))
    print(f"\ncorpus: {len(items)} mixed items (short/long texts, small/large images, fused), {tokens} tokens; "
          f"checkpoint: hidden 2048, vision 1024, {args.layers} layers (random weights); "
          f"CPU threads: {torch.get_num_threads()}; best of {args.repeats}\n")
    print_table(["method", "seconds", "items/s", "tokens/s", "speed-up"], [
        [b_name, f"{b_t:.2f}", f"{len(items) / b_t:.1f}", f"{tokens / b_t:.0f}", "1.00x"],
        [o_name, f"{o_t:.2f}", f"{len(items) / o_t:.1f}", f"{tokens / o_t:.0f}", f"{b_t / o_t:.2f}x"],
    ])
    print(f"\nsame vectors: min cosine between the two methods = {cos:.6f}")
    emb.close()


if __name__ == "__main__":
    main()

"""Embedding throughput: this embedder against the release's way of batching.

Baseline ("release-style"): the same items in the caller's order, fixed batches of 8,
each prepared sequentially and run as one padded forward pass (how the official
``process()`` is used), with transformers' Conv3d patch embedding. Ours: ``Embedder.embed``
(token-budget batches sorted by length, preprocessing in a thread pool overlapping the
model, the patch embedding as one matrix product).

Both run on the same model in one process, on a checkpoint with the real Qwen3-VL-2B
widths (hidden 2048, vision 1024) and 2 layers, random weights (no hub here).

Precision: ours runs twice, in float32 (the release's CPU precision, exact vectors) and
in bfloat16 (what ``dtype="auto"`` picks on a CPU that multiplies bf16 natively), with the
bf16 vectors' cosine to the float32 ones and their agreement on nearest neighbours (each
item as a query against the others). Repetitions interleave the methods so that other
load on the machine hits all of them alike; the best of each is reported.

Text-only models (``--text``): a Qwen3-Embedding checkpoint with the real 0.6B widths
(hidden 1024, 16/8 heads, MLP 3072) and 2 layers, on texts of 8 to 400 words. Baselines:
the official README's way (github.com/QwenLM/Qwen3-Embedding: the tokenizer with left
padding, ``truncation=True, max_length=8192``, one padded forward, last-token pooling,
L2 normalisation) called on the whole list at once, and on batches of 8 in the caller's
order; ours: ``Embedder.embed`` (token-budget batches sorted by length, tokenising the
next chunk while the model runs). Same weights, float32, one process.

Usage:
    python benchmarks/bench_embed.py [--items 48] [--layers 2] [--repeats 2] [--no-baseline]
    python benchmarks/bench_embed.py --text [--items 96] [--layers 2] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (best_of_interleaved, bench_checkpoint, cpu_flags_line, kendall_tau, mixed_corpus, print_table,  # noqa: E402
                    top_k_overlap)

from embedder.testing import stock_patch_embed  # noqa: E402


def baseline(emb, items, batch: int = 8) -> np.ndarray:
    out = []
    with stock_patch_embed(emb.model):  # the release runs transformers' Conv3d patch embedding
        for s in range(0, len(items), batch):
            prepared = [emb.prepare(item) for item in items[s:s + batch]]  # sequential, no overlap
            out.append(emb.forward(prepared))                              # one padded forward, caller's order
    return np.concatenate(out)


def neighbour_agreement(ref: np.ndarray, got: np.ndarray, k: int = 5) -> tuple[float, float, float]:
    """Each item as a query against the others: share with the same nearest neighbour, mean top-k
    overlap and mean Kendall tau of the similarity order, ``got`` against ``ref``."""
    same, overlap, tau = [], [], []
    for q in range(len(ref)):
        others = [i for i in range(len(ref)) if i != q]
        a, b = ref[others] @ ref[q], got[others] @ got[q]
        same.append(int(np.argmax(a) == np.argmax(b)))
        overlap.append(top_k_overlap(a, b, k))
        tau.append(kendall_tau(a, b))
    return float(np.mean(same)), float(np.mean(overlap)), float(np.mean(tau))


def text_checkpoint(layers: int) -> str:
    """Qwen3-Embedding-0.6B widths with ``layers`` layers, random weights, cached like :func:`bench_checkpoint`."""
    from pathlib import Path

    from embedder.testing import BENCH_TEXT_06B, build_tiny_checkpoint

    path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qvl" / f"bench-text-embedding-{layers}l"
    if not (path / "model.safetensors").exists():
        build_tiny_checkpoint(path, kind="text-embedding", widths=dict(BENCH_TEXT_06B, num_hidden_layers=layers),
                              init_std=0.05)
    return str(path)


def text_corpus(n: int, seed: int = 0) -> list[str]:
    """Short and long texts (8 to 400 words), interleaved as a table's text column would be."""
    rng = np.random.RandomState(seed)
    words = ("search vector image video database query embedding model index result beach dog sunset city "
             "night market revenue report chart table ticket customer order shipping refund").split()
    return [" ".join(rng.choice(words, (8, 400, 60, 20, 150, 30)[i % 6])) for i in range(n)]


def readme_way(emb, texts: list[str], batch: int | None = None) -> np.ndarray:
    """The official README's code on ``emb``'s own model and tokenizer (``batch``: fixed
    batches in the caller's order; None: the whole list in one call, as the README does)."""
    import torch
    import torch.nn.functional as F

    tokenizer = emb.tokenizer
    tokenizer.padding_side = "left"
    out = []
    step = batch or len(texts)
    with torch.inference_mode():
        for s in range(0, len(texts), step):
            inputs = tokenizer(texts[s:s + step], padding=True, truncation=True, max_length=8192,
                               return_tensors="pt")
            hidden = emb.model(**inputs).last_hidden_state
            mask = inputs["attention_mask"]
            if mask[:, -1].sum() == mask.shape[0]:  # last_token_pool, left padding
                pooled = hidden[:, -1]
            else:
                pooled = hidden[torch.arange(hidden.shape[0]), mask.sum(dim=1) - 1]
            out.append(F.normalize(pooled, p=2, dim=1).numpy())
    return np.concatenate(out)


def text_main(args) -> None:
    from embedder import Embedder

    emb = Embedder.from_pretrained(text_checkpoint(args.layers), device="cpu", dtype="float32",
                                   max_batch_tokens=args.max_batch_tokens)
    texts = text_corpus(args.items)
    tokens = sum(emb.prepare(t).n_tokens for t in texts)
    methods = {"README way: whole list in one padded call": lambda: readme_way(emb, texts),
               "README way: batches of 8, caller order": lambda: readme_way(emb, texts, 8),
               "qvl Embedder.embed": lambda: emb.embed(texts)}
    emb.embed(texts[:4])  # warm-up
    readme_way(emb, texts[:4])
    best, vectors = best_of_interleaved(methods, args.repeats)
    ref = vectors["README way: whole list in one padded call"]
    base = best["README way: batches of 8, caller order"]
    rows = []
    for name, seconds in best.items():
        cos = np.sum(vectors[name] * ref, axis=1)
        rows.append([name, f"{seconds:.2f}", f"{len(texts) / seconds:.1f}", f"{tokens / seconds:.0f}",
                     f"{base / seconds:.2f}x", f"{cos.min():.6f}"])
    print(f"\ncorpus: {len(texts)} texts of 8-400 words, {tokens} tokens; checkpoint: Qwen3-Embedding-0.6B widths "
          f"(hidden 1024), {args.layers} layers (random weights), float32; best of {args.repeats}, interleaved\n"
          f"{cpu_flags_line()}\n")
    print_table(["method", "seconds", "texts/s", "tokens/s", "vs batches of 8", "min cos to README"], rows)
    emb.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--items", type=int, default=None, help="default: 48 (96 with --text)")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="default: the device's (4096 on CPU)")
    ap.add_argument("--no-baseline", action="store_true", help="only ours, float32 against bfloat16")
    ap.add_argument("--text", action="store_true", help="the text-only Qwen3-Embedding against the README's way")
    args = ap.parse_args()
    if args.text:
        args.items = args.items or 96
        return text_main(args)
    args.items = args.items or 48

    import torch

    from embedder import Embedder
    from embedder.cpu import choose_cpu_dtype

    path = bench_checkpoint("embedding", args.layers)
    fp32 = Embedder.from_pretrained(path, device="cpu", dtype="float32", max_batch_tokens=args.max_batch_tokens)
    bf16 = Embedder.from_pretrained(path, device="cpu", dtype="bfloat16", max_batch_tokens=args.max_batch_tokens)
    auto = choose_cpu_dtype(fp32.dim, int(fp32.model.config.text_config.intermediate_size))
    items = mixed_corpus(args.items)
    tokens = sum(fp32.prepare(i).n_tokens for i in items)
    methods = {"qvl float32": lambda: fp32.embed(items), "qvl bfloat16": lambda: bf16.embed(items)}
    if not args.no_baseline:
        methods = {"baseline: caller order, batches of 8 (float32)": lambda: baseline(fp32, items), **methods}
    for emb in (fp32, bf16):  # warm-up
        emb.embed(items[:4])
    if not args.no_baseline:
        baseline(fp32, items[:4])

    best, vectors = best_of_interleaved(methods, args.repeats)

    ref_t, ref_v = best["qvl float32"], vectors["qvl float32"]
    base_t = best.get("baseline: caller order, batches of 8 (float32)")
    rows = []
    for name, seconds in best.items():
        vecs = vectors[name]
        cos = np.sum(vecs * ref_v, axis=1)
        nn1, top5, tau = neighbour_agreement(ref_v, vecs)
        rows.append([name, f"{seconds:.2f}", f"{len(items) / seconds:.1f}", f"{tokens / seconds:.0f}",
                     f"{base_t / seconds:.2f}x" if base_t else "-", f"{ref_t / seconds:.2f}x",
                     f"{cos.min():.6f}", f"{cos.mean():.6f}", f"{nn1:.3f}", f"{top5:.3f}", f"{tau:.3f}"])
    print(f"\ncorpus: {len(items)} mixed items (short/long texts, small/large images, fused), {tokens} tokens; "
          f"checkpoint: hidden 2048, vision 1024, {args.layers} layers (random weights); best of {args.repeats}, "
          f"interleaved\n{cpu_flags_line()}\ndtype=\"auto\" here: {auto.reason}\n")
    print_table(["method", "seconds", "items/s", "tokens/s", "vs baseline", "vs float32", "min cos to fp32",
                 "mean cos", "same NN", "top-5 overlap", "Kendall tau"], rows)
    print("\nsame NN / top-5 overlap / Kendall tau: each item as a query against the others, "
          "neighbours by float32 vectors against by this method's")
    fp32.close()
    bf16.close()


if __name__ == "__main__":
    main()

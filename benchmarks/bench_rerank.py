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

Precision: the batched path runs in float32 (the release's CPU precision) and in bfloat16
(what ``dtype="auto"`` picks on a CPU that multiplies bf16 natively), repetitions
interleaved in this process; a second table gives bf16's speed against float32's, its
largest score difference and its ranking agreement (pairs kept in order where float32
separates them by more than 1e-3, Kendall tau, top-10 overlap, same top-1).

Text-only models (``--text``): a Qwen3-Reranker checkpoint with the real 0.6B widths (hidden
1024) and 2 layers, one text query against texts of 8 to 400 words. Baselines: the official
README's code (github.com/QwenLM/Qwen3-Embedding: ``process_inputs`` then ``compute_logits``,
the causal LM's logits at every position, the last one's yes/no log-softmax) on batches of
8 pairs in the caller's order, and the same with ``logits_to_keep=1`` (the LM head on the
last position only). Ours: ``Reranker.score`` (the yes-no row instead of the LM head, the
shared prompt head run once per query, token-budget batches sorted by length).

Usage:
    python benchmarks/bench_rerank.py [--sizes 32 100] [--layers 2] [--queries text image] [--repeats 1]
        [--no-baseline]
    python benchmarks/bench_rerank.py --text [--sizes 32 100] [--layers 2]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (Timer, bench_checkpoint, cpu_flags_line, kendall_tau, mixed_corpus, order_kept,  # noqa: E402
                    print_table, top_k_overlap)

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


TEXT_TASK = "Given a web search query, retrieve relevant passages that answer the query"


def text_checkpoint(layers: int) -> str:
    """Qwen3-Reranker-0.6B widths with ``layers`` layers, random weights, cached like :func:`bench_checkpoint`."""
    from pathlib import Path

    from embedder.testing import BENCH_TEXT_06B, build_tiny_checkpoint

    path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qvl" / f"bench-text-reranker-{layers}l"
    if not (path / "model.safetensors").exists():
        build_tiny_checkpoint(path, kind="text-reranker", widths=dict(BENCH_TEXT_06B, num_hidden_layers=layers),
                              init_std=0.05)
    return str(path)


def readme_scores(rr, query: str, documents: list[str], *, batch: int = 8, last_only: bool = False) -> np.ndarray:
    """The official README's reranker code on ``rr``'s own model and tokenizer, ``batch`` pairs per call."""
    import torch

    from embedder.prompts import TEXT_RERANK_PREFIX, TEXT_RERANK_SUFFIX

    tokenizer = rr.tokenizer
    tokenizer.padding_side = "left"
    prefix = tokenizer.encode(TEXT_RERANK_PREFIX, add_special_tokens=False)
    suffix = tokenizer.encode(TEXT_RERANK_SUFFIX, add_special_tokens=False)
    yes, no = tokenizer.convert_tokens_to_ids("yes"), tokenizer.convert_tokens_to_ids("no")
    pairs = [f"<Instruct>: {TEXT_TASK}\n<Query>: {query}\n<Document>: {d}" for d in documents]
    out = []
    for s in range(0, len(pairs), batch):
        inputs = tokenizer(pairs[s:s + batch], padding=False, truncation="longest_first", return_attention_mask=False,
                           max_length=8192 - len(prefix) - len(suffix))
        inputs["input_ids"] = [prefix + ids + suffix for ids in inputs["input_ids"]]
        inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = rr.model(**inputs, **({"logits_to_keep": 1} if last_only else {})).logits[:, -1, :]
            pair = torch.log_softmax(torch.stack([logits[:, no], logits[:, yes]], dim=1), dim=1)
            out.append(pair[:, 1].exp().numpy())
    return np.concatenate(out)


def text_main(args) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from bench_embed import text_corpus

    from embedder import Reranker

    rr = Reranker.from_pretrained(text_checkpoint(args.layers), device="cpu", dtype="float32",
                                  max_batch_tokens=args.max_batch_tokens)
    query = "a dog running on the beach at sunset"
    rows = []
    for n in args.sizes:
        docs = text_corpus(n, seed=n)
        rr.score(query, docs[:2])  # warm-up
        readme_scores(rr, query, docs[:2])
        methods = {"README code, batches of 8": lambda: readme_scores(rr, query, docs),
                   "README code, logits_to_keep=1": lambda: readme_scores(rr, query, docs, last_only=True),
                   "qvl Reranker.score": lambda: rr.score(query, docs)}
        best, scores = {}, {}
        for name, fn in methods.items():
            with Timer() as t:
                scores[name] = fn()
            best[name] = t.seconds
        ref, base = scores["README code, batches of 8"], best["README code, batches of 8"]
        for name, seconds in best.items():
            rows.append([name, f"1 x {n}", f"{seconds:.2f}", f"{n / seconds:.1f}", f"{base / seconds:.2f}x",
                         f"{float(np.abs(scores[name] - ref).max()):.1e}"])
    print(f"\ncheckpoint: Qwen3-Reranker-0.6B widths (hidden 1024), {args.layers} layers (random weights), float32; "
          f"documents: texts of 8-400 words\n{cpu_flags_line()}\n")
    print_table(["method", "pairs", "seconds", "pairs/s", "vs README", "max |diff| to README"], rows)
    rr.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 100])
    ap.add_argument("--queries", nargs="+", default=["text", "image"], choices=["text", "image"])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved float32/bfloat16 runs of the batched path")
    ap.add_argument("--max-batch-tokens", type=int, default=None, help="default: the device's (4096 on CPU)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the one-pair-per-forward baseline")
    ap.add_argument("--text", action="store_true", help="the text-only Qwen3-Reranker against the README's code")
    args = ap.parse_args()
    if args.text:
        return text_main(args)

    from embedder import Reranker
    from embedder.cpu import choose_cpu_dtype

    path = bench_checkpoint("reranker", args.layers)
    rr = Reranker.from_pretrained(path, device="cpu", dtype="float32", max_batch_tokens=args.max_batch_tokens)
    rr16 = Reranker.from_pretrained(path, device="cpu", dtype="bfloat16", max_batch_tokens=args.max_batch_tokens)
    text = rr.model.config.text_config
    auto = choose_cpu_dtype(int(text.hidden_size), int(text.intermediate_size))
    rows, precision_rows = [], []
    for kind in args.queries:
        query = make_query(kind)
        for n in args.sizes:
            docs = mixed_corpus(n, seed=n)
            rr.score(query, docs[:2])  # warm-up
            rr16.score(query, docs[:2])
            times = {rr: float("inf"), rr16: float("inf")}
            scores = {}
            for _ in range(args.repeats):  # interleaved: load on the machine hits both alike
                for model in (rr, rr16):
                    with Timer() as t:
                        scores[model] = model.score(query, docs)
                    times[model] = min(times[model], t.seconds)
            batched, b16 = scores[rr], scores[rr16]
            if not args.no_baseline:
                base_tokens, our_tokens = token_counts(rr, query, docs)
                with Timer() as base:
                    single = one_pair_per_forward(rr, query, docs)
                diff = float(np.abs(single - batched).max())
                rows.append([f"{kind} query", f"1 x {n}", f"{base_tokens:,}", f"{our_tokens:,}",
                             f"{base_tokens / our_tokens:.2f}x", f"{base.seconds:.2f}", f"{n / base.seconds:.1f}",
                             f"{times[rr]:.2f}", f"{n / times[rr]:.1f}", f"{base.seconds / times[rr]:.2f}x",
                             f"{diff:.1e}"])
            precision_rows.append([
                f"{kind} query", f"1 x {n}", f"{times[rr]:.2f}", f"{times[rr16]:.2f}", f"{n / times[rr16]:.1f}",
                f"{times[rr] / times[rr16]:.2f}x",
                f"{base.seconds / times[rr16]:.2f}x" if not args.no_baseline else "-",
                f"{float(np.abs(b16 - batched).max()):.1e}", f"{float(np.ptp(batched)):.1e}",
                "{:.3f} of {:,}".format(*order_kept(batched, b16, 1e-3)), f"{kendall_tau(batched, b16):.3f}",
                f"{top_k_overlap(batched, b16, 10):.2f}", "yes" if np.argmax(batched) == np.argmax(b16) else "no"])
    print(f"\ncheckpoint: hidden 2048, vision 1024, {args.layers} layers (random weights)\n{cpu_flags_line()}\n"
          f"dtype=\"auto\" here: {auto.reason}\n")
    if rows:
        print("float32, one pair per forward (the release) against batched:\n")
        print_table(["query", "pairs", "one-pair tokens", "our tokens", "token ratio", "one-pair s",
                     "one-pair pairs/s", "batched s", "batched pairs/s", "speed-up", "max |diff|"], rows)
    print(f"\nbatched, float32 against bfloat16 (best of {args.repeats}, interleaved):\n")
    print_table(["query", "pairs", "float32 s", "bfloat16 s", "bf16 pairs/s", "bf16 vs fp32", "bf16 vs one-pair",
                 "max abs diff to fp32", "fp32 score range", "order kept (gap > 1e-3)", "Kendall tau",
                 "top-10 overlap", "same top-1"], precision_rows)
    print("\norder kept: among document pairs whose float32 scores differ by more than 1e-3, the share bfloat16 "
          "ranks the same way (closer pairs are ties at bf16's resolution)")
    rr.close()
    rr16.close()


if __name__ == "__main__":
    main()

"""Shared helpers for the benchmark scripts: a wider random checkpoint and a mixed corpus."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np


def bench_checkpoint(kind: str = "embedding", layers: int = 2) -> str:
    """Real Qwen3-VL-2B widths (hidden 2048, vision 1024) with few layers, random weights.

    Cached under ``$XDG_CACHE_HOME/qvl/bench-<kind>-<layers>`` so repeated runs skip the build.
    """
    from embedder.testing import BENCH_2B, build_tiny_checkpoint

    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qvl"
    path = root / f"bench-{kind}-{layers}l"
    if not (path / "model.safetensors").exists():
        widths = dict(BENCH_2B, num_hidden_layers=layers)
        build_tiny_checkpoint(path, kind=kind, widths=widths, init_std=0.05)
    return str(path)


def mixed_corpus(n: int = 48, seed: int = 0) -> list:
    """Short and long texts, small and large images, and fused items, interleaved."""
    from PIL import Image

    rng = np.random.RandomState(seed)
    words = ("search vector image video database query embedding model index result "
             "beach dog sunset city night market revenue report chart table").split()
    items: list = []
    for i in range(n):
        kind = i % 6
        if kind == 0:
            items.append(" ".join(rng.choice(words, 8)))
        elif kind == 1:
            items.append(" ".join(rng.choice(words, 400)))
        elif kind == 2:
            side = int(rng.choice([48, 64, 96]))
            items.append(Image.fromarray((rng.rand(side, side, 3) * 255).astype("uint8")))
        elif kind == 3:
            w, h = int(rng.choice([640, 800])), int(rng.choice([480, 600]))
            items.append(Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")))
        elif kind == 4:
            items.append({"text": " ".join(rng.choice(words, 20)),
                          "image": Image.fromarray((rng.rand(128, 160, 3) * 255).astype("uint8"))})
        else:
            items.append(" ".join(rng.choice(words, 60)))
    return items


def cpu_flags_line() -> str:
    """The CPU, its bf16-relevant flags, torch's CPU capability and threads, for benchmark headers."""
    import torch

    from embedder.cpu import cpu_info

    name, flags = cpu_info()
    bf16 = sorted(f for f in flags if "bf16" in f or f.startswith("amx")) or ["no bf16 flags"]
    return (f"CPU: {name}, {' '.join(bf16)}; torch {torch.__version__} CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; {torch.get_num_threads()} threads")


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall rank correlation of two score vectors (1.0: the same order)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(a), k=1)
    s = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(s.sum() / max(len(s), 1))


def order_kept(a: np.ndarray, b: np.ndarray, min_gap: float) -> tuple[float, int]:
    """Among pairs whose ``a`` scores differ by more than ``min_gap``, the share ``b`` orders the
    same way, and how many such pairs there are."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    i, j = np.triu_indices(len(a), k=1)
    clear = np.abs(a[i] - a[j]) > min_gap
    same = np.sign(a[i] - a[j]) == np.sign(b[i] - b[j])
    return (float(same[clear].mean()) if clear.any() else 1.0), int(clear.sum())


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of the top ``k`` by ``a`` that is also in the top ``k`` by ``b``."""
    k = min(k, len(a))
    return len(set(np.argsort(-a)[:k].tolist()) & set(np.argsort(-b)[:k].tolist())) / k


class Timer:
    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def best_of_interleaved(methods: dict, repeats: int) -> tuple[dict[str, float], dict]:
    """Run each of ``methods`` (name -> callable) ``repeats`` times, interleaved so that other load
    on the machine hits every method alike; returns each one's best seconds and its last result."""
    best = {name: float("inf") for name in methods}
    results: dict = {}
    for _ in range(repeats):
        for name, fn in methods.items():
            with Timer() as t:
                results[name] = fn()
            best[name] = min(best[name], t.seconds)
    return best, results


def print_table(headers: list[str], rows: list[list]) -> None:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    print(line)
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def tmpdir() -> str:
    return tempfile.mkdtemp(prefix="qvl-bench-")


def clustered(n: int, dim: int, *, centers: int, spread: float, seed: int) -> np.ndarray:
    """``n`` unit vectors around ``centers`` random unit centres (cosine to the centre ~ 1/sqrt(1+spread^2))."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centers, dim)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 10000):
        m = min(10000, n - s)
        x = c[rng.integers(0, centers, m)] + spread * rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out

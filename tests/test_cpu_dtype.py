"""dtype="auto" on a CPU (issue 21): bfloat16 where the processor multiplies it natively and
a calibration shows it faster, float32 otherwise; the choice cached per machine, visible in
``emb.dtype`` / ``dtype_reason`` and ``/meta``; bf16 vectors and scores close to float32's.

Other processors are simulated by replacing the capability probe and the calibration
(:func:`embedder.cpu.native_bf16`, :func:`embedder.cpu.calibrate`), never torch's math.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from embedder import Embedder, Reranker, cpu

from .conftest import make_image


@pytest.fixture()
def auto_cpu(monkeypatch, tmp_path):
    """``auto`` as on a user's machine (conftest pins float32 for the suite), with a private cache;
    yields the list of calibrations run."""
    monkeypatch.delenv(cpu.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    runs: list[tuple[int, int]] = []
    yield runs


def simulate(monkeypatch, runs: list, *, native: bool, fp32_s: float = 0.03, bf16_s: float = 0.01) -> None:
    monkeypatch.setattr(cpu, "native_bf16", lambda: (native, "simulated CPU " + ("with" if native else "without")
                                                     + " native bf16"))

    def calibrate(hidden: int, intermediate: int, **_: object) -> tuple[float, float]:
        runs.append((hidden, intermediate))
        return fp32_s, bf16_s

    monkeypatch.setattr(cpu, "calibrate", calibrate)


@pytest.fixture(scope="module")
def corpus():
    return ["a dog on a beach", "quarterly revenue report " * 60, make_image(96, 64, seed=3),
            {"text": "a red car", "image": make_image(160, 128, seed=4)}, make_image(320, 240, seed=5), ""]


def test_no_native_bf16_keeps_float32(monkeypatch, auto_cpu, tiny_embedding_path, embedder, corpus):
    simulate(monkeypatch, auto_cpu, native=False)
    with Embedder.from_pretrained(tiny_embedding_path, device="cpu") as emb:
        assert emb.dtype == "float32" and "without native bf16" in emb.dtype_reason
        assert np.array_equal(emb.embed(corpus), embedder.embed(corpus))  # the release's float32 vectors
    assert auto_cpu == []  # no calibration where bf16 is emulated
    assert not cpu.cache_path().exists()


def test_native_and_faster_picks_bf16_and_caches(monkeypatch, auto_cpu, tiny_embedding_path, embedder, corpus):
    simulate(monkeypatch, auto_cpu, native=True, fp32_s=0.03, bf16_s=0.01)
    with Embedder.from_pretrained(tiny_embedding_path, device="cpu") as emb:
        assert emb.dtype == "bfloat16" and emb.fingerprint()["precision"] == "bfloat16"
        assert "3.00x faster" in emb.dtype_reason and "measured at load" in emb.dtype_reason
        bf16 = emb.embed(corpus)
        # the pooled state comes out of a float32 final norm; vectors are float32 and unit length
        assert str(emb.model.language_model.norm.weight.dtype) == "torch.float32"
    assert auto_cpu == [(128, 256)]  # the tiny model's hidden and MLP widths
    entries = json.loads(cpu.cache_path().read_text())
    assert list(entries) == [cpu.machine_key(128, 256)] and entries[cpu.machine_key(128, 256)]["speedup"] == 3.0
    fp32 = embedder.embed(corpus)
    assert bf16.dtype == np.float32 and np.allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-5)
    assert (np.sum(bf16 * fp32, axis=1) >= 0.999).all(), np.sum(bf16 * fp32, axis=1)

    with Embedder.from_pretrained(tiny_embedding_path, device="cpu") as again:  # read from the cache
        assert again.dtype == "bfloat16" and "cached in" in again.dtype_reason
    assert auto_cpu == [(128, 256)]


def test_cache_is_read_and_keyed_per_machine(monkeypatch, auto_cpu, tiny_embedding_path):
    simulate(monkeypatch, auto_cpu, native=True)
    path = cpu.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({cpu.machine_key(128, 256): {"speedup": 0.8, "measured": "earlier"}}))
    with Embedder.from_pretrained(tiny_embedding_path, device="cpu") as emb:
        assert emb.dtype == "float32" and "only 0.80x" in emb.dtype_reason
    assert auto_cpu == []
    # another machine, torch, thread count or model width is another key
    monkeypatch.setattr(cpu, "cpu_info", lambda: ("Other CPU", frozenset({"avx512_bf16"})))
    assert cpu.machine_key(128, 256) not in json.loads(path.read_text())
    assert cpu.choose_cpu_dtype(128, 256).dtype == "bfloat16" and auto_cpu == [(128, 256)]
    assert len(json.loads(path.read_text())) == 2


def test_native_but_not_faster_keeps_float32(monkeypatch, auto_cpu):
    simulate(monkeypatch, auto_cpu, native=True, fp32_s=0.0105, bf16_s=0.01)
    choice = cpu.choose_cpu_dtype(2048, 6144)
    assert choice.dtype == "float32" and "only 1.05x" in choice.reason and auto_cpu == [(2048, 6144)]


def test_explicit_float32_and_environment(monkeypatch, auto_cpu, tiny_embedding_path, embedder, corpus):
    simulate(monkeypatch, auto_cpu, native=True)
    with Embedder.from_pretrained(tiny_embedding_path, device="cpu", dtype="float32") as emb:
        assert emb.dtype == "float32" and "asked for" in emb.dtype_reason
        assert np.array_equal(emb.embed(corpus), embedder.embed(corpus))
    monkeypatch.setenv(cpu.ENV_VAR, "float32")
    assert cpu.choose_cpu_dtype(128, 256) == cpu.CpuDtype("float32",
                                                          "float32: QVL_CPU_DTYPE=float32 in the environment")
    monkeypatch.setenv(cpu.ENV_VAR, "bf16")
    assert cpu.choose_cpu_dtype(128, 256).dtype == "bfloat16"
    assert auto_cpu == []
    monkeypatch.setenv(cpu.ENV_VAR, "half")
    with pytest.raises(ValueError, match="QVL_CPU_DTYPE"):
        cpu.choose_cpu_dtype(128, 256)


def test_probe_reads_this_machine():
    native, why = cpu.native_bf16()
    name, flags = cpu.cpu_info()
    assert native == any(f in flags for f in cpu.NATIVE_FLAGS) or "oneDNN" in why
    assert name in why


@pytest.fixture(scope="module")
def bf16_reranker(tiny_reranker_path):
    with Reranker.from_pretrained(tiny_reranker_path, device="cpu", dtype="bfloat16") as rr:
        yield rr


# float32 scores at least 7e-3 apart for both queries (bf16 moves them by ~2e-3), so "same ranking" is meaningful
DOCS = ["a dog running on the beach", "quarterly revenue report " * 40, make_image(96, 64, seed=1), "beach sunset",
        "a cat", "red shoes on sale"]


def test_bf16_reranker_scores_close_same_ranking(reranker, bf16_reranker):
    assert bf16_reranker.dtype == "bfloat16" and str(bf16_reranker._score_row.dtype) == "torch.float32"
    for query in ("a dog on a beach", make_image(160, 120, seed=9)):
        fp32, bf16 = reranker.score(query, DOCS), bf16_reranker.score(query, DOCS)  # shared-prefix path
        assert np.abs(fp32 - bf16).max() < 1e-2, np.abs(fp32 - bf16).max()
        assert list(np.argsort(-fp32)) == list(np.argsort(-bf16)), (fp32, bf16)
        assert np.diff(np.sort(fp32)).min() > 5e-3  # the premise above
        single = np.array([bf16_reranker.score(query, [d])[0] for d in DOCS[:3]])  # one pair per forward
        assert np.abs(single - fp32[:3]).max() < 1e-2


def test_meta_shows_the_dtype(embedder, bf16_reranker):
    httpx = pytest.importorskip("httpx")
    from embedder.service import ServiceSettings

    from .service.test_service import serve

    with serve(ServiceSettings(), embedder, bf16_reranker) as base:
        meta = httpx.get(base + "/meta", timeout=60).json()
    assert meta["model"]["dtype"] == "float32" and meta["model"]["dtype_reason"] == embedder.dtype_reason
    assert meta["reranker"]["dtype"] == "bfloat16" and "asked for" in meta["reranker"]["dtype_reason"]

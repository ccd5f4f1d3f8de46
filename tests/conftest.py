"""Shared fixtures: the tiny checkpoints (built once per session) and small media."""
from __future__ import annotations

import os

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# dtype="auto" on a CPU with native bf16 would run the tiny models in bf16; the suite pins the
# release's float32 vectors (and the qvl serve processes it starts inherit this). The bf16
# choice itself is tested in test_cpu_dtype.py.
os.environ.setdefault("QVL_CPU_DTYPE", "float32")


def skip_or_fail(reason: str) -> None:
    """Skip a test that needs something this machine cannot provide; in CI, fail instead."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tiny_embedding_path(tmp_path_factory) -> str:
    from embedder.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-embedding"), kind="embedding")


@pytest.fixture(scope="session")
def tiny_reranker_path(tmp_path_factory) -> str:
    from embedder.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-reranker"), kind="reranker", seed=1)


@pytest.fixture(scope="session")
def embedder(tiny_embedding_path):
    from embedder import Embedder

    with Embedder.from_pretrained(tiny_embedding_path, device="cpu") as emb:
        yield emb


@pytest.fixture(scope="session")
def reranker(tiny_reranker_path):
    from embedder import Reranker

    with Reranker.from_pretrained(tiny_reranker_path, device="cpu") as rr:
        yield rr


@pytest.fixture(scope="session")
def tiny_text_embedding_path(tmp_path_factory) -> str:
    """A tiny Qwen3-Embedding (text-only) checkpoint (issue 20)."""
    from embedder.testing import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-text-embedding"), kind="text-embedding", seed=2)


@pytest.fixture(scope="session")
def text_embedder(tiny_text_embedding_path):
    from embedder import Embedder

    with Embedder.from_pretrained(tiny_text_embedding_path, device="cpu") as emb:
        yield emb


def make_image(width: int = 96, height: int = 64, seed: int = 0, mode: str = "RGB"):
    from PIL import Image

    rng = np.random.RandomState(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = (rng.rand(height, width, channels) * 255).astype("uint8")
    return Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode)


@pytest.fixture()
def media_layout(tmp_path):
    """A media root and a folder outside it: ``media/in.png``, ``media/link.png`` -> ``elsewhere/out.png``."""
    root, outside = tmp_path / "media", tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    make_image(64, 64, seed=1).save(root / "in.png")
    make_image(64, 64, seed=2).save(outside / "out.png")
    os.symlink(outside / "out.png", root / "link.png")
    return root, outside


@pytest.fixture()
def image_files(tmp_path):
    """A few small PNG/JPEG files on disk."""
    paths = []
    for i in range(3):
        p = tmp_path / f"img{i}.png"
        make_image(80 + 16 * i, 60 + 8 * i, seed=i).save(p)
        paths.append(str(p))
    return paths


def pytest_collection_finish(session) -> None:
    """Build the Weaviate server before the first test when Weaviate tests are selected.

    A fresh machine compiles it once (minutes); doing it here keeps that out of any one
    test's timeout. Failures are left to the tests, which skip (or fail in CI) with the reason.
    """
    if os.environ.get("WEAVIATE_URL") or not any("weaviate" in item.nodeid.lower() or "test_docs_blocks" in item.nodeid
                                                 for item in session.items):
        return
    from connectors.localdb import LocalServerError
    from connectors.localdb.weaviate import binary_path, ensure_binary

    if binary_path().is_file():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    say = reporter.write_line if reporter is not None else None
    try:
        ensure_binary(progress=say)  # "building Weaviate vX once into DIR ... (a few minutes)", "built ..."
    except LocalServerError as exc:
        if reporter is not None:
            reporter.write_line(f"could not build the Weaviate server: {exc}")

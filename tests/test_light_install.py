"""The light install: calling a remote ``qvl serve`` needs no torch, and a local model without it says what to install.

Each check runs a fresh interpreter in which torch, torchvision, transformers,
safetensors and qwen-vl-utils cannot be imported (as after ``pip install .`` without the
``local`` extra); the service it talks to is the real app, run in this process with the
tiny checkpoint.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
LOCAL_ONLY = ("torch", "torchvision", "transformers", "safetensors", "qwen_vl_utils")
BLOCK = textwrap.dedent(f"""
    import sys

    class _NoLocalStack:  # as if the `local` extra were not installed
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {LOCAL_ONLY!r}:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, _NoLocalStack())
""")


def run_light(code: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def serve(embedder: Any, reranker: Any) -> Any:
    """The service test suite's in-process server, with the key ``k3y``."""
    from embedder.service import ServiceSettings
    from tests.service.test_service import serve as serve_app

    return serve_app(ServiceSettings(api_key="k3y"), embedder, reranker)


def test_remote_path_imports_no_torch(embedder, reranker):
    """embedder + connectors.memory + a RemoteEmbedder: vectors and a search, with torch unimportable."""
    with serve(embedder, reranker) as url:
        proc = run_light(f"""
            import json, sys
            import embedder, connectors.memory
            from embedder import EmbedderLike, RemoteEmbedder, RerankerLike, load_embedder, load_reranker
            from connectors.memory import MemoryStore

            emb = load_embedder({url!r}, api_key="k3y")
            rr = load_reranker({url!r}, api_key="k3y")
            assert isinstance(emb, RemoteEmbedder) and isinstance(emb, EmbedderLike) and isinstance(rr, RerankerLike)
            store = MemoryStore(embedder=emb, dim=64)
            store.create()
            store.upsert([{{"id": "red", "text": "a red square"}}, {{"id": "blue", "text": "a blue circle"}}])
            hits = store.search("a red square", k=2)
            scores = rr.score("a red square", ["a red square", "a blue circle"])
            emb.close(); rr.close(); store.close()
            heavy = [m for m in {LOCAL_ONLY!r} if m in sys.modules]
            print(json.dumps({{"ids": sorted(h.id for h in hits), "heavy": heavy, "scores": len(scores),
                              "fingerprint": emb.fingerprint()}}))
        """)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and out["ids"] == ["blue", "red"] and out["scores"] == 2
    assert out["fingerprint"]["model"] == embedder.name and out["fingerprint"]["dim"] == embedder.dim
    from embedder import fingerprint_conflicts

    assert fingerprint_conflicts(embedder.fingerprint(), out["fingerprint"], 64) == []  # the same vectors


def test_local_model_without_torch_names_the_extra(tiny_embedding_path):
    proc = run_light(f"""
        from embedder import MissingDependencyError, load_embedder, load_reranker

        for load in (load_embedder, load_reranker):
            try:
                load({tiny_embedding_path!r}, device="cpu")
            except MissingDependencyError as exc:
                print(exc)
            else:
                raise SystemExit("loaded a local model without torch")
    """)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    for line in lines:
        assert 'pip install "qwen3-vl-search[local]"' in line and "'torch'" in line, line


def test_import_embedder_stays_light():
    """``import embedder`` and the names a remote user needs import none of the local stack."""
    run_light("""
        import sys
        import embedder
        from embedder import (EmbedderLike, EmbedResult, RemoteEmbedder, RemoteReranker, RerankerLike,
                              ScoreResult, fingerprint_conflicts, load_embedder, load_reranker)
        import embedder.contracts, embedder.factory, embedder.fingerprint, embedder.remote
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers")], sorted(sys.modules)
    """)

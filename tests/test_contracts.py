"""The embedder contract: local and remote front-ends, the same checks, the factory and the fingerprint."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from embedder import (EmbedderLike, EmbedResult, InputError, RemoteEmbedder, RemoteReranker, RerankerLike,
                      ScoreResult, fingerprint_conflicts, load_embedder, load_reranker)
from embedder.contracts import check_batch_size, check_dim, check_items, check_on_error
from embedder.fingerprint import fingerprint_from_meta, make_fingerprint, weights_digest

UNREACHABLE = "http://127.0.0.1:9"  # nothing listens: a check that needs the service would fail differently


def test_local_and_remote_front_ends_implement_the_protocols(embedder, reranker):
    assert isinstance(embedder, EmbedderLike) and isinstance(reranker, RerankerLike)
    assert not isinstance(reranker, EmbedderLike) and not isinstance(object(), RerankerLike)
    # checked without calling the properties: RemoteEmbedder.dim would ask the (absent) service
    with RemoteEmbedder(UNREACHABLE, retries=0) as remote, RemoteReranker(UNREACHABLE, retries=0) as rr:
        assert isinstance(remote, EmbedderLike) and isinstance(rr, RerankerLike)


BAD_CALLS = [
    (dict(on_error="ignore"), "on_error must be 'raise' or 'skip', got 'ignore'"),
    (dict(items="a lone string"), "items must be a list \\(wrap a single item in a list\\)"),
    (dict(items={"text": "a dict"}), "items must be a list"),
    (dict(batch_size=0), "batch_size must be a positive integer or None, got 0"),
    (dict(batch_size=2.5), "batch_size must be a positive integer or None, got 2.5"),
    (dict(instruction=3), "instruction must be a string or None, got int"),
]


@pytest.mark.parametrize("kwargs,message", BAD_CALLS)
def test_local_and_remote_refuse_the_same_arguments_alike(embedder, kwargs, message):
    kwargs = dict(kwargs)
    items = kwargs.pop("items", ["a", "b"])
    with RemoteEmbedder(UNREACHABLE, retries=0) as remote:
        for emb in (embedder, remote):
            for method in (emb.embed, emb.embed_queries, emb.embed_documents):
                with pytest.raises(InputError, match=message):
                    method(items, **kwargs)


@pytest.mark.parametrize("kwargs,message", [
    (dict(on_error="nope"), "on_error must be"), (dict(documents="one"), "documents must be a list \\(wrap a single "
                                                                         "document in a list\\)"),
    (dict(batch_size=-1), "batch_size must be a positive"), (dict(instruction=["x"]), "instruction must be a string"),
])
def test_rerankers_refuse_the_same_arguments_alike(reranker, kwargs, message):
    kwargs = dict(kwargs)
    documents = kwargs.pop("documents", ["a", "b"])
    with RemoteReranker(UNREACHABLE, retries=0) as remote:
        for rr in (reranker, remote):
            with pytest.raises(InputError, match=message):
                rr.score("q", documents, **kwargs)
            with pytest.raises(InputError, match=message):
                rr.rerank("q", documents, **kwargs)


def test_shared_checks():
    assert check_on_error("skip") == "skip" and check_batch_size(None) is None and check_batch_size(np.int64(3)) == 3
    assert check_dim(None, 128) == 128 and check_dim(np.int32(64), 128) == 64
    for bad in (63, 129, True, 64.0):
        with pytest.raises(InputError, match="dim must be an integer from 64 to 128"):
            check_dim(bad, 128)
    assert check_items(("a",)) == ("a",)
    for bad in (b"bytes", (x for x in "ab"), {"a"}):
        with pytest.raises(InputError, match="must be a list"):
            check_items(bad)


def test_skip_results_and_errors_keep_their_shape(embedder, reranker):
    result = embedder.embed(["ok", 5, "fine"], dim=64, on_error="skip")
    assert isinstance(result, EmbedResult) and result.indices == [0, 2] and result.vectors.shape == (2, 64)
    assert [i for i, _ in result.errors] == [1]
    scores = reranker.score("q", ["a", 5], on_error="skip")
    assert isinstance(scores, ScoreResult) and np.isnan(scores.scores[1]) and scores.errors[0][0] == 1
    with pytest.raises(InputError, match="document 1: unsupported item type int") as info:
        reranker.score("q", ["a", 5])
    assert info.value.index == 1


def test_factory_loads_local_checkpoints(tiny_embedding_path, tiny_reranker_path, media_layout):
    root, outside = media_layout
    with load_embedder(tiny_embedding_path, device="cpu", path_roots=[root]) as emb:
        assert isinstance(emb, EmbedderLike) and emb.dim == 128
        assert emb.embed([{"image": str(root / "in.png")}]).shape == (1, 128)
        with pytest.raises(InputError, match="outside"):
            emb.embed([{"image": str(outside / "out.png")}])
    with load_reranker(tiny_reranker_path, device="cpu") as rr:
        assert isinstance(rr, RerankerLike) and rr.rerank("q", ["a", "b"], top_k=1)[0][0] in (0, 1)


def test_factory_checks_a_remote_at_once():
    from embedder import RemoteError

    with pytest.raises(RemoteError, match="failed"):
        load_embedder(UNREACHABLE + "/", api_key="k")


# ---------------------------------------------------------------------------- fingerprint
def test_fingerprint_describes_how_vectors_are_made(embedder):
    fp = embedder.fingerprint()
    assert json.loads(json.dumps(fp)) == fp
    assert fp["model"] == embedder.name and fp["kind"] == "embedding" and fp["dim"] == 128
    assert fp["precision"] == "float32" and fp["document_instruction"] is None and fp["prompt_format"] == 1
    assert fp["weights"].startswith("sha256:") and fp["query_instruction"].startswith("Retrieve")
    assert {"image_max_pixels", "fps", "max_frames", "max_length"} <= set(fp["sizing"])
    assert embedder.fingerprint(document_instruction="Represent the photo")["document_instruction"] == \
        "Represent the photo."
    assert fingerprint_conflicts(fp, embedder.fingerprint(), 64) == []


def test_same_weights_elsewhere_are_the_same_model_and_other_weights_are_not(embedder, tiny_embedding_path,
                                                                            tmp_path):
    from embedder import Embedder
    from embedder.testing import build_tiny_checkpoint

    copy = shutil.copytree(tiny_embedding_path, tmp_path / "moved")
    assert weights_digest(copy) == weights_digest(tiny_embedding_path)
    other = build_tiny_checkpoint(tmp_path / "other", seed=7)
    assert weights_digest(other) != weights_digest(tiny_embedding_path)
    with Embedder.from_pretrained(str(copy), device="cpu") as moved, \
            Embedder.from_pretrained(other, device="cpu") as different:
        assert fingerprint_conflicts(embedder.fingerprint(), moved.fingerprint(), 128) == []
        [line] = fingerprint_conflicts(embedder.fingerprint(), different.fingerprint(), 128)
        assert line.startswith("model weights differ") and str(other) in line


def test_conflicts_name_what_changes_vectors():
    base = make_fingerprint(model="m", dim=128, precision="float32", weights="sha256:a",
                            sizing={"fps": 1.0, "max_frames": 64})
    assert fingerprint_conflicts(base, dict(base, precision="bfloat16", query_instruction="Find it."), 128) == []
    cases = {
        "model weights differ": dict(base, weights="sha256:b"),
        "model kind": dict(base, kind="reranker"),
        "prompt format version: stored 1, current 2": dict(base, prompt_format=2),
        "document instruction: stored None (the prompt's default), current 'Photo.'":
            dict(base, document_instruction="Photo."),
        "sizing fps: stored 1.0, current 2.0": dict(base, sizing={"fps": 2.0, "max_frames": 64}),
        "the store holds 256-dimensional vectors, the current model makes at most 128": base,
    }
    for expected, current in cases.items():
        found = fingerprint_conflicts(base, current, 256 if current is base else 64)
        assert len(found) == 1 and expected in found[0], (expected, found)
    # no weights digest on one side: the ids and revisions decide
    a, b = dict(base, weights=None, revision="r1"), dict(base, weights=None, revision="r2", model="n")
    assert fingerprint_conflicts(a, b, 64) == ["model revision: stored 'r1', current 'r2'",
                                               "model: stored 'm', current 'n'"]


def test_fingerprint_from_meta_prefers_the_service_s_own():
    stated = make_fingerprint(model="served", dim=2048, precision="bfloat16")
    assert fingerprint_from_meta({"fingerprint": stated, "dim": 2048}) == stated
    built = fingerprint_from_meta({"model": {"name": "served", "dim": 2048}, "dim": 2048})
    assert built["model"] == "served" and built["dim"] == 2048 and built["precision"] is None
    # what an older service does not state is not held against it
    assert fingerprint_conflicts(stated, built, 1024) == []


# ---------------------------------------------------------------------------- static types
TYPED_USE = '''
import numpy as np
from embedder import Embedder, EmbedderLike, EmbedResult, RemoteEmbedder, RemoteReranker, Reranker, RerankerLike
from embedder import ScoreResult, load_embedder


def use(emb: EmbedderLike, rr: RerankerLike) -> None:
    vectors: np.ndarray = emb.embed(["x"])
    skipped: EmbedResult = emb.embed_documents(["x"], on_error="skip")
    queries: np.ndarray = emb.embed_queries(["x"], dim=64)
    scores: np.ndarray = rr.score("q", ["d"])
    kept: ScoreResult = rr.score("q", ["d"], on_error="skip")


def every_front_end(local: Embedder, remote: RemoteEmbedder, rerank: Reranker, remote_rr: RemoteReranker) -> None:
    use(local, rerank)
    use(remote, remote_rr)
    use(load_embedder("http://x"), remote_rr)
    skipped: EmbedResult = remote.embed(["x"], on_error="skip")
'''
WRONG_USE = '''
import numpy as np
from embedder import EmbedderLike


def use(emb: EmbedderLike) -> None:
    vectors: np.ndarray = emb.embed(["x"], on_error="skip")
'''


def test_on_error_overloads_type_check(tmp_path):
    """mypy sees ndarray for on_error="raise", EmbedResult / ScoreResult for "skip", on every front-end."""
    import subprocess
    import sys
    from pathlib import Path

    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    root = Path(__file__).resolve().parents[1]
    for name, code in (("typed_use.py", TYPED_USE), ("wrong_use.py", WRONG_USE)):
        (tmp_path / name).write_text(code)
    run = lambda name: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "mypy", "--ignore-missing-imports", "--follow-imports=silent",
         "--cache-dir", str(tmp_path / "cache"), str(tmp_path / name)], capture_output=True, text=True, cwd=root,
        timeout=300, env={**__import__("os").environ, "MYPYPATH": str(root)})
    ok = run("typed_use.py")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = run("wrong_use.py")
    assert wrong.returncode == 1 and "EmbedResult" in wrong.stdout, wrong.stdout + wrong.stderr


def test_a_caller_that_retries_turns_the_clients_retries_off():
    """``load_embedder(url, retries=0)``: one request per call (qvl ingest retries with its own policy,
    so retries do not nest); the default client retries a 503 three times."""
    import http.server
    import threading

    from embedder.errors import OverloadedError

    hits: list[str] = []

    class Busy(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            hits.append(self.path)
            body = b'{"error": {"message": "busy", "code": "overloaded"}}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Busy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(OverloadedError):
            load_embedder(url, retries=0)
        assert len(hits) == 1
        with pytest.raises(OverloadedError):
            load_embedder(url, retries=2)
        assert len(hits) == 1 + 3
    finally:
        server.shutdown()
        server.server_close()

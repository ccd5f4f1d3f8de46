"""The ``qvl`` command line as users run it: every command a new process of the real console script.

Each target (Milvus Lite file, PostgreSQL, Weaviate) gets the README's cycle:
``qvl ingest`` -> ``qvl search`` (a text query with ``--json --rerank``) -> ``qvl ingest``
again (nothing new is written) -> ``qvl search`` again (an image query with ``--image``),
with exit codes, stdout and stderr asserted. ``memory:`` lives inside one process, so it
has no place here (``test_ingest.py`` runs it in-process). Then: the line ``qvl demo`` prints pasted into a new process,
``--api-key`` against a real ``qvl serve --api-key``, and the errors that must come before
the model load (a wrong scheme, an unreachable database, a bad ``--dim``, no network).

The tiny checkpoints and the corpus are shared by the module; the whole module takes
about two minutes on two cores.
"""
from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_image, skip_or_fail
from tests.test_ingest import summary_of

ROOT = Path(__file__).resolve().parents[1]
KEY = "e2e-secret-key"


# ============================================================================ helpers
def qvl_path() -> str:
    path = shutil.which("qvl")
    if not path:
        skip_or_fail("the `qvl` console script is not on PATH (pip install -e .)")
    return path  # type: ignore[return-value]


def clean_env(**extra: str) -> dict[str, str]:
    """The user's environment without proxies (the services are on 127.0.0.1) and without a stray key."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "QVL_API_KEY"}
    env.update(extra)
    return env


def qvl(*argv: Any, env: dict[str, str] | None = None, cwd: Path | None = None,
        timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``qvl ARGV...`` as a new process of the installed console script."""
    return subprocess.run([qvl_path(), *map(str, argv)], capture_output=True, text=True, env=env or clean_env(),
                          cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_clean_stderr(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Loading weights" not in proc.stderr, proc.stderr  # transformers' bar is not shown


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("qvl:")]


# ============================================================================ shared fixtures
@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Any]:
    """Four images (three with a caption sidecar) and one text file; the ids each row gets."""
    from connectors.core import normalize_row
    from connectors.ingest import folder_rows

    root = tmp_path_factory.mktemp("e2e") / "photos"
    root.mkdir()
    for i, (name, caption) in enumerate([("red_square.png", "a red square"), ("green_circle.png", "a green circle"),
                                         ("blue_star.png", "a blue star"), ("plain.png", None)]):
        make_image(72 + 8 * i, 56, seed=40 + i).save(root / name)
        if caption:
            (root / name.replace(".png", ".txt")).write_text(caption + "\n")
    (root / "notes.txt").write_text("notes about coloured shapes\n")
    ids = {normalize_row(sr.row, i).id for i, sr in enumerate(folder_rows(root))}
    assert len(ids) == 5
    return {"root": root, "ids": ids}


# A store added later joins the cycle with a backend module that has e2e_target(tmp_path) -> (url, collection).
LATER = [name for name in ("qdrant", "faiss")
         if importlib.util.find_spec(f"tests.connectors.backend_{name}") is not None]


@pytest.fixture(params=["milvus", "postgres", "weaviate", *LATER])
def target(request, tmp_path) -> tuple[str, str]:
    """(target URL, collection) on a real database; the collection is dropped afterwards."""
    import connectors

    if request.param in LATER:
        yield importlib.import_module(f"tests.connectors.backend_{request.param}").e2e_target(tmp_path)
        return

    if request.param == "milvus":
        try:
            import milvus_lite  # noqa: F401
        except ImportError:
            skip_or_fail("milvus-lite is not installed")
        yield f"milvus:{tmp_path / 'photos.db'}", "photos"
        return
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        with connectors.connect(dsn, collection="e2e_photos", dim=64) as store:
            store.drop()
        yield dsn, "e2e_photos"
        with connectors.connect(dsn, collection="e2e_photos", dim=64) as store:
            store.drop()
        return
    from tests.connectors.backend_weaviate import drop_collection, test_server

    server = test_server()
    drop_collection(server, "E2ePhotos")
    yield server.target, "E2ePhotos"
    drop_collection(server, "E2ePhotos")


from tests.connectors.postgres_server import pg_dsn, pg_server  # noqa: E402,F401 - session fixtures


# ============================================================================ the cycle on every target
def test_ingest_search_reingest_search(target, corpus, tiny_embedding_path, tiny_reranker_path, tmp_path):
    url, collection = target
    root, ids = corpus["root"], corpus["ids"]
    common = ["--collection", collection, "--model", tiny_embedding_path]
    ingest = ["ingest", root, "--to", url, *common, "--dim", "64", "--state", tmp_path / "state.jsonl",
              "--dead-letter", tmp_path / "dead.jsonl"]

    first = qvl(*ingest, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert_clean_stderr(first)
    assert summary_of(first.stdout) == dict(read=5, embedded=5, written=5, skipped=0, failed=0)
    assert "rows/s" in first.stdout and not (tmp_path / "dead.jsonl").exists()

    # a text query, as JSON, reranked
    text = qvl("search", "a red square", "--in", url, *common, "-k", 10, "--json", "--rerank",
               "--reranker", tiny_reranker_path, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert_clean_stderr(text)
    payload = json.loads(text.stdout)
    assert payload["query"] == "a red square"  # the query itself, not a Python repr
    assert payload["collection"] == collection
    hits = payload["hits"]
    assert {h["id"] for h in hits} == ids
    reranked = [h["rerank_score"] for h in hits]
    assert all(s is not None for s in reranked) and reranked == sorted(reranked, reverse=True)
    assert [h["rank"] for h in hits] == list(range(1, 6))
    by_media = {Path(h["media"]).name: h for h in hits if h["media"]}
    assert by_media["red_square.png"]["text"] == "a red square" and by_media["red_square.png"]["modality"] == "vl"
    assert by_media["plain.png"]["modality"] == "image"

    # again: nothing new is written, and the summary says so (a new state file: ids come from the database)
    again = qvl(*ingest[:-4], "--state", tmp_path / "other-state.jsonl", "--dead-letter", tmp_path / "dead.jsonl",
                cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_clean_stderr(again)
    assert summary_of(again.stdout) == dict(read=5, embedded=0, written=0, skipped=5, failed=0)
    assert "nothing new" in again.stdout

    # and search again, by image, as JSON
    image = qvl("search", "--image", root / "blue_star.png", "--in", url, *common, "-k", 3, "--json", cwd=tmp_path)
    assert image.returncode == 0, image.stderr
    assert_clean_stderr(image)
    payload = json.loads(image.stdout)
    assert payload["query"] == {"image": str((root / "blue_star.png").resolve())}
    scores = [h["score"] for h in payload["hits"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert {h["id"] for h in payload["hits"]} <= ids and all(h["rerank_score"] is None for h in payload["hits"])


# ============================================================================ qvl migrate
def test_migrate_copies_to_every_target_and_search_there_agrees(target, corpus, tiny_embedding_path, tmp_path):
    """A Milvus Lite collection copied with ``qvl migrate`` to each target: the same ids, the same
    hits, no re-embedding; a second run resumes (nothing left), ``--restart`` copies again
    idempotently; another model is refused by ``qvl search`` in one line."""
    from embedder.testing import build_tiny_checkpoint

    url, collection = target
    src = f"milvus:{tmp_path / 'source.db'}"
    first = qvl("ingest", corpus["root"], "--to", src, "--collection", "photos", "--model", tiny_embedding_path,
                "--dim", "64", "--state", tmp_path / "ingest-state.jsonl", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    state = tmp_path / "migrate.json"
    copy = qvl("migrate", src, url, "--collection", "photos", "--to-collection", collection, "--state", state,
               "--page-size", 2, cwd=tmp_path)
    assert copy.returncode == 0, copy.stderr
    assert_clean_stderr(copy)
    assert copy.stdout.startswith(f"copied 5 rows from {src} to {url}") and "failed 0" in copy.stdout
    assert json.loads(state.read_text())["done"] is True

    def hits(where: str, name: str) -> list[tuple[str, float]]:
        proc = qvl("search", "a red square", "--in", where, "--collection", name, "--model", tiny_embedding_path,
                   "-k", 5, "--json", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return [(h["id"], round(h["score"], 3)) for h in json.loads(proc.stdout)["hits"]]

    there = hits(url, collection)
    assert {i for i, _ in there} == corpus["ids"] and there == hits(src, "photos")
    # the portable filter, as JSON, on every target: the rows with media that are images alone
    images = qvl("search", "a red square", "--in", url, "--collection", collection, "--model", tiny_embedding_path,
                 "--json", "--where", '{"modality": "image"}', cwd=tmp_path)
    assert images.returncode == 0, images.stderr
    assert [Path(h["media"]).name for h in json.loads(images.stdout)["hits"]] == ["plain.png"]

    again = qvl("migrate", src, url, "--collection", "photos", "--to-collection", collection, "--state", state,
                cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.startswith("copied 0 rows"), again.stdout + again.stderr
    restart = qvl("migrate", src, url, "--collection", "photos", "--to-collection", collection, "--state", state,
                  "--restart", cwd=tmp_path)
    assert restart.returncode == 0 and restart.stdout.startswith("copied 5 rows"), restart.stderr
    assert hits(url, collection) == there  # idempotent: still five rows

    missing = qvl("migrate", src, url, "--collection", "nope", "--state", tmp_path / "m2.json", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    [line] = error_lines(missing)
    assert "'nope' does not exist" in line

    other = build_tiny_checkpoint(tmp_path / "other-model", kind="embedding", seed=7)
    refused = qvl("search", "a red square", "--in", url, "--collection", collection, "--model", other,
                  cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    [line] = error_lines(refused)
    assert "another way" in line and "weights" in line
    mixed = qvl("ingest", corpus["root"], "--to", url, "--collection", collection, "--model", other, "--dim", 64,
                "--state", tmp_path / "other-state.jsonl", cwd=tmp_path)
    assert mixed.returncode == 2 and "Traceback" not in mixed.stderr, mixed.stdout + mixed.stderr
    [line] = error_lines(mixed)
    assert "another way" in line and "allow_mismatch" in line


# ============================================================================ qvl demo
def test_migrate_keeps_the_quantization_when_asked_and_says_when_it_does_not(tmp_path):
    """An int8 Faiss collection copied to Qdrant local mode: float32 with a warning by default,
    int8 with ``--quantization same``; an unknown precision is refused by the parser."""
    import numpy as np

    import connectors

    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(6, 64)).astype(np.float32)
    src = f"faiss:{tmp_path / 'src'}"
    with connectors.connect(src, collection="items", dim=64, quantization="int8") as store:
        store.create()
        assert store.upsert([{"id": f"r{i}", "vector": v} for i, v in enumerate(vectors)]).ok
    plain = qvl("migrate", src, f"qdrant:{tmp_path / 'plain'}", "--collection", "items", "--state",
                tmp_path / "m1.json", cwd=tmp_path)
    assert plain.returncode == 0 and "copied 6 rows" in plain.stdout, plain.stderr
    assert "stores float32 vectors, the source int8 ones" in plain.stderr and "--quantization same" in plain.stderr
    kept = qvl("migrate", src, f"qdrant:{tmp_path / 'kept'}", "--collection", "items", "--quantization", "same",
               "--state", tmp_path / "m2.json", cwd=tmp_path)
    assert kept.returncode == 0 and "copied 6 rows" in kept.stdout and "WARNING" not in kept.stderr, kept.stderr
    for folder, precision in (("plain", "float32"), ("kept", "int8")):
        with connectors.connect(f"qdrant:{tmp_path / folder}", collection="items") as copy:
            assert copy.count() == 6 and copy.quantization == precision
    bad = qvl("migrate", src, f"qdrant:{tmp_path / 'x'}", "--quantization", "int4", cwd=tmp_path)
    assert bad.returncode == 2 and "invalid choice: 'int4'" in bad.stderr


def test_demo_prints_a_search_that_works_in_a_new_process(tmp_path):
    folder = tmp_path / "demo"
    demo = qvl("demo", "--offline-test-model", "--dir", folder, "--html", tmp_path / "demo.html", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert_clean_stderr(demo)
    assert "RANDOM" in demo.stderr
    lines = demo.stdout.splitlines()
    command = lines[lines.index("search it yourself:") + 1].strip()
    argv = shlex.split(command)
    assert argv[:2] == ["qvl", "search"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pasted = qvl(*argv[1:], cwd=elsewhere)  # pasted into a new shell, in another folder
    assert pasted.returncode == 0, pasted.stderr
    assert_clean_stderr(pasted)
    assert pasted.stdout.splitlines()[0].split()[:4] == ["#", "id", "score", "rerank"]
    assert (elsewhere / "hits.html").is_file()
    page = (tmp_path / "demo.html").read_text()
    assert "RANDOM" in page  # the offline note
    assert page.count("data:image/jpeg;base64,") == 1 + 3  # the query image, then the 3 hits


def test_demo_offline_without_a_model_fails_fast_in_one_line(tmp_path):
    """No network to the hub (this machine, and CI): one line saying what to do, within seconds."""
    # an empty cache, and a hub that refuses connections (deterministic on machines with network too)
    env = clean_env(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    start = time.monotonic()
    proc = qvl("demo", "--dir", tmp_path / "demo", env=env, cwd=tmp_path)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = error_lines(proc)
    assert "hf download Qwen/Qwen3-VL-Embedding-2B" in line and "--offline-test-model" in line
    assert "--model" in line and "huggingface-cli" not in proc.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s (hub retries took about 30 s)"
    # the same with HF_HUB_OFFLINE=1, without asking the network at all
    proc = qvl("demo", "--dir", tmp_path / "demo", env=dict(env, HF_HUB_OFFLINE="1"), cwd=tmp_path)
    assert proc.returncode == 1 and "HF_HUB_OFFLINE" in error_lines(proc)[0]


def test_serve_and_the_library_without_network_fail_fast_too(tmp_path):
    """The same one-line answer from `qvl serve` and from Embedder.from_pretrained (the check lives in
    the model loader, not only in the ingest CLI)."""
    env = clean_env(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="0", HF_ENDPOINT="http://127.0.0.1:9")
    start = time.monotonic()
    proc = qvl("serve", "--model", "Qwen/Qwen3-VL-Embedding-2B", "--port", "0", env=env, cwd=tmp_path, timeout=60)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "hf download Qwen/Qwen3-VL-Embedding-2B" in proc.stderr and "huggingface-cli" not in proc.stderr
    assert time.monotonic() - start < 15
    code = "from embedder import Embedder\nEmbedder.from_pretrained('Qwen/Qwen3-VL-Reranker-2B')"
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=60)
    assert proc.returncode != 0 and "ModelLoadError" in proc.stderr
    assert "the Hugging Face Hub cannot be reached" in proc.stderr and "hf download Qwen/Qwen3-VL-Reranker-2B" in \
        proc.stderr
    assert time.monotonic() - start < 15


# ============================================================================ --api-key
def test_api_key_for_a_served_model(corpus, tiny_embedding_path, tiny_reranker_path, tmp_path):
    from tests.connectors.weaviate_server import ServerUnavailable, free_ports, running_qvl_serve

    [port] = free_ports(1)
    try:
        with running_qvl_serve(tiny_embedding_path, reranker=tiny_reranker_path, port=port,
                               log_path=tmp_path / "serve.log", extra_args=["--api-key", KEY]) as service:
            _use_served_model(service.url, corpus, tmp_path)
    except ServerUnavailable as exc:
        pytest.fail(f"qvl serve did not start: {exc}")


def _use_served_model(url: str, corpus: dict[str, Any], tmp_path: Path) -> None:
    """ingest and search through the service: with --api-key, with $QVL_API_KEY, and refused without."""
    db = f"milvus:{tmp_path / 'remote.db'}"
    ingest = qvl("ingest", corpus["root"], "--to", db, "--model", url, "--api-key", KEY, "--dim", 64,
                 "--state", tmp_path / "s", "--dead-letter", tmp_path / "d", cwd=tmp_path)
    assert ingest.returncode == 0, ingest.stderr
    assert summary_of(ingest.stdout)["written"] == 5
    # the key from the environment, for the embedder and the reranker
    search = qvl("search", "a red square", "--in", db, "--model", url, "--rerank", "--reranker", url, "--json",
                 env=clean_env(QVL_API_KEY=KEY), cwd=tmp_path)
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)["hits"]
    assert {h["id"] for h in hits} == corpus["ids"] and all(h["rerank_score"] is not None for h in hits)
    # no key, or a wrong one: one clear line, before anything else happens
    for extra in ([], ["--api-key", "wrong"]):
        denied = qvl("search", "x", "--in", db, "--model", url, *extra, cwd=tmp_path)
        assert denied.returncode == 2, denied.stderr
        [line] = error_lines(denied)
        assert "401" in line and "--api-key" in line and "QVL_API_KEY" in line, line
        assert "Traceback" not in denied.stderr




# ============================================================================ errors before the model load
def test_wrong_scheme_and_unreachable_database_fail_before_the_model_loads(corpus, tiny_embedding_path, tmp_path):
    for to, expected in (("bogus://x", "scheme 'bogus'"), ("postgresql://127.0.0.1:1/x", "PostgreSQL")):
        start = time.monotonic()
        proc = qvl("ingest", corpus["root"], "--to", to, "--model", tiny_embedding_path, cwd=tmp_path)
        elapsed = time.monotonic() - start
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and "Loading weights" not in proc.stderr
        [line] = error_lines(proc)
        assert expected in line, line
        assert elapsed < 5, f"{to}: {elapsed:.1f} s (the model load alone takes longer)"
    proc = qvl("search", "x", "--in", "bogus://x", "--model", tiny_embedding_path, cwd=tmp_path)
    assert proc.returncode == 2 and "scheme 'bogus'" in error_lines(proc)[0]


@pytest.mark.parametrize("dim", [10, 4096])
def test_bad_dim_creates_nothing(corpus, tiny_embedding_path, tmp_path, dim):
    db = tmp_path / "dim.db"
    proc = qvl("ingest", corpus["root"], "--to", f"milvus:{db}", "--model", tiny_embedding_path, "--dim", dim,
               "--state", tmp_path / "s", "--dead-letter", tmp_path / "d", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc)
    assert f"--dim {dim}" in line and "64" in line and "128" in line, line  # the tiny model's full dim is 128
    assert not db.exists() and not (tmp_path / "d").exists()
    assert proc.stdout == ""

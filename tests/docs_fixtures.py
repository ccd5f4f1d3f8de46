"""The fixtures and the page test of the docs' code blocks (issue 23), shared by two test files.

tests/test_docs_blocks.py and tests/test_docs_blocks_more.py each run half of the pages
(:data:`MORE`), so the two pytest workers share them. How a page is run: see
:mod:`tests.docs_harness`.
"""
from __future__ import annotations

import os
import pathlib

import pytest

from connectors.localdb.weaviate import cache_dir as weaviate_cache_dir
from tests.conftest import skip_or_fail
from tests.connectors.postgres_server import start_embedded
from tests.docs_harness import (PAGES, REPO, DocsError, PageRun, build_hub_cache, parse_page, port_locks,
                                 start_warm_qvl, write_reader_files)

STEPS = {page: parse_page(page) for page in PAGES}
RUN_PAGES = [p for p, steps in STEPS.items() if any(s.kind in ("python", "bash") and not s.skip for s in steps)]
SKIPPED = [s for steps in STEPS.values() for s in steps if s.skip]
PG_DATABASES = ("shop", "media", "app")
#: The pages tests/test_docs_blocks_more.py runs (about half of the time); new pages go to the other file.
MORE = {"docs/weaviate.md", "docs/milvus.md", "docs/search.md", "docs/qdrant.md", "docs/faiss.md", "docs/testing.md",
        "docs/service.md"}


def pages(more: bool) -> list[pathlib.Path]:
    return [p for p in RUN_PAGES if (str(p.relative_to(REPO)) in MORE) == more]


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> pathlib.Path:
    return build_hub_cache(tmp_path_factory.mktemp("docs-hf-cache"))


@pytest.fixture(scope="session")
def docs_pg(tmp_path_factory):
    """A server of its own (never PG_TEST_DSN's: each page drops and creates the databases ``shop``,
    ``media`` and ``app``) with the docs' role ``app``."""
    import psycopg

    try:
        server = start_embedded(tmp_path_factory.mktemp("docs-postgres"))
    except Exception as exc:  # noqa: BLE001 - reported through skip_or_fail
        skip_or_fail(f"cannot start PostgreSQL with pgvector: {exc}")
        raise
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE ROLE app LOGIN SUPERUSER")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def warm_qvl(tmp_path_factory, hub_cache):
    """PATH entry and socket of the session's warm ``qvl`` (see tests/docs_zygote.py)."""
    folder = tmp_path_factory.mktemp("docs-qvl")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "HF_"))}
    env.update(hub_env(hub_cache))
    proc, bin_dir = start_warm_qvl(folder, env)
    yield bin_dir, folder / "qvl.sock"
    proc.terminate()
    proc.wait(30)


def hub_env(hub_cache: pathlib.Path) -> dict[str, str]:
    return {"HF_HOME": str(hub_cache.parent / "hf-home"), "HF_HUB_CACHE": str(hub_cache), "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "QVL_CPU_DTYPE": os.environ.get("QVL_CPU_DTYPE", "float32")}


def fresh_databases(server) -> None:
    import psycopg

    with psycopg.connect(server.dsn, autocommit=True) as conn:
        for name in PG_DATABASES:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name} OWNER app")
    for name in PG_DATABASES:
        with psycopg.connect(server.url().rsplit("/", 1)[0] + f"/{name}", autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")


def page_env(home: pathlib.Path, hub_cache: pathlib.Path, server, warm_qvl) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PG", "HF_", "QVL_"))}
    env.update(hub_env(hub_cache))
    env.update({
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),  # ingest state files stay in the test's folder
        "PATH": f"{warm_qvl[0]}{os.pathsep}{os.environ.get('PATH', '')}",
        "DOCS_QVL_SOCKET": str(warm_qvl[1]),
        "PGPORT": str(server.port),
        "PGUSER": "app",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def run_page(page: pathlib.Path, tmp_path: pathlib.Path, hub_cache: pathlib.Path, docs_pg, warm_qvl) -> None:
    """Run one page's steps in a fresh folder, with fresh databases; fail with the block that failed.

    A page that starts Weaviate (``qvl db weaviate``) needs its server binary: built here when
    missing (once per machine), and when it cannot be, the page skips with the reason (fails in CI).
    """
    if any("qvl db weaviate" in step.code for step in STEPS[page]):
        from connectors.localdb import LocalServerError
        from connectors.localdb.weaviate import ensure_binary

        try:
            ensure_binary()
        except LocalServerError as exc:
            skip_or_fail(f"{page.relative_to(REPO)} starts Weaviate, and its server cannot be built here: {exc}")
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    snapshot = next((hub_cache / "models--Qwen--Qwen3-VL-Embedding-2B" / "snapshots").iterdir())
    write_reader_files(work, checkpoint=snapshot)
    for name in ("photos", "reports", "talks"):
        (home / name).symlink_to(work / name)
    (home / "Pictures").symlink_to(work / "photos")
    (home / ".cache" / "qvl").mkdir(parents=True)
    (home / ".cache" / "qvl" / "weaviate-bin").symlink_to(weaviate_cache_dir(), target_is_directory=True)
    fresh_databases(docs_pg)
    run = PageRun(work, page_env(home, hub_cache, docs_pg, warm_qvl))
    failure = None
    try:
        with port_locks(page):  # the servers a page starts on its documented ports are stopped inside
            try:
                run.run(STEPS[page])
            finally:
                run.close()
    except DocsError as exc:
        failure = str(exc)
    print("\n".join(f"{seconds:6.1f} s  {kind:15} {where}" for where, kind, seconds in run.timings))
    if failure:
        pytest.fail(failure, pytrace=False)

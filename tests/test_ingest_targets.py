"""qvl ingest and qvl search into PostgreSQL (pgvector) and Weaviate targets.

The memory store and Milvus Lite are covered in ``test_ingest.py``; this runs the same
folder, with its bad files, into the other two real databases.
"""
from __future__ import annotations

import json

import pytest

from tests.connectors.postgres_server import pg_dsn, pg_server  # noqa: F401 - session fixtures
from tests.test_ingest import make_folder, run, summary_of


@pytest.fixture(params=["postgres", "weaviate"])
def target(request, tmp_path):
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        yield dsn, "ingest_target"
        import connectors

        with connectors.connect(dsn, collection="ingest_target") as store:
            store.drop()
    else:
        from tests.connectors.backend_weaviate import drop_collection, test_server

        server = test_server()
        drop_collection(server, "IngestTarget")
        yield server.target, "IngestTarget"
        drop_collection(server, "IngestTarget")


def test_folder_into_target_rerun_and_search(target, tmp_path, capsys, tiny_embedding_path):
    url, collection = target
    layout = make_folder(tmp_path / "corpus")
    common = ["--to", url, "--collection", collection, "--model", tiny_embedding_path, "--dim", "64",
              "--dead-letter", tmp_path / "dead.jsonl"]
    code, out, _ = run(capsys, "ingest", tmp_path / "corpus", *common, "--state", tmp_path / "a.state")
    assert code == 1, out
    assert summary_of(out) == dict(read=11, embedded=6, written=6, skipped=0, failed=5)
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert sorted(d["location"] for d in dead) == sorted(layout["bad"])
    assert all(d["reason"] for d in dead)
    # A fresh state file: the ids are found in the database itself.
    code, out, _ = run(capsys, "ingest", tmp_path / "corpus", *common, "--state", tmp_path / "b.state")
    assert summary_of(out) == dict(read=11, embedded=0, written=0, skipped=6, failed=5)
    code, out, err = run(capsys, "search", "a cat", "--in", url, "--collection", collection,
                       "--model", tiny_embedding_path, "--json", "-k", "3")
    assert code == 0, err
    hits = json.loads(out)["hits"]
    assert len(hits) == 3 and all(h["score"] is not None for h in hits)

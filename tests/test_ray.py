"""Distributed ingest on a real local Ray (``ray.init(num_cpus=2)``, once per session; no GPU).

One end-to-end test per database: a folder and a Parquet file, both with bad rows, go through
``read_source`` -> ``EmbedBatches`` (an actor pool) -> ``StoreSink`` into Milvus Lite,
Postgres and Weaviate, and what is stored equals a single-process :func:`connectors.ingest.ingest`
of the same data (same ids, cosine >= 0.9999, same fields); every bad row is in the report and
the dead letters exactly once. Milvus Lite also re-runs the job (nothing is added); on Postgres
one embedding actor dies mid-job (Ray restarts it and retries its batch) and nothing is lost or
duplicated. One subprocess runs ``qvl ingest --engine ray`` against the same cluster.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import skip_or_fail
from tests.connectors.postgres_server import pg_dsn, pg_server  # noqa: F401 - session fixtures
from tests.test_ingest import ROOT, dead_letters, make_folder, make_table_rows, summary_of, write_table

DIM = 64


@pytest.fixture(scope="session")
def ray_cluster():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        skip_or_fail("ray[data] is not installed (the 'ray' extra)")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING",
             configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, embedder):
    """The folder and the Parquet file, and a single-process ingest of both into a memory store."""
    from connectors.ingest import Columns, ingest, open_source
    from connectors.memory import MemoryStore

    base = tmp_path_factory.mktemp("ray-corpus")
    layout = make_folder(base / "folder")
    write_table(base / "items.parquet", make_table_rows(base))
    sources = [open_source(base / "folder"),
               open_source(base / "items.parquet", columns=Columns(id="sku", text="title", image="picture",
                                                                  meta=("price", "color")))]
    reference = MemoryStore(dim=DIM, collection="reference")
    reference.create(exist_ok=True)
    for i, source in enumerate(sources):
        summary = ingest(source.rows(), reference, embedder, dim=DIM, dead_letter=base / f"ref{i}.dead")
        assert summary.written > 0 and summary.failed > 0
    dead = dead_letters(base / "ref0.dead") + dead_letters(base / "ref1.dead")
    bad = set(layout["bad"]) | {"items.parquet:row 5", "items.parquet:row 6"}
    assert {d["location"] for d in dead} == bad
    return {"base": base, "sources": sources, "reference": _stored(reference), "dead": dead}


def _stored(store: Any) -> dict[str, tuple[np.ndarray, dict]]:
    out = {}
    for rows, _ in store.scan(page_size=100):
        for r in rows:
            out[r.id] = (np.asarray(r.vector, dtype=np.float32), r.fields)
    return out


def _dataset(corpus: dict, model: str, sink: Any, *, embed_class: Any = None, batch_size: int = 4,
             **kwargs: Any) -> Any:
    import ray.data

    from connectors.ray import EmbedBatches, read_source

    ds = read_source(corpus["sources"][0]).union(read_source(corpus["sources"][1]))
    return ds.map_batches(embed_class or EmbedBatches, batch_size=batch_size,
                          fn_constructor_kwargs={"model": model, "dim": DIM, "store": sink.store,
                                                 **kwargs},
                          compute=ray.data.ActorPoolStrategy(size=1))


def _check_same_as_reference(store: Any, corpus: dict) -> None:
    stored, reference = _stored(store), corpus["reference"]
    assert sorted(stored) == sorted(reference)
    for rid, (vec, fields) in stored.items():
        ref_vec, ref_fields = reference[rid]
        cos = float(vec @ ref_vec / (np.linalg.norm(vec) * np.linalg.norm(ref_vec)))
        assert cos >= 0.9999, (rid, cos)
        for key in ("text", "media", "metadata"):
            assert (fields.get(key) or None) == (ref_fields.get(key) or None), (rid, key)


def _check_report(report: Any, dead_file: Path, corpus: dict) -> None:
    n_bad, n_good = len(corpus["dead"]), len(corpus["reference"])
    assert (report.read, report.written, report.failed) == (n_good + n_bad, n_good, n_bad)
    assert sorted(report.written_ids) == sorted(corpus["reference"])  # each id once: nothing duplicated
    dead = dead_letters(dead_file)
    key = lambda d: (d["location"], d["stage"], d["id"])  # noqa: E731 - a qvl serve words its reasons its own way
    assert sorted(map(key, dead)) == sorted(map(key, corpus["dead"]))  # every bad row exactly once
    assert all(d["reason"] for d in dead)
    assert sorted(f.location for f in report.failures) == sorted(d["location"] for d in dead)


# ============================================================================ one test per database
def test_milvus_lite_equals_single_process_then_cli_rerun_adds_nothing(ray_cluster, corpus, tmp_path,
                                                                        tiny_embedding_path):
    """Milvus Lite (one process may open the file: one actor owns it and every task calls it); then
    ``qvl ingest --engine ray`` in a subprocess, on the same cluster, runs the folder again: nothing new."""
    import connectors
    from connectors.ray import StoreSink

    target = f"milvus:{tmp_path / 'ray.db'}"
    sink = StoreSink(target, collection="photos", dim=DIM, dead_letter=tmp_path / "dead.jsonl")
    _dataset(corpus, tiny_embedding_path, sink).write_datasink(sink)
    _check_report(sink.report, tmp_path / "dead.jsonl", corpus)

    qvl = [shutil.which("qvl")] if shutil.which("qvl") else [sys.executable, "-m", "connectors.cli"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([*qvl, "ingest", str(corpus["base"] / "folder"), "--to", target, "--collection", "photos",
                           "--model", tiny_embedding_path, "--dim", str(DIM), "--engine", "ray", "--address",
                           ray_cluster.get_runtime_context().gcs_address, "--no-progress", "--dead-letter",
                           str(tmp_path / "again.jsonl")], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]  # bad rows: exit code 1, as qvl ingest
    assert summary_of(proc.stdout) == dict(read=11, embedded=0, written=0, skipped=6, failed=5)
    assert f"dead letters: {tmp_path / 'again.jsonl'} (5 rows" in proc.stdout
    assert len(dead_letters(tmp_path / "again.jsonl")) == 5
    with connectors.connect(target, collection="photos", dim=DIM) as store:
        assert store.count() == len(corpus["reference"])
        _check_same_as_reference(store, corpus)


class CrashingEmbedBatches:
    """EmbedBatches whose first incarnation dies (os._exit) in its third batch; Ray restarts it."""

    def __init__(self, *, marker: str, **kwargs: Any) -> None:
        from connectors.ray import EmbedBatches

        self.inner = EmbedBatches(**kwargs)
        self.marker = Path(marker)
        self.calls = 0

    def __call__(self, batch: Any) -> Any:
        self.calls += 1
        if self.calls == 3 and not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        return self.inner(batch)


def test_postgres_equals_single_process_with_an_actor_killed_mid_job(ray_cluster, corpus, tmp_path, pg_dsn,
                                                                     tiny_embedding_path):
    """Postgres (COPY from each write task): an embedding actor dies mid-job and nothing is lost or doubled."""
    import ray.cloudpickle

    import connectors
    from connectors.ray import StoreSink

    marker = tmp_path / "crashed"
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import the tests
    sink = StoreSink(pg_dsn, collection="ray_ingest", dim=DIM, dead_letter=tmp_path / "dead.jsonl")
    try:
        ds = _dataset(corpus, tiny_embedding_path, sink, embed_class=CrashingEmbedBatches, batch_size=2,
                      marker=str(marker))
        ds.write_datasink(sink)
        assert marker.exists(), "the actor did not crash"
        _check_report(sink.report, tmp_path / "dead.jsonl", corpus)
        with connectors.connect(pg_dsn, collection="ray_ingest", dim=DIM) as store:
            assert store.count() == len(corpus["reference"])
            _check_same_as_reference(store, corpus)
    finally:
        ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        with connectors.connect(pg_dsn, collection="ray_ingest", dim=DIM) as store:
            store.drop()


def test_weaviate_through_a_qvl_serve_equals_single_process(ray_cluster, corpus, tmp_path, tiny_embedding_path,
                                                            tiny_reranker_path):
    """Weaviate (the client's batcher from each write task), the actors calling a ``qvl serve``
    (``model="http://..."``) instead of loading the model."""
    import connectors
    from connectors.ray import StoreSink
    from tests.connectors.backend_weaviate import drop_collection, test_server
    from tests.connectors.weaviate_server import SHARED_SERVICE, ServerUnavailable

    server = test_server()
    try:  # the session's service (the Weaviate tests start the same one, with these checkpoints)
        service = SHARED_SERVICE.get(server, model=tiny_embedding_path, reranker=tiny_reranker_path,
                                     default_dim=128)
    except ServerUnavailable as exc:
        skip_or_fail(f"qvl serve did not start: {exc}")
    drop_collection(server, "RayIngest")
    try:
        sink = StoreSink(server.target, collection="RayIngest", dim=DIM, dead_letter=tmp_path / "dead.jsonl")
        _dataset(corpus, service.url, sink).write_datasink(sink)
        _check_report(sink.report, tmp_path / "dead.jsonl", corpus)
        with connectors.connect(server.target, collection="RayIngest", dim=DIM) as store:
            _check_same_as_reference(store, corpus)
    finally:
        drop_collection(server, "RayIngest")


def test_ctrl_c_stops_the_job_and_what_landed_stays(ray_cluster, tmp_path, pg_dsn, tiny_embedding_path):
    """SIGINT to ``qvl ingest --engine ray`` once rows have landed: exit 130 in seconds, the rows stay."""
    import connectors

    n = 6000
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "text": f"row {i}"}) + "\n" for i in range(n)))
    qvl = [shutil.which("qvl")] if shutil.which("qvl") else [sys.executable, "-m", "connectors.cli"]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [*qvl, "ingest", str(src), "--to", pg_dsn, "--collection", "ray_interrupted", "--model",
           tiny_embedding_path, "--dim", str(DIM), "--engine", "ray", "--address",
           ray_cluster.get_runtime_context().gcs_address, "--no-progress", "--batch-size", "8"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    store = connectors.connect(pg_dsn, collection="ray_interrupted", dim=DIM)
    try:
        landed = 0
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None and not landed:
            time.sleep(0.05)
            try:
                landed = store.count()
            except Exception:  # noqa: BLE001 - not created yet
                landed = 0
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            pytest.skip("the ingest finished before it could be interrupted")
        assert proc.returncode == 130, err[-3000:]
        assert time.monotonic() - sent < 30  # the job stops; it does not run to the end
        assert "interrupted: the rows that landed stay" in err
        after = store.count()
        assert landed <= after < n  # what landed stays; the rest did not
        assert store.existing_ids([f"r{i}" for i in range(n)]) and len(store.existing_ids(
            [f"r{i}" for i in range(n)])) == after  # every stored row is one of the source's, once
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        store.drop()
        store.close()


def test_without_ray_connectors_stays_light_and_the_error_names_the_extra(tmp_path):
    """A fresh interpreter in which Ray cannot be imported (as without the ``ray`` extra)."""
    code = textwrap.dedent(f"""
        import sys

        class _NoRay:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "ray":
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
                return None

        sys.meta_path.insert(0, _NoRay())
        import connectors, connectors.cli
        from connectors.cli import main
        assert "ray" not in sys.modules
        try:
            import connectors.ray
        except ImportError as exc:
            print("IMPORT:", exc)
        code = main(["ingest", {str(tmp_path)!r}, "--engine", "ray", "--to", "memory:", "--no-progress"])
        print("EXIT:", code)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'pip install "qwen3-vl-search[ray]"' in proc.stdout.split("IMPORT:")[1].splitlines()[0]
    assert "EXIT: 2" in proc.stdout
    assert 'qvl: Distributed ingest on Ray Data needs the Python package \'ray[data]\'' in proc.stderr

"""``qvl eval`` and :mod:`connectors.eval`: metrics, the grid, the report, ``--compare``.

The tiny random checkpoint ranks meaninglessly, so the metric and grid machinery is proven
on precomputed vectors whose answer is known: each query's relevant document agrees with it
in all 128 dims, its distractors only in the first 64 (the MRL prefix), so the truncated dim
cannot tell them apart and the full one can. The end-to-end run proves the plumbing with the
tiny checkpoint on generated images, through the real ``qvl`` on Milvus Lite (a new process)
and the same command line in-process on Postgres and Weaviate meanwhile.
"""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_image, skip_or_fail
from tests.connectors.postgres_server import pg_dsn, pg_server  # noqa: F401 - session fixtures
from tests.test_cli_e2e import clean_env, qvl_path

try:
    import matplotlib  # noqa: F401
    import pytrec_eval  # noqa: F401

    MISSING = None
except ImportError as exc:  # the `eval` extra
    MISSING = str(exc)


@pytest.fixture(autouse=True)
def _eval_extra() -> None:
    if MISSING:
        skip_or_fail(f"qvl eval needs the eval extra (pip install '.[eval]'): {MISSING}")

DIM = 128


def planted(queries: int = 8, distractors: int = 12, seed: int = 0):
    """A set of precomputed vectors: per query one relevant document (the query plus a little noise in
    every dim) and ``distractors`` that match it in the first 64 dims only."""
    from connectors.eval import Dataset

    rng = np.random.default_rng(seed)
    corpus, qs, qrels = [], [], {}
    for j in range(queries):
        base = rng.standard_normal(DIM)
        qs.append({"id": f"q{j}", "vector": base.tolist()})
        corpus.append({"id": f"rel{j}", "vector": (base + 0.05 * rng.standard_normal(DIM)).tolist()})
        for i in range(distractors):
            v = np.concatenate([base[:64] + 0.05 * rng.standard_normal(64), rng.standard_normal(64)])
            corpus.append({"id": f"dis{j}_{i}", "vector": v.tolist()})
        qrels[f"q{j}"] = {f"rel{j}": 1}
    return Dataset(corpus, qs, qrels, name="planted")


def test_metrics_match_hand_computed_values():
    from connectors.eval.metrics import mean_metrics, per_query_metrics

    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}, "q3": {"d": 1}}
    ranked = {"q1": ["x", "a", "y"], "q2": ["b", "z", "w"], "q3": []}
    got = per_query_metrics(qrels, ranked, 3)
    assert got["q1"] == pytest.approx({"recall@3": 1.0, "mrr": 0.5, "top1": 0.0, "ndcg@10": 1 / math.log2(3)})
    assert got["q2"] == pytest.approx({"recall@3": 0.5, "mrr": 1.0, "top1": 1.0, "ndcg@10": 1 / (1 + 1 / math.log2(3))})
    assert got["q3"] == {"recall@3": 0.0, "mrr": 0.0, "top1": 0.0, "ndcg@10": 0.0}  # nothing retrieved
    assert mean_metrics(got)["recall@3"] == pytest.approx(0.5)
    # the order given is kept (trec_eval would break ties by id): the relevant document at rank 2 of 2
    assert per_query_metrics({"q": {"a": 1}}, {"q": ["z", "a"]}, 2)["q"]["mrr"] == 0.5


def test_grid_on_planted_vectors_finds_the_full_dim_and_recommends_the_smallest(tmp_path):
    from connectors.eval import evaluate, recommend, write_html

    data = planted()
    report = evaluate(data, "memory:", dims=[128, 64], precisions=["float32", "int8", "binary"], k=3)
    labels = {r.label for r in report.results}
    assert labels == {f"{d} {p} {i}" for d in (128, 64) for p in ("float32", "int8", "binary")
                      for i in ("exact", "ann")}
    by = {r.label: r for r in report.results}

    # hand-computed: rank of each query's relevant document by cosine over the 64-dim prefix
    vecs = np.asarray([d["vector"] for d in data.corpus])[:, :64]
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = [d["id"] for d in data.corpus]
    for q in data.queries:
        qv = np.asarray(q["vector"])[:64]
        order = [ids[i] for i in np.argsort(-(vecs @ (qv / np.linalg.norm(qv))))]
        rank = order.index("rel" + q["id"][1:])
        got = by["64 float32 exact"].per_query[q["id"]]
        assert got["recall@3"] == (1.0 if rank < 3 else 0.0)
        assert got["mrr"] == pytest.approx(1 / (rank + 1) if rank < 3 else 0.0)
        assert got["top1"] == (1.0 if rank == 0 else 0.0)
    for precision in ("float32", "int8", "binary"):
        assert by[f"128 {precision} exact"].metrics["recall@3"] == 1.0
        assert by[f"128 {precision} ann"].metrics["recall@3"] == 1.0
    assert by["64 float32 exact"].metrics["recall@3"] < 0.7  # the prefix cannot tell them apart
    assert by["128 binary exact"].bytes_per_vector == 16 and by["128 float32 ann"].bytes_per_vector == 512

    # the exact runs rank as connectors.quantization's reference does (ties included)
    from connectors.eval.grid import ExactSearch
    from connectors.quantization import reference_search

    full = np.asarray([d["vector"] for d in data.corpus], dtype=np.float32)
    full /= np.linalg.norm(full, axis=1, keepdims=True)
    for precision in ("float32", "float16", "int8", "binary"):
        search = ExactSearch(full, precision)
        for q in data.queries:
            want, _ = reference_search(np.asarray(q["vector"]), full, 5, precision)
            assert search.top(np.asarray(q["vector"]), 5).tolist() == want.tolist()

    rec = report.recommended
    assert rec.config.dim == 128 and rec.config.precision == "binary" and rec.config.rerank == 0
    # a looser tolerance lets a smaller configuration in; none within it: the best itself
    loose = recommend(report.results, "recall@3", 1.0)
    assert loose.bytes_per_vector == 8
    assert report.best.metrics["recall@3"] == 1.0

    paths = write_html(report, tmp_path / "report.html")
    page = paths[0].read_text()
    assert "recommended: 128 binary" in page and paths[1].name in page and paths[2].name in page
    for png in paths[1:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_compare_two_reports_query_by_query(tmp_path):
    from connectors.eval import evaluate

    data = planted(seed=1)
    a = evaluate(data, dims=[64], precisions=["float32"], ann=False, k=3)
    b = evaluate(data, dims=[128], precisions=["float32"], ann=False, k=3)
    a.save_json(tmp_path / "a.json")
    b.save_json(tmp_path / "b.json")
    proc = subprocess.run([qvl_path(), "eval", "--compare", tmp_path / "a.json", tmp_path / "b.json", "--metric",
                           "mrr", "--json", tmp_path / "c.json"], capture_output=True, text=True, env=clean_env(),
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads((tmp_path / "c.json").read_text())
    assert out["config"] == "64 float32 exact (A) against 128 float32 exact (B)"  # no shared config: each's best
    mrr_a = a.results[0].per_query
    improved = sorted(q for q, m in mrr_a.items() if m["mrr"] < 1.0)
    assert improved and sorted(x["query"] for x in out["better"]) == improved
    assert out["worse"] == [] and out["unchanged"] == len(mrr_a) - len(improved)
    assert out["delta"] == pytest.approx(1.0 - a.results[0].metrics["mrr"])
    largest = max(improved, key=lambda q: 1.0 - mrr_a[q]["mrr"])
    assert out["better"][0]["query"] == largest  # most improved first
    assert f"{len(improved)} better, 0 worse" in proc.stdout


def _image_set(root: Path) -> Path:
    """Six generated images (with a caption each) and three image queries, each answered by its own image."""
    from connectors.eval import write_dataset

    (root / "img").mkdir(parents=True)
    corpus = []
    for i in range(6):
        make_image(64 + 8 * i, 56, seed=100 + i).save(root / "img" / f"d{i}.png")
        corpus.append({"id": f"d{i}", "image": f"img/d{i}.png", "text": f"shape {i}", "color": "red"})
    queries = [{"id": f"q{j}", "image": f"img/d{j}.png"} for j in range(3)]
    return write_dataset(root, corpus, queries, {f"q{j}": {f"d{j}": 1} for j in range(3)})


def test_cli_end_to_end_on_milvus_postgres_and_weaviate(tmp_path, tiny_embedding_path, tiny_reranker_path, pg_dsn,
                                                        capsys):
    """``qvl eval`` with the tiny checkpoint, a 2x2 grid (dims x precisions) on each database: on Milvus
    Lite as a new process of the console script (with reranking and the HTML report), on Postgres and
    Weaviate through the same command line in this process meanwhile (a model load per process is
    most of the cost)."""
    import connectors
    from connectors.cli import main
    from embedder.errors import NotFoundError
    from tests.connectors.backend_weaviate import test_server

    weaviate = test_server()
    dataset = _image_set(tmp_path / "set")
    grid = ["--model", tiny_embedding_path, "--dims", "128,64", "--precisions", "float32,int8", "-k", "3"]
    milvus = subprocess.Popen([qvl_path(), "eval", str(dataset), "--in", f"milvus:{tmp_path / 'eval.db'}", *grid,
                               "--rerank", "--reranker", tiny_reranker_path, "--candidates", "5",
                               "--html", str(tmp_path / "milvus.html"), "--json", str(tmp_path / "milvus.json")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(),
                              cwd=tmp_path, stdin=subprocess.DEVNULL)
    outputs = {}
    try:
        for name, target, prefix, ef in (("postgres", pg_dsn, "eval_e2e", "20"),
                                         ("weaviate", weaviate.target, "Eval_e2e", "20,40")):  # Weaviate: a collection setting
            capsys.readouterr()
            code = main(["eval", str(dataset), "--in", target, "--collection", prefix, *grid, "--ef", ef,
                         "--json", str(tmp_path / f"{name}.json")])
            out, err = capsys.readouterr()
            assert code == 0, f"{name}: {err}"
            outputs[name] = (out, err)
        outputs["milvus"] = milvus.communicate(timeout=300)
    finally:
        if milvus.poll() is None:
            milvus.kill()
            milvus.communicate()
    assert milvus.returncode == 0, outputs["milvus"][1]
    for name, (out, err) in outputs.items():
        assert "Traceback" not in err and "recommended:" in out
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert report["documents"] == 6 and report["queries"] == 3 and report["full_dim"] == 128
        labels = {r["label"] for r in report["results"]}
        for dim in (128, 64):
            for precision in ("float32", "int8"):
                assert f"{dim} {precision} exact" in labels
                # the database's index for each pair, or a note saying the store cannot honour the precision
                ann = {"milvus": [""], "postgres": [" ef=20"], "weaviate": [" ef=20", " ef=40"]}[name]
                assert (all(f"{dim} {precision} ann{ef}" in labels for ef in ann)
                        or any(n.startswith(f"{dim} {precision} ann: left out") for n in report["notes"])), name
        assert any(label.startswith("128 float32 ann") for label in labels) and report["recommended"] in labels
        assert not [n for n in report["notes"] if "failed" in n], report["notes"]
        for r in report["results"]:
            assert set(r["ranked"]) == {"q0", "q1", "q2"} and all(len(v) == 3 for v in r["ranked"].values())
            assert r["search_ms"]["p50"] > 0 and r["bytes_per_vector"] == r["config"]["dim"] * (
                4 if r["config"]["precision"] == "float32" else 1)
    report = json.loads((tmp_path / "milvus.json").read_text())
    reranked = [r for r in report["results"] if r["config"]["rerank"] == 5]
    assert len(reranked) == len(report["results"]) // 2 and all(r["rerank_ms"]["p50"] > 0 for r in reranked)
    plain = {r["label"]: r for r in report["results"]}
    for r in reranked:  # the same search, plus the reranker's time
        search = plain[r["label"].replace(" +rerank 5", "")]["search_ms"]
        assert r["search_ms"] == search and r["total_ms"]["p50"] > search["p50"]
    page = (tmp_path / "milvus.html").read_text()
    assert "milvus-recall-bytes.png" in page and (tmp_path / "milvus-recall-latency.png").stat().st_size > 5000
    # the measurement's collections are dropped afterwards
    with connectors.connect(pg_dsn, collection="eval_e2e_64_float32", dim=64) as store:
        with pytest.raises(NotFoundError):
            store.count()

"""What the contract suite does not cover on the Faiss store: several processes (one writer, readers
that follow it), crash safety (an index file behind or ahead of SQLite), HNSW and IVF-PQ, the
pre-filter and the SQL escape hatch. Every process here is a real one (``subprocess``)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import connectors
from connectors.faiss import open_store
from embedder.errors import InputError, SchemaMismatchError, UnavailableError

ROOT = Path(__file__).resolve().parents[2]
DIM = 64


def vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).normal(size=(n, DIM)).astype(np.float32)


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Vectors around 40 centres, as embeddings are (random Gaussian vectors have no structure for IVF or PQ)."""
    rng = np.random.RandomState(seed)
    centres = np.random.RandomState(99).normal(size=(40, DIM))
    return (centres[rng.randint(0, 40, n)] + 0.5 * rng.normal(size=(n, DIM))).astype(np.float32)


def rows(vecs: np.ndarray, start: int = 0, **extra) -> list[dict]:
    return [{"id": f"r{start + i}", "vector": v, "text": f"row {start + i}", "color": "rgb"[(start + i) % 3],
             "metadata": {"i": start + i}, **extra} for i, v in enumerate(vecs)]


def oracle(all_rows: list[dict]):
    mem = connectors.connect("memory:", dim=DIM)
    mem.create(fields={"color": str})
    assert mem.upsert(all_rows).ok
    return mem


def child(code: str) -> subprocess.Popen:
    """A Python process running ``code`` (with this repository importable), talking over stdin/stdout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    prelude = "import sys, json, numpy as np\nfrom connectors.faiss import open_store\n"
    return subprocess.Popen([sys.executable, "-c", prelude + textwrap.dedent(code)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def line(proc: subprocess.Popen) -> str:
    out = proc.stdout.readline().strip()  # type: ignore[union-attr]
    assert out, proc.stderr.read()  # type: ignore[union-attr]
    return out


WRITER = """
    rng = np.random.RandomState(0)
    vecs = rng.normal(size=(80, 64)).astype(np.float32)
    rows = [{"id": f"r{i}", "vector": v, "text": f"row {i}", "color": "rgb"[i % 3], "metadata": {"i": i}}
            for i, v in enumerate(vecs)]
    store = open_store(TARGET, collection="c", dim=64)
    store.create(fields={"color": str}, exist_ok=True)
    assert store.upsert(rows[:50]).ok
    print("first", flush=True)
    sys.stdin.readline()
    assert store.upsert(rows[50:]).ok
    store.save()  # a new snapshot (the reader's is removed): the reader loads it, then replays the delete
    store.delete(["r0", "r1"])
    print("second", flush=True)
    sys.stdin.readline()
"""


def test_one_writer_process_at_a_time_and_readers_follow_it(tmp_path):
    target = f"faiss:{tmp_path / 'idx'}"
    writer = child(f"TARGET = {target!r}\n" + textwrap.dedent(WRITER))
    try:
        assert line(writer) == "first"
        # a reader in this process sees what the writer committed
        with open_store(target, collection="c") as reader:
            assert reader.count() == 50
            q = vectors(80)[7]
            assert reader.search(q, k=1)[0].id == "r7"
            # a second writer (this process) is refused in one line, and nothing is written
            with pytest.raises(UnavailableError) as err:
                reader.upsert([{"id": "x", "vector": q}])
            assert "being written by another process" in str(err.value) and f"pid {writer.pid}" in str(err.value)
            assert "\n" not in str(err.value)
            with pytest.raises(UnavailableError):
                reader.delete(["r3"])
            # a second writer process too
            other = child(f"""
                s = open_store({target!r}, collection="c")
                try:
                    s.upsert([{{"id": "y", "vector": np.ones(64)}}])
                except Exception as exc:
                    print(type(exc).__name__, exc, flush=True)
            """)
            out, _ = other.communicate(timeout=120)
            assert out.startswith("UnavailableError") and "one writer at a time" in out
            # the writer goes on; the reader sees the new generation at its next call
            writer.stdin.write("\n")  # type: ignore[union-attr]
            writer.stdin.flush()  # type: ignore[union-attr]
            assert line(writer) == "second"
            assert reader.count() == 78
            expected = oracle(rows(vectors(80))[2:]).search(q, k=10)
            assert [h.id for h in reader.search(q, k=10)] == [h.id for h in expected]
            assert reader.existing_ids(["r0", "r1", "r79"]) == {"r79"}
        writer.stdin.write("\n")  # type: ignore[union-attr]
        writer.stdin.flush()  # type: ignore[union-attr]
        assert writer.wait(timeout=120) == 0, writer.stderr.read()  # type: ignore[union-attr]
    finally:
        writer.kill()
    # the writer is gone (its lock with it): this process may write now
    with open_store(target, collection="c") as store:
        assert store.upsert([{"id": "z", "vector": np.ones(DIM)}]).ok and store.count() == 79


def test_handles_in_one_process_share_the_writer_lock(tmp_path):
    target = f"faiss:{tmp_path}"
    with open_store(target, collection="c", dim=DIM) as a, open_store(target, collection="c", dim=DIM) as b:
        a.create()
        assert a.upsert(rows(vectors(5))).ok
        assert b.upsert(rows(vectors(5, seed=1), start=5)).ok  # both write: one process, one lock
        assert a.count() == b.count() == 10
        assert a.search(vectors(5, seed=1)[2], k=1)[0].id == "r7"


def test_a_crash_before_the_snapshot_loses_nothing(tmp_path):
    """A process writes, saves a snapshot, writes and deletes more, and dies without closing:
    the next process replays what the snapshot lacks from SQLite."""
    target = f"faiss:{tmp_path}"
    proc = child(f"""
        import os
        rng = np.random.RandomState(0)
        vecs = rng.normal(size=(120, 64)).astype(np.float32)
        rows = [{{"id": f"r{{i}}", "vector": v, "text": f"row {{i}}", "color": "rgb"[i % 3], "metadata": {{"i": i}}}}
                for i, v in enumerate(vecs)]
        store = open_store({target!r}, collection="c", dim=64)
        store.create(fields={{"color": str}})
        assert store.upsert(rows[:100]).ok
        store.save()
        assert store.upsert(rows[100:]).ok
        assert store.upsert([dict(rows[5], text="replaced")]).ok
        store.delete(["r10", "r11"])
        os._exit(0)  # no close: the snapshot holds the first 100 rows only
    """)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()  # type: ignore[union-attr]
    files = sorted(p.name for p in tmp_path.glob("c.*.faiss"))
    assert len(files) == 1
    all_rows = [r for r in rows(vectors(120)) if r["id"] not in ("r10", "r11")]
    all_rows[5] = dict(all_rows[5], text="replaced")
    mem = oracle(all_rows)
    with open_store(target, collection="c") as store:
        assert store.count() == 118
        for q in vectors(5, seed=3):
            assert [h.id for h in store.search(q, k=10)] == [h.id for h in mem.search(q, k=10)]
        assert store.search(vectors(120)[5], k=1)[0].fields["text"] == "replaced"
        assert store.search(vectors(120)[10], k=1)[0].id != "r10"
        assert store.upsert([{"id": "new", "vector": np.ones(DIM)}]).ok  # a writer: it saves at close
    assert sorted(p.name for p in tmp_path.glob("c.*.faiss")) != files


def test_a_writer_killed_at_any_moment_leaves_an_index_that_agrees_with_its_fields(tmp_path):
    """SIGKILL a process that writes, deletes and saves snapshots in a loop (so the kill lands in a
    transaction, a snapshot write or between them): the next open agrees with what SQLite holds."""
    import signal
    import time

    target = f"faiss:{tmp_path}"
    proc = child(f"""
        rng = np.random.RandomState(1)
        store = open_store({target!r}, collection="c", dim=64)
        store.create()
        for step in range(10_000):
            vecs = rng.normal(size=(300, 64)).astype(np.float32)
            assert store.upsert([{{"id": f"s{{step}}-{{i}}", "vector": v}} for i, v in enumerate(vecs)]).ok
            store.delete([f"s{{step - 1}}-{{i}}" for i in range(0, 300, 3)])
            store.save()
            print(step, flush=True)
    """)
    try:
        for _ in range(3):
            line(proc)
        time.sleep(0.05 + np.random.RandomState().rand() * 0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    with open_store(target, collection="c") as store:
        n = store.count()
        assert n > 0 and store.client.ntotal == n  # the index holds exactly the stored rows
        for q in vectors(5, seed=2):
            assert [h.id for h in store.search(q, k=10)] == [h.id for h in store.search(q, k=10, exact=True)]
        assert store.upsert([{"id": "after", "vector": np.ones(DIM)}]).ok  # the dead writer's lock is gone
    assert len(list(tmp_path.glob("c.*.faiss*"))) == 1  # stray files of the crash are removed


def test_an_index_file_ahead_of_sqlite_is_ignored(tmp_path):
    """A crash after the index file was renamed into place but before SQLite recorded it leaves a
    file of a generation SQLite never named: it is not read, and the next writer removes it."""
    target = f"faiss:{tmp_path}"
    with open_store(target, collection="c", dim=DIM) as store:
        store.create()
        assert store.upsert(rows(vectors(20))).ok
    [snapshot] = tmp_path.glob("c.*.faiss")
    gen = int(snapshot.name.split(".")[1])
    (tmp_path / f"c.{gen + 5}.faiss").write_bytes(b"not an index")  # a future generation, never committed
    with open_store(target, collection="c") as store:
        assert store.search(vectors(20)[3], k=1)[0].id == "r3"
        assert store.upsert(rows(vectors(2, seed=9), start=20)).ok
    assert not (tmp_path / f"c.{gen + 5}.faiss").exists()


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_lost_or_damaged_index_file_is_rebuilt_from_sqlite(tmp_path, damage):
    target = f"faiss:{tmp_path}"
    with open_store(target, collection="c", dim=DIM, index="hnsw") as store:
        store.create(fields={"color": str})
        assert store.upsert(rows(vectors(50))).ok
        store.delete(["r1"])
    [snapshot] = tmp_path.glob("c.*.faiss")
    if damage == "missing":
        snapshot.unlink()
    else:
        snapshot.write_bytes(b"garbage" * 100)
    mem = oracle([r for r in rows(vectors(50)) if r["id"] != "r1"])
    with open_store(target, collection="c") as store:
        for q in vectors(3, seed=5):
            assert [h.id for h in store.search(q, k=10)] == [h.id for h in mem.search(q, k=10)]
        store.save()
    assert len(list(tmp_path.glob("c.*.faiss"))) == 1


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_approximate_indexes_upsert_delete_and_recall(tmp_path, kind):
    n = 1500
    vecs = clustered(n, seed=4)
    all_rows = rows(vecs)
    opts = {"train_rows": 1000} if kind == "ivfpq" else {}
    with open_store(f"faiss:{tmp_path}", collection="c", dim=DIM, index=kind, **opts) as store:
        store.create(fields={"color": str})
        assert store.upsert(all_rows[:900]).ok
        assert store.trained is (kind == "hnsw")  # IVF-PQ: exact until train_rows rows
        assert store.upsert(all_rows[900:]).ok
        assert store.trained and store.index_kind == kind
        moved = clustered(100, seed=5)  # replace 100 rows' vectors, delete 200 rows
        assert store.upsert([dict(r, vector=v) for r, v in zip(all_rows[:100], moved)]).ok
        store.delete([r["id"] for r in all_rows[200:400]])
        final = [dict(r, vector=v) for r, v in zip(all_rows[:100], moved)] + all_rows[100:200] + all_rows[400:]
        assert store.count() == len(final) == 1300
        mem = oracle(final)
        recall = []
        for q in clustered(20, seed=6):
            got = store.search(q, k=10)
            want = mem.search(q, k=10)
            recall.append(len({h.id for h in got} & {h.id for h in want}) / 10)
            assert all(h.id not in {r["id"] for r in all_rows[200:400]} for h in got)
            exact = {h.id: h.score for h in want}
            assert all(h.score == pytest.approx(exact[h.id], abs=1e-3) for h in got if h.id in exact)
        assert np.mean(recall) >= 0.9, recall
        # exact=True is the brute force
        q = clustered(1, seed=7)[0]
        assert [h.id for h in store.search(q, k=10, exact=True)] == [h.id for h in mem.search(q, k=10)]
        # a narrow filter is searched exactly (pre-filtered), not missed by the graph or the lists
        few = [r["id"] for r in final[::97]]
        assert [h.id for h in store.search(q, k=50, filter={"text": {"$in": [f"row {i[1:]}" for i in few]}})] == \
            [h.id for h in mem.search(q, k=50, filter={"text": {"$in": [f"row {i[1:]}" for i in few]}})]
        # a wide one through the id selector: every hit matches, as many as asked
        hits = store.search(q, k=20, filter={"color": "r"})
        assert len(hits) == 20 and all(h.fields["color"] == "r" for h in hits)
    with open_store(f"faiss:{tmp_path}", collection="c") as again:  # reopened from its snapshot
        assert again.index_kind == kind and again.trained and again.count() == 1300
        assert [h.id for h in again.search(q, k=10, exact=True)] == [h.id for h in mem.search(q, k=10)]
    with pytest.raises(SchemaMismatchError, match=f"has a {kind} index, not flat"):
        open_store(f"faiss:{tmp_path}", collection="c", index="flat")


def test_hnsw_tombstones_are_rebuilt_away(tmp_path):
    with open_store(f"faiss:{tmp_path}", collection="c", dim=DIM, index="hnsw") as store:
        store.create()
        all_rows = rows(vectors(400, seed=8))
        assert store.upsert(all_rows).ok
        store.delete([r["id"] for r in all_rows[:80]])
        assert len(store._state.tomb) == 80  # deleted vectors stay in the graph, excluded from searches
        assert all(int(h.id[1:]) >= 80 for h in store.search(vectors(400, seed=8)[3], k=20))
        store.delete([r["id"] for r in all_rows[80:120]])  # a quarter of the graph: rebuilt
        assert store._state.tomb == set() and store.client.ntotal == 280 == store.count()


def test_the_sql_escape_hatch(tmp_path):
    with open_store(f"faiss:{tmp_path}", collection="c", dim=DIM) as store:
        store.create(fields={"color": str, "price": int})
        all_rows = [dict(r, price=i) for i, r in enumerate(rows(vectors(30, seed=2)))]
        assert store.upsert(all_rows).ok
        q = vectors(1, seed=3)[0]
        hits = store.search(q, k=30, filter="color = ? AND price >= ? AND json_extract(metadata, '$.i') < 25",
                            params=["r", 10])
        assert sorted(int(h.id[1:]) for h in hits) == [12, 15, 18, 21, 24]
        assert [h.id for h in hits] == [h.id for h in store.search(
            q, k=30, filter={"color": "r", "price": {"$gte": 10}, "i": {"$lt": 25}})]
        with pytest.raises(InputError, match="the SQL filter .* failed"):
            store.search(q, k=1, filter="no_such_column = 1")
        with pytest.raises(InputError, match="failed"):  # one condition, run read-only: it cannot write
            store.search(q, k=1, filter="1; DELETE FROM qvl_collections")
        assert store.count() == 30
        with pytest.raises(InputError, match="params= goes with an SQL filter"):
            store.search(q, k=1, filter={"color": "r"}, params=[1])
        with pytest.raises(InputError, match=r"unknown search option\(s\) \['nprobes'\]"):
            store.search(q, k=1, nprobes=3)


def test_bad_values_fail_their_rows_only(tmp_path):
    with open_store(f"faiss:{tmp_path}", collection="c", dim=DIM) as store:
        store.create(fields={"price": int, "flag": bool})
        v = vectors(5, seed=1)
        report = store.upsert([{"id": "ok", "vector": v[0], "price": 3, "flag": True},
                               {"id": "str", "vector": v[1], "price": "3"},
                               {"id": "boolint", "vector": v[2], "flag": 1},
                               {"id": "nan", "vector": v[3], "metadata": {"x": float("nan")}},
                               {"id": "surrogate", "vector": v[4], "text": "bad \udcff name"}])
        assert report.written == ["ok"]
        reasons = dict(report.failed)
        assert "field 'price' is int, got str" in reasons["str"]
        assert "field 'flag' is bool, got int" in reasons["boolint"]
        assert "NaN" in reasons["nan"] and "Unicode" in reasons["surrogate"]
        hit = store.search(v[0], k=1)[0]
        assert hit.fields["flag"] is True and hit.fields["price"] == 3


def test_targets_and_names(tmp_path):
    from connectors.faiss import parse_target

    assert parse_target("faiss:./x") == Path("x") and parse_target("faiss:///abs/x") == Path("/abs/x")
    with pytest.raises(InputError, match="names no folder"):
        parse_target("faiss:")
    with pytest.raises(InputError, match="collection name"):
        open_store(f"faiss:{tmp_path}", collection="../escape", dim=DIM)
    with pytest.raises(InputError, match="index must be one of"):
        open_store(f"faiss:{tmp_path}", collection="c", dim=DIM, index="lsh")
    store = open_store(f"faiss:{tmp_path / 'never'}", collection="c", dim=DIM)
    store.close()
    assert not (tmp_path / "never").exists()  # opening (or searching) creates nothing

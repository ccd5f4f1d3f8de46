"""End-to-end tests of ``qvl ingest`` / ``qvl search`` / ``qvl demo`` on the tiny checkpoint.

Most tests go through ``connectors.cli.main([...])`` against a shared in-memory store
(registered for the test under the ``shared:`` scheme so that it outlives one command),
and against Milvus Lite when pymilvus is installed. Fault injectors wrap a real store:
``blind:`` cannot look ids up (like a store without that API) and may raise on a given
write; ``flaky:`` raises ``ConnectionError`` on its first write.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from connectors.cli import main
from tests.conftest import make_image, skip_or_fail

ROOT = Path(__file__).resolve().parents[1]


# ============================================================================ store fixtures
class _Stores:
    """The stores of one test: real MemoryStores by name, and faults to inject on writes."""

    def __init__(self) -> None:
        self.stores: dict[str, Any] = {}
        self.spaces: dict[str, dict] = {}
        self.faults: dict[str, dict[int, BaseException]] = {}
        self.wrappers: dict[str, "_FaultyStore"] = {}


_ACTIVE: list[_Stores] = []  # the current test's stores (set by the fixture)


class _FaultyStore:
    """A real MemoryStore behind a fault injector; it cannot look ids up."""

    def __init__(self, inner: Any, faults: dict[int, BaseException]) -> None:
        self.inner = inner
        self.faults = faults
        self.calls = 0

    @property
    def dim(self) -> int:
        return self.inner.dim

    def __getattr__(self, name: str) -> Any:
        if name in ("existing_ids",):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def upsert(self, rows: Any, **kwargs: Any) -> Any:
        self._fault()
        return self.inner.upsert(rows, **kwargs)

    def write_rows(self, rows: Any, vectors: Any, **kwargs: Any) -> Any:
        self._fault()
        return self.inner.write_rows(rows, vectors, **kwargs)

    def _fault(self) -> None:
        self.calls += 1
        fault = self.faults.get(self.calls)
        if fault is not None:
            raise fault


def open_test_store(target: str, *, collection: str, embedder: Any = None, dim: int | None = None,
                    **_: Any) -> Any:
    """Registry factory for ``shared:NAME``, ``blind:NAME`` and ``flaky:NAME``."""
    from connectors.memory import MemoryStore

    stores = _ACTIVE[-1]
    scheme, name = target.split(":", 1)
    key = f"{name}/{collection}"
    # Each command opens its own store (and closes it) on a space that outlives it, as a database
    # would; the test looks at the data through a handle of its own.
    space = stores.spaces.setdefault(name, {})
    store = MemoryStore(embedder=embedder, dim=dim, collection=collection, space=space)
    if key not in stores.stores:
        stores.stores[key] = MemoryStore(dim=store.dim, collection=collection, space=space)
    if scheme == "shared":
        return store
    wrapper = _FaultyStore(store, stores.faults.get(target, {}))
    stores.wrappers[target] = wrapper
    return wrapper


@pytest.fixture()
def stores(monkeypatch):
    import connectors

    for scheme in ("shared", "blind", "flaky"):
        monkeypatch.setitem(connectors._REGISTRY, scheme, "tests.test_ingest:open_test_store")
    s = _Stores()
    _ACTIVE.append(s)
    yield s
    _ACTIVE.remove(s)


def _has_milvus() -> bool:
    try:
        import milvus_lite  # noqa: F401
        import pymilvus  # noqa: F401
    except ImportError:
        return False
    return (ROOT / "connectors" / "milvus").is_dir()


@pytest.fixture()
def milvus_target(tmp_path):
    if not _has_milvus():
        skip_or_fail("pymilvus / milvus-lite (or connectors/milvus/) not available")
    return f"milvus:{tmp_path / 'x.db'}"


# ============================================================================ helpers
SUMMARY = re.compile(r"read (\d+), embedded (\d+), written (\d+), skipped (\d+) \(already present\), failed (\d+)")


def summary_of(out: str) -> dict[str, int]:
    m = SUMMARY.findall(out)
    assert m, f"no summary in output:\n{out}"
    read, embedded, written, skipped, failed = map(int, m[-1])
    return dict(read=read, embedded=embedded, written=written, skipped=skipped, failed=failed)


def run(capsys, *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def dead_letters(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def huge_png(path: Path, side: int = 40000) -> None:
    """A PNG whose header announces side x side pixels (no pixel data: cheap to write)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


def make_folder(root: Path) -> dict[str, list[str]]:
    """Good images (some captioned), texts, and bad files of every kind."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir()
    for i, name in enumerate(["cat.png", "dog.jpg", "sub/bird.png", "sub/fish.png"]):
        make_image(64 + 8 * i, 48, seed=i).save(root / name)
    (root / "cat.txt").write_text("a cat on a sofa\n")
    (root / "sub/bird.txt").write_text("a bird in the sky")
    (root / "notes.txt").write_text("a note about cats and dogs")
    (root / "sub/readme.md").write_text("# a markdown text")
    buf = io.BytesIO()
    make_image(96, 64, seed=9).save(buf, "JPEG")
    (root / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "zero.png").write_bytes(b"")
    (root / "notimage.png").write_text("I am text named .png")
    huge_png(root / "huge.png")
    (root / "empty.txt").write_text("   \n")
    (root / ".hidden.png").write_bytes(b"ignored")
    (root / "data.bin").write_bytes(b"ignored")
    return {"good": ["cat.png (+cat.txt)", "dog.jpg", "sub/bird.png (+bird.txt)", "sub/fish.png", "notes.txt",
                     "sub/readme.md"],
            "bad": ["truncated.jpg", "zero.png", "notimage.png", "huge.png", "empty.txt"]}


def make_table_rows(folder: Path) -> list[dict]:
    """Table rows with relative image paths, a missing image and an empty row."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i in range(3):
        make_image(64, 48, seed=20 + i).save(folder / "img" / f"p{i}.png")
    return [
        {"sku": "A1", "title": "red shoes", "picture": "img/p0.png", "price": 10.5, "color": "red"},
        {"sku": "A2", "title": "blue hat", "picture": "", "price": 3.0, "color": "blue"},
        {"sku": "A3", "title": "", "picture": "img/p1.png", "price": 7.25, "color": "green"},
        {"sku": "A4", "title": "green scarf", "picture": "img/p2.png", "price": 1.0, "color": "green"},
        {"sku": "A5", "title": "lost picture", "picture": "img/missing.png", "price": 2.0, "color": "red"},
        {"sku": "A6", "title": "", "picture": "", "price": 0.0, "color": ""},
    ]


def write_table(path: Path, rows: list[dict]) -> None:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n{not json\n")
    elif path.suffix == ".csv":
        with path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), str(path))


MAPPING = ["--id-col", "sku", "--text-col", "title", "--image-col", "picture", "--meta-cols", "price,color"]


# ============================================================================ unit tests (no model)
def test_folder_pairs_captions_with_media(tmp_path):
    from connectors.ingest import count_folder_rows, folder_rows

    make_folder(tmp_path)
    rows = list(folder_rows(tmp_path))
    by_loc = {r.location: r for r in rows}
    assert by_loc["cat.png (+cat.txt)"].row["text"] == "a cat on a sofa"
    assert by_loc["cat.png (+cat.txt)"].row["image"] == str(tmp_path / "cat.png")
    assert "text" not in by_loc["dog.jpg"].row
    assert by_loc["notes.txt"].row == {"text": "a note about cats and dogs", "metadata": {"path": "notes.txt"}}
    assert by_loc["empty.txt"].error == "empty text file"
    assert "cat.txt" not in by_loc and ".hidden.png" not in by_loc and "data.bin" not in by_loc
    assert count_folder_rows(tmp_path) == len(rows) == 11


def test_state_file_ignores_torn_line_and_checks_key(tmp_path):
    from connectors.ingest import IngestState
    from embedder.errors import InputError

    path = tmp_path / "s.jsonl"
    st = IngestState(path, key={"source": "a"}, resume=False)
    st.record(["x", "y"])
    st.close()
    with path.open("a") as fh:
        fh.write('["z", "w')  # killed mid-line
    again = IngestState(path, key={"source": "a"}, resume=True)
    assert again.landed == {"x", "y"}
    again.close()
    with pytest.raises(InputError, match="belongs to another ingest"):
        IngestState(path, key={"source": "b"}, resume=True)


def test_transient_classification():
    from connectors.ingest import is_transient
    from embedder.errors import InputError, OverloadedError, RemoteError, UnavailableError

    assert is_transient(ConnectionResetError()) and is_transient(TimeoutError())
    assert is_transient(UnavailableError("down")) and is_transient(OverloadedError("full"))
    assert is_transient(RemoteError("x", status=503)) and not is_transient(RemoteError("x", status=400))
    assert not is_transient(InputError("bad")) and not is_transient(ValueError("503"))


def test_html_thumbnails(tmp_path):
    from connectors.hits import render_html

    make_image(300, 200, seed=3).save(tmp_path / "a.png")
    records = [
        {"rank": 1, "id": "a", "score": 0.9, "rerank_score": 0.8, "text": "<b>x</b>", "media": str(tmp_path / "a.png"),
         "modality": "image", "metadata": {}},
        {"rank": 2, "id": "v", "score": 0.5, "rerank_score": None, "text": None, "media": str(tmp_path / "gone.mp4"),
         "modality": "video", "metadata": {"k": 1}},
    ]
    page = render_html(records, title="t")
    assert "data:image/jpeg;base64," in page and "&lt;b&gt;x&lt;/b&gt;" in page and "missing:" in page
    try:
        import av
    except ImportError:
        return
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(4):
            frame = av.VideoFrame.from_image(make_image(64, 48, seed=i))
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    page = render_html([dict(records[1], media=str(video))], title="v")
    assert page.count("data:image/jpeg;base64,") == 1  # the first frame


# ============================================================================ ingest end to end
def test_folder_with_bad_files(tmp_path, capsys, stores, tiny_embedding_path):
    layout = make_folder(tmp_path / "corpus")
    dead = tmp_path / "dead.jsonl"
    code, out, _ = run(capsys, "ingest", tmp_path / "corpus", "--to", "shared:f", "--collection", "c",
                       "--model", tiny_embedding_path, "--dead-letter", dead, "--state", tmp_path / "st.jsonl",
                       "--batch-size", 4)
    assert code == 1, out
    s = summary_of(out)
    assert s == dict(read=11, embedded=6, written=6, skipped=0, failed=5)
    letters = dead_letters(dead)
    assert sorted(d["location"] for d in letters) == sorted(layout["bad"])
    reasons = {d["location"]: d["reason"] for d in letters}
    assert "truncated" in reasons["truncated.jpg"] and "empty" in reasons["zero.png"]
    assert "cannot identify" in reasons["notimage.png"] and "decompression bomb" in reasons["huge.png"]
    assert reasons["empty.txt"] == "empty text file"
    assert all(d["reason"] and d["stage"] in ("read", "embed") for d in letters)
    store = stores.stores["f/c"]
    assert store.count() == 6
    kinds = sorted(r.fields["modality"] for page, _ in store.scan() for r in page)
    assert kinds == ["image", "image", "text", "text", "vl", "vl"]
    assert str(dead) in out


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_table_sources_with_mapping(tmp_path, capsys, stores, tiny_embedding_path, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    folder = tmp_path / "tables"
    rows = make_table_rows(folder)
    path = folder / f"items{suffix}"
    write_table(path, rows)
    dead = tmp_path / "dead.jsonl"
    code, out, _ = run(capsys, "ingest", path, *MAPPING, "--to", "shared:t", "--collection", "items",
                       "--model", tiny_embedding_path, "--dead-letter", dead, "--state", tmp_path / "st.jsonl")
    assert code == 1
    bad = {d["id"] or d["location"]: d for d in dead_letters(dead)}
    expected_failed = 3 if suffix == ".jsonl" else 2  # + the broken JSON line
    assert summary_of(out) == dict(read=6 + expected_failed - 2, embedded=4, written=4, skipped=0,
                                   failed=expected_failed)
    reasons = " | ".join(d["reason"] for d in bad.values())
    assert "image file not found" in reasons and "no text, image or video" in reasons
    assert any(d["location"] == f"items{suffix}:6" or d["location"].endswith("row 5") for d in bad.values())
    store = stores.stores["t/items"]
    got = {r.id: r.fields for page, _ in store.scan() for r in page}
    assert sorted(got) == ["A1", "A2", "A3", "A4"]
    assert got["A1"]["metadata"] == {"price": 10.5, "color": "red"}  # a CSV cell written as a number is one
    assert got["A1"]["media"] == str(folder / "img" / "p0.png") and got["A1"]["modality"] == "vl"
    assert got["A3"]["modality"] == "image" and got["A2"]["modality"] == "text"


def test_csv_cells_written_as_numbers_are_numbers_in_metadata(tmp_path):
    """So ``--where '{"price": {"$lt": 100}}'`` finds the rows of a CSV (it found none when prices were text)."""
    from connectors.ingest import Columns
    from connectors.ingest.sources import csv_rows

    path = tmp_path / "p.csv"
    path.write_text("sku,title,price,qty,code,ratio,note\n007,42,79,-3,007,1e-3,12a\n")
    [row] = list(csv_rows(path, Columns(id="sku", text="title")))
    assert row.row["id"] == "007" and row.row["text"] == "42"  # id and content columns stay text
    assert row.row["metadata"] == {"price": 79, "qty": -3, "code": "007", "ratio": 0.001, "note": "12a"}


def test_sql_source_sqlite(tmp_path, capsys, stores, tiny_embedding_path, monkeypatch):
    pytest.importorskip("sqlalchemy")
    folder = tmp_path / "shop"
    rows = make_table_rows(folder)
    db = folder / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE products (sku TEXT, title TEXT, picture TEXT, price REAL, color TEXT)")
        conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?)",
                         [tuple(r.values()) for r in rows])
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "ingest", "--from-sql", f"sqlite:///{db}",
                       "--query", "SELECT * FROM products WHERE price > 0.5", *MAPPING, "--media-root", folder,
                       "--to", "shared:s", "--collection", "p", "--model", tiny_embedding_path,
                       "--dead-letter", "dead.jsonl", "--state", "st.jsonl")
    assert code == 1
    assert summary_of(out) == dict(read=5, embedded=4, written=4, skipped=0, failed=1)
    [letter] = dead_letters(tmp_path / "dead.jsonl")
    assert letter["location"] == "sql:row 5" and "not found" in letter["reason"] and letter["id"] == "A5"
    assert stores.stores["s/p"].count() == 4


def test_rerun_is_idempotent(tmp_path, capsys, stores, tiny_embedding_path):
    folder = tmp_path / "c"
    folder.mkdir()
    for i in range(5):
        (folder / f"t{i}.txt").write_text(f"text number {i}")
    args = ["ingest", folder, "--to", "shared:i", "--model", tiny_embedding_path, "--state", tmp_path / "st",
            "--dead-letter", tmp_path / "dead.jsonl"]
    code, out, _ = run(capsys, *args)
    assert code == 0 and summary_of(out)["written"] == 5
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert summary_of(out) == dict(read=5, embedded=0, written=0, skipped=5, failed=0)
    (folder / "t5.txt").write_text("a new one")
    code, out, _ = run(capsys, *args)
    assert summary_of(out) == dict(read=6, embedded=1, written=1, skipped=5, failed=0)
    assert stores.stores["i/qvl"].count() == 6
    assert not (tmp_path / "dead.jsonl").exists()


def test_resume_after_interruption_does_not_reembed(tmp_path, capsys, stores, tiny_embedding_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "text": f"row {i}"}) + "\n" for i in range(12)))
    # The store cannot look ids up: only the state file knows what landed.
    stores.faults["blind:r"] = {2: KeyboardInterrupt()}
    args = ["ingest", src, "--to", "blind:r", "--model", tiny_embedding_path, "--batch-size", 4,
            "--state", tmp_path / "state.jsonl", "--dead-letter", tmp_path / "dead.jsonl"]
    code, out, err = run(capsys, *args)
    assert code == 130 and "--resume" in err
    first = summary_of(out)
    assert first["written"] == 4 and stores.stores["r/qvl"].count() == 4
    stores.faults.clear()
    code, out, _ = run(capsys, *args, "--resume")
    assert code == 0
    assert summary_of(out) == dict(read=12, embedded=8, written=8, skipped=4, failed=0)
    assert stores.stores["r/qvl"].count() == 12
    # without --resume, a store that cannot look ids up gets everything again (idempotently)
    code, out, _ = run(capsys, *args)
    assert summary_of(out)["embedded"] == 12 and stores.stores["r/qvl"].count() == 12


def test_transient_write_error_is_retried(tmp_path, capsys, stores, tiny_embedding_path):
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(6)))
    stores.faults["flaky:x"] = {1: ConnectionResetError("connection reset by peer")}
    code, out, _ = run(capsys, "ingest", src, "--to", "flaky:x", "--model", tiny_embedding_path,
                       "--state", tmp_path / "st", "--dead-letter", tmp_path / "dead.jsonl")
    assert code == 0, out
    assert summary_of(out) == dict(read=6, embedded=6, written=6, skipped=0, failed=0)
    assert stores.wrappers["flaky:x"].calls == 2 and stores.stores["x/qvl"].count() == 6


def test_search_table_json_html(tmp_path, capsys, stores, tiny_embedding_path, tiny_reranker_path):
    make_folder(tmp_path / "corpus")
    run(capsys, "ingest", tmp_path / "corpus", "--to", "shared:q", "--model", tiny_embedding_path,
        "--state", tmp_path / "st", "--dead-letter", tmp_path / "dead.jsonl")
    common = ["--in", "shared:q", "--model", tiny_embedding_path]
    code, out, _ = run(capsys, "search", "a cat", *common, "-k", 3)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["#", "id", "score"] and len(lines) == 2 + 3
    html_path = tmp_path / "hits.html"
    code, out, _ = run(capsys, "search", "a cat", *common, "-k", 6, "--rerank", "--reranker", tiny_reranker_path,
                       "--json", "--html", html_path)
    assert code == 0
    payload = json.loads(out)
    hits = payload["hits"]
    assert len(hits) == 6 and all(h["rerank_score"] is not None for h in hits)
    assert [h["rerank_score"] for h in hits] == sorted((h["rerank_score"] for h in hits), reverse=True)
    assert {"id", "score", "text", "media", "modality", "metadata"} <= set(hits[0])
    page = html_path.read_text()
    n_media = sum(1 for h in hits if h["media"])
    assert n_media and page.count("data:image/jpeg;base64,") == n_media
    code, out, _ = run(capsys, "search", *common, "--image", tmp_path / "corpus" / "dog.jpg", "-k", 1, "--json",
                       "--where", "modality=image")
    hit = json.loads(out)["hits"][0]
    assert code == 0 and hit["modality"] == "image"
    code, _, err = run(capsys, "search", "x", "--in", "shared:empty", "--model", tiny_embedding_path)
    assert code == 2 and "qvl ingest" in err


def test_demo_offline_test_model(tmp_path, capsys):
    target = [] if _has_milvus() else ["--to", "memory:"]
    code, out, err = run(capsys, "demo", "--offline-test-model", "--dir", tmp_path, "--html", tmp_path / "d.html",
                         *target)
    assert code == 0, err
    assert "RANDOM" in err
    s = summary_of(out)
    assert s["written"] == 25 and s["failed"] == 0
    assert out.count("reranked") == 4 and "image: yellow_star.png" in out
    page = (tmp_path / "d.html").read_text()
    assert page.count("data:image/jpeg;base64,") == 1 + 3  # the query image, then its 3 hits
    assert "RANDOM" in page  # the page says the weights are random
    # a second run on the same folder keeps the collection and embeds nothing again
    code, out, err = run(capsys, "demo", "--offline-test-model", "--dir", tmp_path, *target)
    assert code == 0, err
    s = summary_of(out)
    if target:  # memory: lives in one process, so it starts afresh
        assert s["written"] == 25
    else:
        assert s == dict(read=25, embedded=0, written=0, skipped=25, failed=0)


def test_demo_without_model_says_so(tmp_path, capsys):
    code, _, err = run(capsys, "demo", "--dir", tmp_path, "--model", str(tmp_path / "no-such-model"),
                       "--reranker", str(tmp_path / "no-such-reranker"))
    assert code == 1
    [line] = [x for x in err.splitlines() if x.startswith("qvl:")]  # one line says what happened and what to do
    assert "cannot load the model" in line and "no-such-model" in line and "--offline-test-model" in line


# ============================================================================ Milvus Lite
def test_milvus_every_source_idempotent_and_search(tmp_path, capsys, milvus_target, tiny_embedding_path,
                                                   tiny_reranker_path):
    model = ["--model", tiny_embedding_path]
    folder = tmp_path / "tables"
    rows = make_table_rows(folder)
    write_table(folder / "items.jsonl", rows)
    write_table(folder / "items.csv", rows)
    sources = {"jsonl": [folder / "items.jsonl", *MAPPING], "csv": [folder / "items.csv", *MAPPING]}
    try:
        import pyarrow  # noqa: F401

        write_table(folder / "items.parquet", rows)
        sources["parquet"] = [folder / "items.parquet", *MAPPING]
    except ImportError:
        pass
    db = folder / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE products (sku TEXT, title TEXT, picture TEXT, price REAL, color TEXT)")
        conn.executemany("INSERT INTO products VALUES (?, ?, ?, ?, ?)", [tuple(r.values()) for r in rows])
    sources["sql"] = ["--from-sql", f"sqlite:///{db}", "--query", "SELECT * FROM products", *MAPPING,
                      "--media-root", folder]
    make_folder(tmp_path / "corpus")
    sources["folder"] = [tmp_path / "corpus"]
    for name, src in sources.items():
        code, out, _ = run(capsys, "ingest", *src, "--to", milvus_target, "--collection", name, *model,
                           "--state", tmp_path / f"{name}.st", "--dead-letter", tmp_path / f"{name}.dead")
        assert code == 1, (name, out)
        s = summary_of(out)
        assert s["written"] == (6 if name == "folder" else 4), (name, s)
        assert s["read"] == s["written"] + s["failed"]
    # re-running writes nothing new: the ids are found in Milvus (no --resume needed)
    code, out, _ = run(capsys, "ingest", tmp_path / "corpus", "--to", milvus_target, "--collection", "folder",
                       *model, "--state", tmp_path / "other.st", "--dead-letter", tmp_path / "f.dead")
    assert summary_of(out) == dict(read=11, embedded=0, written=0, skipped=6, failed=5)
    code, out, _ = run(capsys, "search", "red shoes", "--in", milvus_target, "--collection", "csv", *model,
                       "--rerank", "--reranker", tiny_reranker_path, "--json", "--html", tmp_path / "h.html",
                       "--filter", 'metadata["color"] == "green"')
    assert code == 0
    hits = json.loads(out)["hits"]
    assert sorted(h["id"] for h in hits) == ["A3", "A4"] and all(h["rerank_score"] is not None for h in hits)
    assert "data:image/jpeg;base64," in (tmp_path / "h.html").read_text()
    code, out, _ = run(capsys, "search", "a bird", "--in", milvus_target, "--collection", "folder", *model, "-k", 2)
    assert code == 0 and len(out.strip().splitlines()) == 4


def test_subprocess_interrupted_then_resumed(tmp_path, capsys, milvus_target, tiny_embedding_path):
    """Ctrl-C a real `qvl ingest` mid-run, resume it, and check nothing was embedded twice."""
    n = 120
    src = tmp_path / "rows.jsonl"
    src.write_text("".join(json.dumps({"id": f"r{i}", "text": f"row number {i} " * 3}) + "\n" for i in range(n)))
    state = tmp_path / "state.jsonl"
    qvl = [shutil.which("qvl")] if shutil.which("qvl") else [sys.executable, "-m", "connectors.cli"]
    cmd = [*qvl, "ingest", str(src), "--to", milvus_target, "--model",
           tiny_embedding_path, "--batch-size", "2", "--state", str(state), "--dead-letter", str(tmp_path / "d")]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if state.exists() and len(state.read_text().splitlines()) >= 4:  # header + 3 batches landed
            proc.send_signal(signal.SIGINT)
            break
        time.sleep(0.02)
    out, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the ingest finished before it could be interrupted")
    assert proc.returncode == 130, err
    first = summary_of(out)
    assert 0 < first["written"] < n
    assert first["written"] <= first["embedded"] <= first["written"] + 2  # Ctrl-C may land between the two
    # resume in-process (the same command line, through connectors.cli.main)
    code, out, _ = run(capsys, *cmd[len(qvl):], "--resume", "--batch-size", 32)
    assert code == 0, out
    second = summary_of(out)
    assert second["embedded"] == n - first["written"]  # nothing embedded twice
    assert second["skipped"] == first["written"] and second["written"] + first["written"] == n
    import connectors

    with connectors.connect(milvus_target, collection="qvl", dim=128) as store:
        assert store.count() == n


# ============================================================================ links, media roots, odd names
def test_links_out_of_the_folder_are_reported_not_read(tmp_path, capsys, stores, tiny_embedding_path):
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("a secret that must not be stored")
    (tmp_path / "outside" / "more.txt").write_text("another secret")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "real.txt").write_text("an ordinary text")
    (corpus / "inner.txt").symlink_to(corpus / "real.txt")  # inside the folder: fine
    (corpus / "passwd.txt").symlink_to(secret)
    (corpus / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    (corpus / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    args = ["ingest", corpus, "--to", "shared:l", "--model", tiny_embedding_path, "--state", tmp_path / "st",
            "--dead-letter", tmp_path / "dead.jsonl"]
    code, out, _ = run(capsys, *args)
    assert code == 1, out
    # inner.txt links to real.txt: the same content, the same id, stored once
    assert summary_of(out) == dict(read=5, embedded=1, written=1, skipped=1, failed=3)
    reasons = {d["location"]: d["reason"] for d in dead_letters(tmp_path / "dead.jsonl")}
    assert set(reasons) == {"passwd.txt", "gone.txt", "linked"}
    assert str(secret) in reasons["passwd.txt"] and "--follow-links" in reasons["passwd.txt"]
    assert "broken" in reasons["gone.txt"] and "--follow-links" in reasons["linked"]
    stored = [r.fields["text"] for page, _ in stores.stores["l/qvl"].scan() for r in page]
    assert stored == ["an ordinary text"]
    # --follow-links: the user asked for it
    code, out, _ = run(capsys, *args, "--follow-links")
    stored = {r.fields["text"] for page, _ in stores.stores["l/qvl"].scan() for r in page}
    assert {"a secret that must not be stored", "another secret"} <= stored
    assert [d["location"] for d in dead_letters(tmp_path / "dead.jsonl")] == ["gone.txt"]


def test_table_media_paths_are_confined_to_the_media_root(tmp_path, capsys, stores, tiny_embedding_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    make_image(64, 48, seed=5).save(outside / "x.png")
    folder = tmp_path / "table"
    (folder / "img").mkdir(parents=True)
    make_image(64, 48, seed=6).save(folder / "img" / "ok.png")
    (folder / "img" / "link.png").symlink_to(outside / "x.png")
    rows = [{"id": "ok", "image": "img/ok.png"}, {"id": "abs", "image": str(outside / "x.png")},
            {"id": "dots", "image": "../elsewhere/x.png"}, {"id": "link", "image": "img/link.png"},
            {"id": "passwd", "image": "/etc/passwd"}]
    src = folder / "rows.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["ingest", src, "--to", "shared:m", "--model", tiny_embedding_path, "--state", tmp_path / "st",
            "--dead-letter", tmp_path / "dead.jsonl"]
    code, out, _ = run(capsys, *args)
    assert code == 1 and summary_of(out)["written"] == 1
    bad = {d["id"]: d["reason"] for d in dead_letters(tmp_path / "dead.jsonl")}
    assert set(bad) == {"abs", "dots", "link", "passwd"}
    assert all("outside the media root" in r and "--media-root" in r for r in bad.values()), bad
    assert str(outside / "x.png") in bad["link"]  # says where the link leads
    # allowing the other folder as a second root lets its files (and the link into it) in
    code, out, _ = run(capsys, *args, "--media-root", folder, "--media-root", outside)
    assert code == 1 and summary_of(out)["written"] == 3
    assert [d["id"] for d in dead_letters(tmp_path / "dead.jsonl")] == ["passwd"]


def test_file_names_that_are_not_utf8(tmp_path, capsys, milvus_target, tiny_embedding_path):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("a good name")
    with open(os.fsencode(corpus) + b"/bad\xff.txt", "wb") as fh:
        fh.write(b"a text whose file name is not UTF-8")
    buf = io.BytesIO()
    make_image(64, 48, seed=8).save(buf, "PNG")
    with open(os.fsencode(corpus) + b"/pic\xfe.png", "wb") as fh:
        fh.write(buf.getvalue())
    dead = tmp_path / "dead.jsonl"
    args = ["ingest", corpus, "--to", milvus_target, "--collection", "names", "--model", tiny_embedding_path,
            "--dim", 64, "--state", tmp_path / "state.jsonl", "--dead-letter", dead]
    code, out, err = run(capsys, *args)
    assert code == 1, err
    assert summary_of(out) == dict(read=3, embedded=2, written=2, skipped=0, failed=1)
    [letter] = dead_letters(dead)  # valid JSON, one line per failed row
    assert letter["location"] == "pic\\xfe.png" and "not valid UTF-8" in letter["reason"]
    code, out, err = run(capsys, *args, "--resume")
    assert code == 1, err
    assert summary_of(out) == dict(read=3, embedded=0, written=0, skipped=2, failed=1)
    code, out, _ = run(capsys, "search", "name", "--in", milvus_target, "--collection", "names",
                       "--model", tiny_embedding_path, "--json")
    paths = sorted(h["metadata"]["path"] for h in json.loads(out)["hits"])
    assert paths == ["bad\\xff.txt", "good.txt"]


def test_json_errors_read_well(tmp_path):
    from connectors.ingest import jsonl_rows

    src = tmp_path / "x.jsonl"
    src.write_text('{"text": 1,}\n{"text": "abc')  # json's message for the second ends in "at"
    reasons = [r.error for r in jsonl_rows(src)]
    assert reasons == ["invalid JSON: Expecting property name enclosed in double quotes at column 12",
                       "invalid JSON: Unterminated string starting at column 10"]


def test_progress_shows_rate_and_eta_then_a_summary(tmp_path, monkeypatch, capsys, stores, tiny_embedding_path):
    """On a terminal the bar shows done/total, elapsed<ETA and rows/s; the summary line follows."""
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    folder = tmp_path / "c"
    folder.mkdir()
    for i in range(6):
        (folder / f"t{i}.txt").write_text(f"text number {i}")
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    code = main(["ingest", str(folder), "--to", "shared:p", "--model", tiny_embedding_path, "--batch-size", "2",
                 "--state", str(tmp_path / "st"), "--dead-letter", str(tmp_path / "dead.jsonl")])
    out = capsys.readouterr().out
    assert code == 0
    bar = term.getvalue()
    assert re.search(r"ingest -> qvl: +100%.*6/6 \[\d\d:\d\d<\d\d:\d\d, +[\d.]+ ?row/s", bar), bar
    assert "written=6" in bar
    assert summary_of(out)["written"] == 6 and "rows/s" in out


def test_a_write_that_fails_transiently_is_retried_from_the_failure_value(embedder, tmp_path):
    """The store's write raised a lost connection: the report's Failures say transient (from the
    exception, not its text), and ingest retries those rows with the one RetryPolicy."""
    from connectors.core import RetryPolicy
    from connectors.ingest import SourceRow, ingest
    from connectors.memory import MemoryStore

    class DropsOnce(MemoryStore):
        drops = 1
        refuse = False

        def _write(self, rows, vectors):
            if self.refuse:
                return [(r.id, "value too long for the column") for r in rows]
            if self.drops:
                self.drops -= 1
                raise ConnectionResetError(104, "Connection reset by peer")
            return super()._write(rows, vectors)

    store = DropsOnce(embedder=embedder, dim=64, collection="drops")
    store.create()
    report = store.upsert([{"id": "a", "text": "one"}])
    assert report.failed == [("a", "ConnectionResetError: [Errno 104] Connection reset by peer")]
    assert report.failed[0].transient and report.failed[0].stage == "write" and report.transient == report.failed
    store.drops = 1
    waits: list[float] = []
    rows = [SourceRow(f"r{i}", row={"id": f"r{i}", "text": f"row {i}"}) for i in range(3)]
    summary = ingest(rows, store, embedder, dead_letter=tmp_path / "dead.jsonl",
                     retry=RetryPolicy(attempts=3, backoff=0.25), sleep=waits.append)
    assert summary.written == 3 and summary.failed == 0 and waits == [0.25]
    assert store.existing_ids(["r0", "r1", "r2"]) == {"r0", "r1", "r2"}
    store.refuse = True  # a row the database refuses is not retried: that failure is not transient
    bad = ingest([SourceRow("bad", row={"id": "z", "text": "x"})], store, embedder,
                 dead_letter=tmp_path / "dead2.jsonl", retry=RetryPolicy(attempts=3), sleep=waits.append)
    assert bad.failed == 1 and bad.written == 0 and waits == [0.25]

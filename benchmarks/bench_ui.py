"""``qvl ui`` from the browser's point of view: p50/p95 of a text query against 100k rows.

A Faiss store (HNSW, dim 256) is filled with clustered precomputed vectors (``common.clustered``);
each row points at one of ``--images`` JPEG photos (800x600) in a media folder, so thumbnails
are really made. ``qvl ui`` runs as its own process (as a user starts it) with the 2-layer
random checkpoint at the 2B widths (``common.bench_checkpoint``: the query embedding of the
real 28-layer model costs more, measured separately by ``bench_embed.py``). Headless Chromium
(Selenium) types each query into the page and submits it; the time is taken in the page with
``performance.now()`` from the submit to

* the grid drawn (the JSON call: query embedding, ANN search, the hits' records), and
* every thumbnail loaded (made on demand by the server, or from its cache / the browser's).

Each query is sent twice in a row: the first time its thumbnails are new to the server (cold), the second
time they are cached. The baseline is ``store.search`` in the same process as the store (query
embedding + ANN, no HTTP, no browser)::

    python benchmarks/bench_ui.py --rows 100000 --queries 40
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import bench_checkpoint, clustered, cpu_flags_line, print_table, tmpdir  # noqa: E402

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
WORDS = ["red", "bicycle", "slide", "churn", "chart", "beach", "invoice", "kitten", "revenue", "mountain",
         "receipt", "diagram", "sunset", "table", "forest", "meeting", "whiteboard", "dog", "map", "plot"]

# One query from the page: fill the box, submit, wait for the grid, then for its images.
MEASURE_JS = """
const [text, done] = [arguments[0], arguments[arguments.length - 1]];
const before = Number(document.body.dataset.searches || 0);
const t0 = performance.now();
document.getElementById('q').value = text;
document.getElementById('search').requestSubmit();
const poll = () => {
  if (Number(document.body.dataset.searches || 0) <= before) {
    if (document.getElementById('error').textContent) return done({error: document.getElementById('error').textContent});
    return setTimeout(poll, 1);
  }
  const grid = performance.now() - t0;
  const imgs = [...document.querySelectorAll('#results img')];
  Promise.all(imgs.map(i => (i.complete ? null : new Promise(r => { i.onload = r; i.onerror = r; }))))
    .then(() => done({grid: grid, all: performance.now() - t0, images: imgs.length,
                      loaded: imgs.filter(i => i.naturalWidth > 0).length}));
};
poll();
"""


def progress(msg: str) -> None:
    print(f"[bench_ui {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def make_images(root: Path, n: int) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        small = Image.fromarray((rng.random((6, 8, 3)) * 255).astype("uint8"))
        path = root / f"photo{i:05d}.jpg"
        small.resize((800, 600), Image.BICUBIC).save(path, quality=85)
        paths.append(str(path))
    return paths


def build_store(target: str, ckpt: str, rows: int, dim: int, images: list[str]) -> None:
    import connectors
    from embedder import Embedder

    vectors = clustered(rows, dim, centers=max(10, rows // 100), spread=0.8, seed=3)
    with Embedder.from_pretrained(ckpt, device="cpu") as emb, \
            connectors.connect(target, collection="bench", embedder=emb, dim=dim, index="hnsw") as store:
        store.create(fields={"year": int})
        for s in range(0, rows, 5000):
            batch = [{"id": f"r{i}", "vector": vectors[i], "image": images[i % len(images)],
                      "year": 2000 + i % 25} for i in range(s, min(rows, s + 5000))]
            assert store.upsert(batch).ok
        progress(f"wrote {store.count()} rows")


def baseline(target: str, ckpt: str, dim: int, queries: list[str], k: int) -> dict[str, list[float]]:
    """In process, ms per query: ``store.search`` (query embedding + ANN), the ANN alone (a
    precomputed query vector), and one thumbnail made from a photo (the server's work per image)."""
    import connectors
    from connectors.ui.media import Thumbnails
    from embedder import Embedder

    out: dict[str, list[float]] = {"search": [], "ann": [], "thumb": []}
    with Embedder.from_pretrained(ckpt, device="cpu") as emb, \
            connectors.connect(target, collection="bench", embedder=emb, dim=dim) as store:
        store.search(queries[0], k=k)  # warm-up
        for q in queries:
            t = time.perf_counter()
            store.search(q, k=k)
            out["search"].append((time.perf_counter() - t) * 1000)
            vec = emb.embed([q], dim=dim)[0]
            t = time.perf_counter()
            store.search(vec, k=k)
            out["ann"].append((time.perf_counter() - t) * 1000)
        thumbs = Thumbnails([os.path.dirname(target.split(":", 1)[1])], entries=0)
        photos = sorted(Path(thumbs.roots[0], "photos").glob("*.jpg"))[:len(queries)]
        for photo in photos:
            t = time.perf_counter()
            thumbs.jpeg(str(photo))
            out["thumb"].append((time.perf_counter() - t) * 1000)
    return out


def start_ui(target: str, ckpt: str, dim: int, root: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "connectors.cli", "ui", "--in", target, "--collection", "bench",
                             "--model", ckpt, "--dim", str(dim), "--media-root", str(root), "--port", str(port),
                             "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        progress(f"qvl ui: {line.strip()}")
        if line.startswith("serving"):
            return proc
    raise SystemExit(f"qvl ui did not start (exit {proc.wait()})")


def browser(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,4000"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def pct(values: list[float]) -> tuple[str, str]:
    return f"{np.percentile(values, 50):.0f}", f"{np.percentile(values, 95):.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=40)
    ap.add_argument("--images", type=int, default=2000, help="distinct photo files the rows point at")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("-k", type=int, default=12)
    ap.add_argument("--port", type=int, default=8391)
    args = ap.parse_args()

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    work = Path(tmpdir())
    root = work / "photos"
    root.mkdir()
    target = f"faiss:{work / 'faiss'}"
    ckpt = bench_checkpoint("embedding", layers=2)
    rng = np.random.default_rng(7)
    queries = [" ".join(rng.choice(WORDS, 3, replace=False)) for _ in range(args.queries)]
    driver = proc = None
    try:
        t = time.monotonic()
        images = make_images(root, args.images)
        progress(f"{len(images)} photos in {time.monotonic() - t:.1f} s")
        t = time.monotonic()
        build_store(target, ckpt, args.rows, args.dim, images)
        progress(f"store built in {time.monotonic() - t:.1f} s")
        base = baseline(target, ckpt, args.dim, queries, args.k)
        proc = start_ui(target, ckpt, args.dim, root, args.port)
        driver = browser(work / "profile")
        driver.set_script_timeout(120)
        driver.get(f"http://127.0.0.1:{args.port}/")
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        driver.find_element(By.ID, "k").clear()
        driver.find_element(By.ID, "k").send_keys(str(args.k))
        driver.execute_async_script(MEASURE_JS, "warm up")
        runs: dict[str, list[dict]] = {"cold": [], "warm": []}
        for q in queries:  # each query twice in a row, so both phases see the same machine load
            for phase in ("cold", "warm"):
                r = driver.execute_async_script(MEASURE_JS, q)
                if "error" in r:
                    raise SystemExit(f"the page said: {r['error']}")
                assert r["loaded"] == r["images"] == args.k, r
                runs[phase].append(r)
    finally:
        if driver is not None:
            driver.quit()
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)

    print(f"qvl ui, {args.rows} rows (Faiss HNSW, dim {args.dim}), k={args.k}, {args.queries} text queries; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {cpu_flags_line()}")
    rows = [["store.search in process (baseline: embed + ANN)", *pct(base["search"])],
            ["  of which the ANN search alone (a query vector)", *pct(base["ann"])],
            ["  one thumbnail made from an 800x600 JPEG", *pct(base["thumb"])]]
    for phase, label in (("cold", "thumbnails new to the server"), ("warm", "thumbnails cached")):
        rows.append([f"page: grid drawn (JSON call), {label}", *pct([r["grid"] for r in runs[phase]])])
        rows.append([f"page: grid + {args.k} thumbnails loaded, {label}", *pct([r["all"] for r in runs[phase]])])
    print_table(["measured (ms)", "p50", "p95"], rows)


if __name__ == "__main__":
    main()

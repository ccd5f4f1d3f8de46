"""``qvl ui``: the search page (issue 22).

One real-browser test (Chromium driven by Selenium) drives the page as a person would and
checks the grid against ``store.search`` for the same inputs; the others talk HTTP to the app
(no browser): bad input answered with one clear line, media outside the roots refused, the key.
The store is a Milvus Lite file with a handful of rows made by the tiny checkpoint.
"""
from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import threading
import time

import pytest

from .conftest import make_image, skip_or_fail

COLORS = ["red", "blue", "red", "green", "red", "blue", "red"]
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def ui_data(tmp_path_factory, embedder):
    """A Milvus Lite collection (fields color: str, year: int) of images and a PDF page under a
    media root, plus one image outside it; yields (store, root, outside)."""
    try:
        import milvus_lite  # noqa: F401  (Milvus Lite's server)
    except ImportError:
        skip_or_fail("milvus-lite is not installed")
    import connectors

    base = tmp_path_factory.mktemp("ui")
    root, outside = base / "media", base / "elsewhere"
    root.mkdir()
    outside.mkdir()
    rows = []
    for i, color in enumerate(COLORS):
        path = root / f"img{i}.png"
        make_image(64 + 8 * i, 48, seed=10 + i).save(path)
        rows.append({"id": f"img{i}", "image": str(path), "text": f"a {color} picture number {i}",
                     "color": color, "year": 2018 + i})
    from fpdf import FPDF

    pdf = FPDF()
    for n in (1, 2):
        pdf.add_page()
        pdf.set_font("helvetica", size=16)
        pdf.cell(0, 10, f"Slide {n}: churn and activation")
        pdf.set_fill_color(200, 30, 30)
        pdf.rect(30, 60, 20 * n, 40, style="F")
    pdf.output(str(root / "deck.pdf"))
    rows.append({"id": "deck-p2", "image": f"{root / 'deck.pdf'}#page=2", "text": "slide 2", "color": "red",
                 "year": 2024, "metadata": {"page": 2, "doc_id": "deck"}})
    make_image(64, 64, seed=99).save(outside / "secret.png")
    rows.append({"id": "outside", "image": str(outside / "secret.png"), "text": "outside the root",
                 "color": "red", "year": 2025})
    os.symlink(outside / "secret.png", root / "link.png")
    store = connectors.connect(f"milvus:{base / 'ui.db'}", collection="photos", embedder=embedder)
    store.create(fields={"color": str, "year": int})
    assert store.upsert(rows).ok
    yield store, root, outside
    store.close()


@pytest.fixture(scope="module")
def client(ui_data, reranker):
    from fastapi.testclient import TestClient

    from connectors.ui import create_app

    store, root, _ = ui_data
    with TestClient(create_app(store, reranker=reranker, media_roots=[str(root)], max_upload_bytes=200_000)) as c:
        yield c


def _data_uri(data: bytes, kind: str = "image/png") -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def _png(seed: int = 5) -> bytes:
    buf = io.BytesIO()
    make_image(64, 64, seed=seed).save(buf, format="PNG")
    return buf.getvalue()


def test_bad_input_is_one_clear_line(client):
    def search(**body):
        r = client.post("/api/search", json={"text": "a picture", **body})
        assert r.headers["content-type"].startswith("application/json")
        assert "Traceback" not in r.text and 'File "' not in r.text
        return r.status_code, r.json().get("error", "")

    assert search(image=_data_uri(b"just some text, not a picture", "text/plain")) == (
        400, "the uploaded file is not an image (expected one of JPEG, PNG, WEBP, BMP, TIFF, GIF, ICO)")
    status, message = search(image=_data_uri(b"\x89PNG" + b"0" * 300_000))
    assert status == 413 and "upload limit" in message
    status, message = search(filter={"colour": "red"})
    assert status == 400 and "unknown filter field 'colour'" in message and "['color', 'year']" in message
    status, message = search(filter={"color": {"$like": "r%"}})
    assert status == 400 and "$like" in message
    assert search(text="", image=None) == (400, "type a query or add an image")
    assert search(k=0)[0] == 400 and search(k="many")[0] == 400
    assert client.post("/api/search", content=b"{not json").json() == {"error": "the request is not valid JSON"}
    # a metadata key is reachable as metadata.KEY; a declared field as itself
    ok = client.post("/api/search", json={"text": "slide", "filter": {"metadata.doc_id": "deck"}})
    assert ok.status_code == 200 and [h["id"] for h in ok.json()["hits"]] == ["deck-p2"]
    hits = client.post("/api/search", json={"text": "x", "k": 20, "filter": {
        "$or": [{"year": {"$gt": 2024}}, {"metadata.doc_id": "deck"}]}}).json()["hits"]
    assert {h["id"] for h in hits} == {"deck-p2", "outside"}
    by_id = {h["id"]: h for h in hits}
    assert by_id["outside"]["thumb"] is None and by_id["outside"]["link"] is None  # outside the root: no URL
    assert by_id["deck-p2"]["link"].endswith("#page=2") and by_id["deck-p2"]["where"] == "p2"


def test_media_only_from_the_roots(client, ui_data):
    _, root, outside = ui_data
    inside = client.get("/thumb", params={"m": str(root / "img1.png")})
    assert inside.status_code == 200 and inside.headers["content-type"] == "image/jpeg"
    page = client.get("/thumb", params={"m": f"{root / 'deck.pdf'}#page=2"})
    assert page.status_code == 200 and page.content[:2] == b"\xff\xd8"
    assert client.get("/media", params={"m": str(root / "deck.pdf")}).content[:4] == b"%PDF"
    from .test_media_video import write_video

    video = write_video(str(root / "clip.mp4"), frames=12, fps=4, size=(64, 48))
    frames = [client.get("/thumb", params={"m": f"{video}#t={t},{t + 1}"}) for t in (0, 2)]
    assert [f.headers["content-type"] for f in frames] == ["image/jpeg"] * 2
    assert frames[0].content != frames[1].content  # the frame at each window's start
    for bad in (str(outside / "secret.png"), str(root / "link.png"), f"{root}/../elsewhere/secret.png",
                "/etc/passwd", "relative.png", f"file://{outside / 'secret.png'}"):
        for route in ("/thumb", "/media"):
            r = client.get(route, params={"m": bad})
            assert r.status_code == 403, (route, bad, r.text)
            assert "outside the allowed media folders" in r.json()["error"] or "not absolute" in r.json()["error"]
    missing = client.get("/media", params={"m": str(root / "gone.png")})
    assert missing.status_code == 404 and "does not exist" in missing.json()["error"]


def test_api_key_guards_every_route(ui_data):
    from fastapi.testclient import TestClient

    from connectors.ui import create_app

    store, root, _ = ui_data
    with TestClient(create_app(store, media_roots=[str(root)], api_key="s3cret")) as c:
        for route in ("/", "/api/info", f"/thumb?m={root / 'img0.png'}"):
            r = c.get(route)
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
        assert c.get("/api/info", auth=("anyone", "wrong")).status_code == 401
        assert c.get("/api/info", auth=("anyone", "s3cret")).json()["fields"] == {"color": "str", "year": "int"}
        assert c.get("/api/info", headers={"Authorization": "Bearer s3cret"}).status_code == 200


@pytest.fixture()
def page_url(ui_data, reranker):
    """The app served by uvicorn on a free port in a thread of this process."""
    import uvicorn

    from connectors.ui import create_app

    store, root, _ = ui_data
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(store, reranker=reranker, media_roots=[str(root)])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture()
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        skip_or_fail(f"no {CHROMIUM} / {CHROMEDRIVER} (Debian packages chromium, chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        skip_or_fail("selenium is not installed (the test extra)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)


def test_search_page_in_a_real_browser(browser, page_url, ui_data, reranker, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    store, root, _ = ui_data
    wait = WebDriverWait(browser, 30)
    browser.get(page_url)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
    # the filter form comes from the collection's declared fields, each input labelled
    for input_id in ("f-color", "f-year-min", "f-year-max", "q", "image", "k", "rerank", "candidates"):
        assert browser.find_elements(By.CSS_SELECTOR, f"label[for='{input_id}']"), input_id
    query_image = tmp_path / "query.png"
    make_image(64, 48, seed=12).save(query_image)

    browser.find_element(By.ID, "image").send_keys(str(query_image))
    wait.until(lambda d: d.find_element(By.ID, "clear-image").is_displayed())
    browser.find_element(By.ID, "rerank").click()
    candidates = browser.find_element(By.ID, "candidates")
    candidates.clear()
    candidates.send_keys("6")
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("4")
    browser.find_element(By.ID, "f-color").send_keys("red")
    box = browser.find_element(By.ID, "q")
    box.send_keys("a red picture", Keys.ENTER)  # the keyboard submits
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-searches") == "1")

    cards = browser.find_elements(By.CSS_SELECTOR, "#results li.hit")
    expected = store.search({"text": "a red picture", "image": str(query_image)}, k=4, filter={"color": "red"},
                            rerank=reranker, candidates=6)
    assert [c.get_attribute("data-id") for c in cards] == [h.id for h in expected]
    assert len(cards) == 4 and all(h.rerank_score is not None for h in expected)
    for card, hit in zip(cards, expected):
        assert f"rerank {hit.rerank_score:.4f}" in card.find_element(By.CLASS_NAME, "scores").text
    # every thumbnail inside the root really loaded; the one outside shows its path, no image
    wait.until(lambda d: d.execute_script(
        "return [...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)"))
    for card, hit in zip(cards, expected):
        assert bool(card.find_elements(By.TAG_NAME, "img")) == (hit.id != "outside")
    shot = tmp_path / "qvl-ui.png"
    browser.save_screenshot(str(shot))
    print(f"screenshot: {shot}")

    # a file that is not an image: one clear line on the page, no stack trace
    not_image = tmp_path / "notes.txt"
    not_image.write_text("not a picture")
    browser.find_element(By.ID, "clear-image").click()
    browser.find_element(By.ID, "image").send_keys(str(not_image))
    wait.until(lambda d: d.find_element(By.ID, "clear-image").is_displayed())
    browser.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert browser.find_element(By.ID, "error").text.startswith("the uploaded file is not an image")
    assert "Traceback" not in browser.page_source


def test_qvl_ui_command_serves_the_page(tmp_path, tiny_embedding_path, embedder):
    """``qvl ui`` as users start it (a new process of the console script): the key from
    ``$QVL_API_KEY`` guards the page, the page and a search answer, Ctrl-C stops it (exit 130, one line)."""
    import json
    import signal
    import subprocess
    import urllib.error
    import urllib.request

    import connectors

    from .test_cli_e2e import clean_env, qvl_path

    target = f"faiss:{tmp_path / 'index'}"
    with connectors.connect(target, collection="notes", embedder=embedder) as store:
        store.create(fields={"topic": str})
        assert store.upsert([{"id": "n1", "text": "a red bicycle", "topic": "bikes"},
                             {"id": "n2", "text": "quarterly revenue", "topic": "money"}]).ok
    proc = subprocess.Popen([qvl_path(), "ui", "--in", target, "--collection", "notes", "--model",
                             tiny_embedding_path, "--port", "0", "--media-root", str(tmp_path)],
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            env=clean_env(QVL_API_KEY="k3y"))
    try:
        line = proc.stderr.readline()
        # "serving on" like qvl serve: what scripts (and the docs test) wait for
        assert line.startswith("serving on http://127.0.0.1:") and "(notes: 2 rows, auth on)" in line, line
        url = line.split()[2]

        def call(path: str, body: dict | None = None, key: str | None = "k3y") -> tuple[int, dict | str]:
            req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"Bearer {key}"} if key else {})
            try:
                with urllib.request.urlopen(req, timeout=30) as resp:
                    raw = resp.read().decode()
                    return resp.status, json.loads(raw) if path.startswith("/api") else raw
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        assert call("/api/info", key=None)[0] == 401
        status, page = call("/")
        assert status == 200 and '<label for="q">' in page  # the page ships with the package
        assert call("/api/info")[1]["fields"] == {"topic": "str"}
        status, answer = call("/api/search", {"text": "a bicycle", "k": 2, "filter": {"topic": "bikes"}})
        assert status == 200 and [h["id"] for h in answer["hits"]] == ["n1"]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 130  # Ctrl-C: the qvl commands' "interrupted" exit code
        rest = proc.stderr.read()
        assert "Traceback" not in rest and rest.strip().endswith("interrupted"), rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

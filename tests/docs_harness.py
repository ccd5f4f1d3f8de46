"""Run the fenced code blocks of README.md and docs/*.md (issue 23), as a reader would.

A page is run top to bottom in its own folder (``work``), which holds a reader's files
(:func:`write_reader_files`: ``photos/``, ``products.csv``, ``clips/``, ...) and links to
the checkout's ``examples/``, ``benchmarks/``, ``tests/`` and ``pyproject.toml``.

* ```` ```python ```` blocks of a page share one Python process (like a notebook), so a later
  block sees the names an earlier one defined.
* ```` ```bash ```` blocks run in ``bash -e -o pipefail``; variables a block exports are seen
  by the page's later shell blocks. Commands that run until stopped (``qvl serve``,
  ``qvl db ...``, ``qvl ui``, ``qvl pg worker`` without ``--once``) are started in the
  background and waited for until they say they are ready; they are stopped (Ctrl-C, as
  documented) at the end of the page or at a ``stop-background`` marker.
* Not run as written, but checked: ``pip install ...`` (the extras must exist in
  pyproject.toml and their requirements be installed: the tests run offline),
  ``python -m pytest ...`` (collected with ``--collect-only``: the files and ``-k`` must
  still select tests; the suite itself is the run) and ``python benchmarks/*.py ...`` (the
  script is imported and its documented arguments parsed; the measurement takes minutes and
  its figures are in docs/performance.md). ``curl`` fails on an HTTP error status.
* ``qvl`` is the console script's ``connectors.cli.main`` run in a fork of a process that has
  imported torch and transformers once (:mod:`tests.docs_zygote`): the same command, its own
  folder, environment, output and exit code, without seconds of imports each time (the
  console script itself as a subprocess is tests/test_cli_e2e.py's subject).
* Other languages (``text``, ``json``, ``yaml``, ``sql``) are not run; a fence must name
  its language.

The models are the hub ids the docs name, served from a Hugging Face cache that holds tiny
random checkpoints (``HF_HUB_OFFLINE=1``), so the real hub-id loading code runs. The
PostgreSQL URLs of the docs (``postgresql://app@localhost/shop``) reach an embedded server
of the docs test's own through ``PGPORT``/``PGUSER`` (databases ``shop``, ``media``, ``app``,
new for every page). Servers a page starts use the documented ports (8080, 8000, ...): a
machine-wide lock per port (:func:`port_locks`) keeps two pages from starting them at once.
A block that assigns ``hits`` must leave it non-empty, as a ``qvl search`` must not print
``(no hits)``: an example that finds nothing shows nothing.

Markers, HTML comments that a rendered page does not show:

* ``<!-- docs-test: skip gpu: REASON -->`` / ``<!-- docs-test: skip network: REASON -->``
  just before a block: the only two reasons a block is not run.
* ``<!-- docs-test: given NAME ... -->``: define names the page's prose assumes (``emb``,
  ``rr``, ... see :data:`GIVEN`) in the page's Python process.
* ``<!-- docs-test: setup bash`` / ``setup python`` + lines + ``-->``: hidden set-up run at
  that point (e.g. start the database a block talks to).
* ``<!-- docs-test: stop-background -->``: stop what the page started in the background.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import select
import shlex
import signal
import subprocess
import sys
import time
from typing import Iterator

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PYTHON_LANGS = {"python", "py"}
SHELL_LANGS = {"bash", "sh", "shell"}
OTHER_LANGS = {"text", "json", "yaml", "sql", "toml", "console-output"}
SKIP_KINDS = {"gpu", "network"}
BLOCK_TIMEOUT = 300.0

#: Hub ids the docs use -> (kind, widths) of the tiny random checkpoint served for them. The VL
#: embedding is 1024 wide (the largest dim the docs ask for); the real 2B is 2048.
DOCS_MODELS = {
    "Qwen/Qwen3-VL-Embedding-2B": ("embedding", {"hidden_size": 1024}),
    "Qwen/Qwen3-VL-Reranker-2B": ("reranker", None),
    "Qwen/Qwen3-Embedding-0.6B": ("text-embedding", {"hidden_size": 256}),
    "Qwen/Qwen3-Reranker-0.6B": ("text-reranker", None),
}

#: Names a page's prose assumes, defined by ``<!-- docs-test: given NAME ... -->``.
GIVEN = {
    "emb": "from embedder import Embedder\nemb = Embedder.from_pretrained('Qwen/Qwen3-VL-Embedding-2B')",
    "rr": "from embedder import Reranker\nrr = Reranker.from_pretrained('Qwen/Qwen3-VL-Reranker-2B')",
    "precomputed_1024_dim_vector": (
        "import numpy as _np\n_v = _np.random.default_rng(0).standard_normal(1024).astype('float32')\n"
        "precomputed_1024_dim_vector = (_v / _np.linalg.norm(_v)).tolist()"),
    "base64_png": "import base64, pathlib\nbase64_png = base64.b64encode(pathlib.Path('photos/dog.jpg').read_bytes()).decode()",
    "base64_query_image": ("import base64, pathlib\n"
                           "base64_query_image = base64.b64encode(pathlib.Path('query.jpg').read_bytes()).decode()"),
    "items": "items = ['a red car', {'image': 'car.jpg'}, {'image': 'missing.png'}]",
    # A table the Postgres examples "already have": products(id, title, photo_path, price, in_stock).
    "products_table": (
        "import psycopg\n"
        "with psycopg.connect('postgresql://app@localhost/shop') as _c:\n"
        "    _c.execute('CREATE TABLE products (id int PRIMARY KEY, title text, photo_path text, price int, '\n"
        "               'in_stock bool)')\n"
        "    _c.execute(\"INSERT INTO products VALUES (1, 'red running shoes', 'photos/bike1.jpg', 79, true), \"\n"
        "               \"(2, 'blue rain jacket', 'photos/bike7.jpg', 120, true), (3, 'a bowl of ramen', NULL, 12, false)\")"),
}

#: Commands that run until stopped: (pattern of the command line, pattern of its "ready" output or None).
LONG_RUNNING = [
    (re.compile(r"^(\w+=\S*\s+)*qvl\s+serve\b"), r"serving on "),
    (re.compile(r"^(\w+=\S*\s+)*qvl\s+db\s+(postgres|weaviate)\b"), r"^url: "),
    (re.compile(r"^(\w+=\S*\s+)*qvl\s+ui\b"), r"serving on "),
    (re.compile(r"^(\w+=\S*\s+)*qvl\s+pg\s+worker\b(?!.*--once)"), None),
]


@dataclasses.dataclass
class Step:
    """One thing to do on a page: a code block (``python``/``bash``), or a marker."""

    page: pathlib.Path
    line: int
    kind: str                    # "python", "bash", "given", "stop-background"
    code: str = ""
    skip: tuple[str, str] | None = None  # (gpu|network, reason)
    hidden: bool = False

    @property
    def where(self) -> str:
        return f"{_rel(self.page)}:{self.line}"


def _rel(path: pathlib.Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


class DocsError(AssertionError):
    """A page's block failed, or a page is malformed (an unknown marker, a fence without a language)."""


FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
MARKER = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->", re.S)


def parse_page(path: pathlib.Path) -> list[Step]:
    """The steps of a page, in order: its code blocks and its ``docs-test`` markers."""
    lines = path.read_text().split("\n")
    steps: list[Step] = []
    pending_skip: tuple[str, str] | None = None
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            start, lang = i + 1, m.group(2).lower()
            indent = len(m.group(1))
            i += 1
            body = []
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
                i += 1
            if i == len(lines):
                raise DocsError(f"{_rel(path)}:{start}: a fence that is never closed")
            if not lang:
                raise DocsError(f"{_rel(path)}:{start}: a fence without a language (use ```text for output)")
            kind = "python" if lang in PYTHON_LANGS else "bash" if lang in SHELL_LANGS else None
            if kind is None and lang not in OTHER_LANGS:
                raise DocsError(f"{_rel(path)}:{start}: unknown fence language {lang!r}")
            if kind:
                steps.append(Step(path, start, kind, "\n".join(body), skip=pending_skip))
            elif pending_skip:
                raise DocsError(f"{_rel(path)}:{start}: a skip marker before a {lang} block, which is not run")
            pending_skip = None
            i += 1
            continue
        if re.match(r"\s*<!--\s*docs-test:", lines[i]):  # a marker starts its line (not one quoted in prose)
            start = i + 1
            text = lines[i]
            while "-->" not in text and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            mm = MARKER.search(text)
            if not mm:
                raise DocsError(f"{_rel(path)}:{start}: a docs-test comment that does not close")
            head, _, rest = mm.group(1).partition("\n")
            words = head.split()
            where = f"{_rel(path)}:{start}"
            if words[:1] == ["skip"]:
                sk = re.match(r"skip\s+(\w+):\s*(\S.*)$", head)
                if not sk or sk.group(1) not in SKIP_KINDS:
                    raise DocsError(f"{where}: a block is skipped only for `gpu: REASON` or `network: REASON`, not {head!r}")
                pending_skip = (sk.group(1), sk.group(2).strip())
            elif words[:1] == ["given"]:
                unknown = [w for w in words[1:] if w not in GIVEN]
                if unknown or len(words) < 2:
                    raise DocsError(f"{where}: unknown given name(s) {unknown}; known: {sorted(GIVEN)}")
                steps.append(Step(path, start, "given", "\n".join(GIVEN[w] for w in words[1:]), hidden=True))
            elif words[:2] in (["setup", "bash"], ["setup", "python"]):
                steps.append(Step(path, start, words[1], rest, hidden=True))
            elif words == ["stop-background"]:
                steps.append(Step(path, start, "stop-background", hidden=True))
            else:
                raise DocsError(f"{where}: unknown docs-test marker {head!r}")
        i += 1
    if pending_skip:
        raise DocsError(f"{_rel(path)}: a skip marker with no block after it")
    return steps


# --------------------------------------------------------------------------- shell blocks

SHELL_PRELUDE = r"""
set -e -o pipefail
[ -f "$DOCS_ENV" ] && source "$DOCS_ENV"
trap 'export -p > "$DOCS_ENV"' EXIT
curl() { command curl --fail-with-body -sS --max-time 120 "$@"; echo; }
pip() {
  if [ "$1" = install ]; then command python "$DOCS_TOOLS" pip "$@"; else command pip "$@"; fi
}
python() {
  if [ "$1" = -m ] && [ "$2" = pytest ]; then
    shift 2; command python -m pytest --collect-only -q -n 0 -p no:cacheprovider "$@" | tail -n 3
  elif [[ "$1" == benchmarks/*.py ]]; then
    command python "$DOCS_TOOLS" bench "$@"
  else
    command python "$@"
  fi
}
__docs_wait() {  # LOG PATTERN PID: wait until the background command PID printed PATTERN
  local log=$1 pattern=$2 pid=$3 waited=0
  while ! grep -qE "$pattern" "$log" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then echo "the background command exited before it was ready:" >&2; tail -n 40 "$log" >&2; return 1; fi
    sleep 0.2; waited=$((waited + 1))
    if [ $waited -ge 1500 ]; then echo "the background command was not ready after 300 s:" >&2; tail -n 40 "$log" >&2; return 1; fi
  done
  echo "(ready: $(grep -m1 -E "$pattern" "$log"))"
}
"""


def logical_lines(code: str) -> list[str]:
    """Shell lines with their ``\\`` continuations joined."""
    out, cur = [], ""
    for line in code.split("\n"):
        if line.rstrip().endswith("\\") and not line.lstrip().startswith("#"):
            cur += line.rstrip()[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    if cur:
        out.append(cur)
    return out


def shell_script(code: str, bg_dir: pathlib.Path) -> str:
    """A block as the script that runs it: long-running commands go to the background."""
    out = [SHELL_PRELUDE]
    for line in logical_lines(code):
        stripped = line.strip()
        command = re.sub(r"\s+#.*$", "", stripped) if not stripped.startswith("#") else ""
        for pattern, ready in LONG_RUNNING:
            if command and pattern.search(command):
                n = len(list(bg_dir.glob("bg-*.log")))
                log = bg_dir / f"bg-{n}.log"
                log.touch()
                out.append(f"{command} > {shlex.quote(str(log))} 2>&1 &")
                out.append(f"echo $! >> {shlex.quote(str(bg_dir / 'pids'))}")
                if ready:
                    out.append(f"__docs_wait {shlex.quote(str(log))} {shlex.quote(ready)} $!")
                else:
                    out.append("sleep 1")
                break
        else:
            out.append(line)
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- a page's run

class PageRun:
    """Run a page's steps in ``work`` with ``env``; ``close()`` stops what it started."""

    def __init__(self, work: pathlib.Path, env: dict[str, str]):
        self.work = work
        self.env = dict(env)
        self.state = work.parent / (work.name + "-state")
        self.state.mkdir(exist_ok=True)
        self.env["DOCS_ENV"] = str(self.state / "env.sh")
        self.env["DOCS_TOOLS"] = str(REPO / "tests" / "docs_tools.py")
        self.session: subprocess.Popen | None = None
        self.session_log = self.state / "python.log"
        self._results: int | None = None
        self.groups: list[int] = []
        self.timings: list[tuple[str, str, float]] = []  # (where, kind, seconds)

    # python ------------------------------------------------------------------
    def _session(self) -> subprocess.Popen:
        if self.session is None or self.session.poll() is not None:
            r, w = os.pipe()
            log = open(self.session_log, "ab")
            sock = self.env.get("DOCS_QVL_SOCKET")  # forked from the warm process when there is one
            command = ([sys.executable, str(REPO / "tests" / "docs_zygote.py"), "session", sock, str(w)] if sock else
                       [sys.executable, str(REPO / "tests" / "docs_session.py"), str(w)])
            self.session = subprocess.Popen(command, cwd=self.work, env=self.env, stdin=subprocess.PIPE, stdout=log,
                                            stderr=subprocess.STDOUT, pass_fds=(w,), start_new_session=True)
            os.close(w)
            log.close()
            self._results = r
        return self.session

    def run_python(self, step: Step) -> None:
        proc = self._session()
        offset = self.session_log.stat().st_size
        assert proc.stdin is not None and self._results is not None
        proc.stdin.write((json.dumps({"code": step.code, "where": step.where}) + "\n").encode())
        proc.stdin.flush()
        ready, _, _ = select.select([self._results], [], [], BLOCK_TIMEOUT)
        reply = os.read(self._results, 1 << 20).decode() if ready else ""
        if not reply:
            alive = proc.poll() is None
            self.close_session()
            raise DocsError(f"{step.where}: the Python block " + ("did not finish in %d s" % BLOCK_TIMEOUT if alive
                            else "ended the Python process") + "\n" + self._tail(self.session_log, offset))
        result = json.loads(reply)
        if not result["ok"]:
            raise DocsError(f"{step.where}: the Python block failed:\n{result['error']}\n"
                            f"--- output ---\n{self._tail(self.session_log, offset)}")

    def close_session(self) -> None:
        if self.session is not None:
            if self.session.poll() is None:
                self.session.stdin.close()  # type: ignore[union-attr]
                try:
                    self.session.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(self.session.pid, signal.SIGKILL)
                    self.session.wait()
            if self._results is not None:
                os.close(self._results)
            self.session, self._results = None, None

    # bash --------------------------------------------------------------------
    def run_bash(self, step: Step) -> str:
        script = shell_script(step.code, self.state)
        proc = subprocess.Popen(["bash", "-c", script], cwd=self.work, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.groups.append(proc.pid)
        try:
            out, _ = proc.communicate(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            raise DocsError(f"{step.where}: the shell block did not finish in {BLOCK_TIMEOUT:.0f} s:\n"
                            + out.decode(errors="replace")[-4000:])
        text = out.decode(errors="replace")
        (self.state / f"bash-{step.line}.out").write_text(text)  # kept for a look after a pass, too
        if proc.returncode != 0:
            raise DocsError(f"{step.where}: the shell block exited with {proc.returncode}:\n{step.code}\n"
                            f"--- output ---\n{text[-6000:]}")
        if "(no hits)" in text:  # qvl search's empty answer: an example that finds nothing shows nothing
            raise DocsError(f"{step.where}: a documented search found nothing:\n{step.code}\n--- output ---\n"
                            f"{text[-6000:]}")
        return text

    # background --------------------------------------------------------------
    def stop_background(self) -> None:
        pids_file = self.state / "pids"
        pids = [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []
        for pid in pids:
            with _suppress():
                os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        for pid in pids:
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if _alive(pid):
                with _suppress():
                    os.kill(pid, signal.SIGKILL)
        for pgid in self.groups:
            with _suppress():
                os.killpg(pgid, signal.SIGKILL)
        self.groups.clear()
        pids_file.unlink(missing_ok=True)

    def run(self, steps: list[Step]) -> list[str]:
        """Run every step; returns the skipped blocks as ``where: kind: reason``."""
        skipped = []
        for step in steps:
            started = time.monotonic()
            try:
                if step.skip:
                    skipped.append(f"{step.where}: {step.skip[0]}: {step.skip[1]}")
                elif step.kind in ("python", "given"):
                    self.run_python(step)
                elif step.kind == "bash":
                    self.run_bash(step)
                elif step.kind == "stop-background":
                    self.stop_background()
            finally:
                self.timings.append((step.where, step.kind, time.monotonic() - started))
        return skipped

    def close(self) -> None:
        self.close_session()
        self.stop_background()

    @staticmethod
    def _tail(path: pathlib.Path, offset: int) -> str:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")[-6000:]


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], (ProcessLookupError, PermissionError))  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not our child) counts as gone
        return pathlib.Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------- models and files

def build_hub_cache(cache: pathlib.Path) -> pathlib.Path:
    """A Hugging Face cache (``HF_HUB_CACHE``) whose :data:`DOCS_MODELS` are tiny random checkpoints."""
    from embedder.testing import build_tiny_checkpoint

    commit = "0" * 40
    for seed, (repo_id, (kind, widths)) in enumerate(DOCS_MODELS.items()):
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        build_tiny_checkpoint(repo / "snapshots" / commit, kind=kind, seed=seed, widths=widths)
    return cache


def write_reader_files(work: pathlib.Path, checkpoint: pathlib.Path | None = None) -> None:
    """The files a reader of the docs has at hand: photos, clips, tables, a PDF, an eval set."""
    import numpy as np
    from PIL import Image

    def image(path: pathlib.Path, seed: int, color: tuple[int, int, int] = (128, 128, 128)) -> None:
        rng = np.random.default_rng(seed)
        arr = (rng.random((64, 96, 3)) * 80 + np.array(color) * 0.7).clip(0, 255).astype("uint8")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path)

    colors = {"cat": (200, 60, 50), "dog": (140, 90, 40), "bike1": (220, 30, 30), "bike7": (40, 40, 200)}
    for i, (name, rgb) in enumerate(colors.items()):
        image(work / "photos" / f"{name}.jpg", i, rgb)
    (work / "photos" / "cat.txt").write_text("a cat on a sofa")
    (work / "photos" / "dog.txt").write_text("Rex on the beach")
    (work / "photos" / "notes.txt").write_text("a bowl of ramen")
    for i, name in enumerate(["car.jpg", "cat.jpg", "dog.jpg", "beach.jpg", "query.jpg", "f0.jpg", "f1.jpg",
                              "f2.jpg"]):
        image(work / name, 10 + i)
    for i, name in enumerate(["a5.png", "a6.png", "a7.png"]):
        image(work / "img" / name, 20 + i)
    (work / "products.csv").write_text(
        "sku,title,picture,price,color\n"
        "A5,red running shoes,img/a5.png,79,red\n"
        "A6,blue rain jacket,img/a6.png,120,blue\n"
        "A7,green hiking boots,img/a7.png,99,green\n")
    (work / "rows.jsonl").write_text(
        '{"id": "r1", "text": "a red bicycle"}\n{"id": "r2", "image": "photos/bike1.jpg"}\n')
    for name in ("beach.mp4", "surf.mp4"):
        write_video(work / "clips" / name, seconds=2)
    write_video(work / "talks" / "keynote.mp4", seconds=4)
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": ["v1", "v2"], "sku": ["v1", "v2"], "caption": ["waves", "a surfer"],
                             "title": ["waves", "a surfer"], "picture": ["photos/dog.jpg", "photos/cat.jpg"],
                             "clip": ["clips/beach.mp4", "clips/surf.mp4"]}), work / "items.parquet")
    import sqlite3

    (work / "media").mkdir(exist_ok=True)
    for i, name in enumerate(["s1.png", "s2.png"]):
        image(work / "media" / name, 30 + i)
    with sqlite3.connect(work / "shop.db") as db:
        db.execute("CREATE TABLE products (sku TEXT PRIMARY KEY, title TEXT, picture TEXT)")
        db.executemany("INSERT INTO products VALUES (?, ?, ?)", [("s1", "a red scarf", "s1.png"),
                                                                ("s2", "a blue mug", "s2.png")])
    write_pdf(work / "reports" / "q3.pdf", ["Revenue by quarter", "Costs by region"])
    eval_set = work / "my-set"
    (eval_set / "img").mkdir(parents=True, exist_ok=True)
    corpus = []
    for i in range(6):
        image(eval_set / "img" / f"d{i}.png", 40 + i)
        corpus.append({"id": f"d{i}", "text": f"document {i}", "image": f"img/d{i}.png"})
    (eval_set / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (eval_set / "queries.jsonl").write_text('{"id": "q1", "text": "document 1"}\n{"id": "q2", "text": "document 4"}\n')
    (eval_set / "qrels.tsv").write_text("q1\td1\t1\nq2\td4\t1\n")
    if checkpoint is not None:
        (work / "ckpt").symlink_to(checkpoint)
    for name in ("examples", "benchmarks", "tests", "pyproject.toml"):
        (work / name).symlink_to(REPO / name)


def write_video(path: pathlib.Path, seconds: int, fps: int = 2) -> None:
    import av
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(seconds * fps):
            arr = np.zeros((48, 64, 3), dtype="uint8")
            arr[:, :, 0] = (i * 40) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_pdf(path: pathlib.Path, pages: list[str]) -> None:
    from fpdf import FPDF

    path.parent.mkdir(parents=True, exist_ok=True)
    pdf = FPDF()
    for text in pages:
        pdf.add_page()
        pdf.set_font("helvetica", size=18)
        pdf.multi_cell(0, 12, text)
    pdf.output(str(path))


def start_warm_qvl(folder: pathlib.Path, env: dict[str, str]) -> tuple[subprocess.Popen, pathlib.Path]:
    """Start :mod:`tests.docs_zygote` (torch and transformers imported once) and a ``qvl`` that asks it.

    Returns the server process and a folder to put first on PATH, whose ``qvl`` runs each
    command in a fork of that server (``DOCS_QVL_SOCKET`` in the environment names it).
    """
    folder.mkdir(parents=True, exist_ok=True)
    sock = folder / "qvl.sock"
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "docs_zygote.py"), "serve", str(sock)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if line.strip() != "ready":
        proc.kill()
        raise DocsError(f"the warm qvl did not start: {line}{proc.stdout.read().decode()[-3000:]}")
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "qvl"
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(REPO / "tests" / "docs_zygote.py"))} '
                       'client "$DOCS_QVL_SOCKET" "$@"\n')
    wrapper.chmod(0o755)
    return proc, bin_dir


PORT = re.compile(r"(?:localhost:|127\.0\.0\.1:|--port[ =]|--grpc-port[ =]|grpc=)(\d{4,5})\b")


@contextlib.contextmanager
def port_locks(page: pathlib.Path) -> Iterator[list[int]]:
    """Hold a machine-wide lock on each fixed port the page names (``localhost:8080``, ``--port 8000``),
    so two pages (two pytest workers, two checkouts) never start servers on the same port at once."""
    import fcntl

    ports = sorted({int(p) for p in PORT.findall(page.read_text())})
    folder = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / "qvl-docs-port-locks"
    folder.mkdir(exist_ok=True)
    handles = []
    try:
        for port in ports:  # in order: no deadlock between two pages
            handle = open(folder / f"{port}.lock", "w")
            fcntl.flock(handle, fcntl.LOCK_EX)
            handles.append(handle)
        yield ports
    finally:
        for handle in handles:
            handle.close()

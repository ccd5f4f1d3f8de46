"""A throw-away PostgreSQL (with pgvector) for the tests.

The server itself is :func:`connectors.localdb.start_postgres` (what ``qvl db postgres``
runs), here with trust authentication and the fast, crash-unsafe settings a throw-away
server can afford. :func:`test_server` starts it on 127.0.0.1 with a free port, in
``<basetemp>/qvl-postgres``, and returns a :class:`PgServer` (``dsn``, ``url(driver)``,
``stop()``). The server is found again by its directory, so every test module (and
:mod:`tests.connectors.backend_pgvector`) of a session shares one server, and it is stopped
when the session ends. With ``PG_TEST_DSN`` (or ``DATABASE_URL``) set, that server is used
instead and nothing is started.

Test modules import the fixture: ``from tests.connectors.postgres_server import pg_dsn``.
"""
from __future__ import annotations

import atexit
import os
import pathlib
from dataclasses import dataclass

import pytest

from connectors.localdb.postgres import FAST_UNSAFE_SETTINGS, PostgresServer, start_postgres

SERVER_DIR = "qvl-postgres"
ENV_VARS = ("PG_TEST_DSN", "DATABASE_URL")


@dataclass(frozen=True)
class PgServer(PostgresServer):
    """A running test server. ``data_dir`` is None for an external server (never stopped)."""

    def stop(self, *, mode: str = "immediate", timeout: float = 20.0) -> None:
        """Stop an embedded server (idempotent); a throw-away server needs no clean shutdown."""
        super().stop(mode=mode, timeout=timeout)


def external_dsn() -> str | None:
    for var in ENV_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def start_embedded(base: pathlib.Path) -> PgServer:
    """Start (or find already running) an embedded server under ``base/qvl-postgres``."""
    started = start_postgres(pathlib.Path(base) / SERVER_DIR, password=False, settings=FAST_UNSAFE_SETTINGS,
                             reuse_running=True, create_extension=False)
    server = PgServer(started.dsn, started.data_dir, started.user)
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
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        skip_or_fail(f"cannot start or reach PostgreSQL with pgvector: {exc} {detail[-500:]}")
        raise
    request.addfinalizer(server.stop)
    return server


@pytest.fixture(scope="session")
def pg_dsn(pg_server: PgServer) -> str:
    """DSN of the session's PostgreSQL."""
    return pg_server.dsn

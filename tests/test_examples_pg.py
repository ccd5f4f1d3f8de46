"""The Postgres examples run end to end (``--offline-test-model``) against the test server."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from tests.connectors.postgres_server import pg_dsn, pg_server  # noqa: F401 - fixtures

pytest.importorskip("psycopg")
pytest.importorskip("pgvector")

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_example(name: str, dsn: str, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name), "--dsn", dsn, "--offline-test-model",
                           *extra], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert "RANDOM weights" in proc.stderr   # the tiny checkpoint's warning
    return proc


def _tables(dsn: str, prefix: str) -> list[str]:
    import psycopg

    with psycopg.connect(dsn) as c:
        return [r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (prefix + "%",))]


def test_pg_orm_example(pg_dsn):
    out = run_example("pg_orm.py", pg_dsn).stdout
    lines = [ln for ln in out.splitlines() if ln.startswith("  ")]
    assert "products under 100" in out and len(lines) == 3
    assert all(int(ln.split()[-2]) < 100 for ln in lines)  # the user's WHERE applied (price column)
    assert _tables(pg_dsn, "qvl_example_products") == []


def test_pg_sql_example(pg_dsn):
    out = run_example("pg_sql.py", pg_dsn).stdout
    assert "5 rows embedded, 0 failed" in out and "vector(128)" in out
    search = [ln.split()[1] for ln in out.splitlines() if "store.search:" in ln]
    raw = [ln.split()[2] for ln in out.splitlines() if "raw SQL:" in ln]
    assert len(search) == 3 and search == raw   # store.search and the raw <=> query agree
    assert "3" not in search                    # price 420 filtered out
    assert _tables(pg_dsn, "qvl_example_listings") == []


def test_pg_sync_worker_example(pg_dsn):
    out = run_example("pg_sync_worker.py", pg_dsn).stdout
    assert "20 existing rows queued" in out
    assert "after the changes: 21 rows, 20 embedded, 0 queued, 1 failed" in out
    assert "failed row 101 after 2 attempts" in out
    assert "best match for 'baking bread'" in out
    assert _tables(pg_dsn, "qvl_example_notes") == []

"""``examples/milvus_quickstart.py`` runs end to end, offline (tiny random checkpoints, Milvus Lite)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("pymilvus", reason="the Milvus example needs the 'milvus' extra (pymilvus, milvus-lite)")

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "milvus_quickstart.py"


def section(stdout: str, title_end: str) -> list[str]:
    """The hit lines printed under the title ending in ``title_end``."""
    lines = stdout.split(title_end, 1)[1].splitlines()[1:]
    return [line.strip() for line in lines[:next((i for i, x in enumerate(lines) if not x.strip()), len(lines))]]


def test_milvus_quickstart_runs_offline(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run([sys.executable, str(EXAMPLE), "--offline-test-model", "--device", "cpu",
                           "--db", str(tmp_path / "quickstart.db")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"the example failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    out = proc.stdout
    assert "RANDOM weights" in proc.stderr
    assert "(dim 128): wrote 7 rows, 0 failed []; 7 rows stored" in out
    assert all(len(section(out, title)) == 3 for title in ("'a red fruit':", "embedded as a query):"))
    assert section(out, "finds its own row first):")[0].startswith("img-blue ")  # the image finds itself
    assert all(line.endswith("color=red") for line in section(out, '(color == "red"):'))
    reranked = section(out, "reranked:")
    assert len(reranked) == 3 and all("rerank=" in line and "color=" in line for line in reranked)
    assert (tmp_path / "quickstart_images" / "blue_circle.png").exists()

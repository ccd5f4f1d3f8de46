"""``qvl search --where`` with the portable JSON filter, as a new process of the console script."""
from __future__ import annotations

import json
import subprocess
import sys

from tests.test_cli_e2e import ROOT, assert_clean_stderr, clean_env, error_lines, qvl

QUOTED = 'red" or color != "'


def test_search_filter_json_on_milvus_lite(tmp_path, tiny_embedding_path):
    db = f"milvus:{tmp_path / 'filters.db'}"
    # rows written by another process: Milvus Lite holds its file until the writing process ends
    setup = f"""
import numpy as np, connectors
rng = np.random.RandomState(3)
colors = ["red", "blue", {QUOTED!r}, "red", "green", "blue"]
rows = [{{"id": f"r{{i}}", "vector": rng.normal(size=64).astype(np.float32), "text": f"row {{i}}", "color": c,
         "metadata": {{"year": 2018 + i}}}} for i, c in enumerate(colors)]
with connectors.connect({db!r}, collection="items", dim=64) as store:
    store.create(fields={{"color": str}})
    assert store.upsert(rows).ok
"""
    env = clean_env(PYTHONPATH=str(ROOT))  # this checkout, wherever the editable install points
    made = subprocess.run([sys.executable, "-c", setup], capture_output=True, text=True, timeout=240, cwd=tmp_path,
                          env=env)
    assert made.returncode == 0, made.stderr

    def search(flt: str):
        return qvl("search", "anything", "--in", db, "--collection", "items", "--model", tiny_embedding_path,
                   "-k", 10, "--json", "--where", flt, cwd=tmp_path, env=env)

    cases = {
        '{"color": "red"}': {"r0", "r3"},
        '{"color": {"$in": ["blue", "green"]}, "year": {"$gte": 2021}}': {"r4", "r5"},  # year: a metadata key
        '{"$or": [{"color": {"$ne": "red"}, "year": {"$lt": 2021}}, {"year": 2023}]}': {"r1", "r2", "r5"},
        json.dumps({"color": QUOTED}): {"r2"},  # quotes stay inside the value
        'color == "red"': {"r0", "r3"},  # not JSON: the Milvus expression, as before
    }
    old_name = qvl("search", "anything", "--in", db, "--collection", "items", "--model", tiny_embedding_path,
                   "-k", 10, "--json", "--filter", '{"color": "red"}', cwd=tmp_path, env=env)
    assert old_name.returncode == 0 and {h["id"] for h in json.loads(old_name.stdout)["hits"]} == {"r0", "r3"}
    for flt, want in cases.items():
        proc = search(flt)
        assert proc.returncode == 0, (flt, proc.stderr)
        assert_clean_stderr(proc)
        assert {h["id"] for h in json.loads(proc.stdout)["hits"]} == want, flt

    bad = search('{"color": {"$like": "r%"}}')
    assert bad.returncode == 2 and bad.stdout == ""
    assert_clean_stderr(bad)
    (line,) = error_lines(bad)
    assert "'color'" in line and "unknown operator '$like'" in line and "$in" in line
    broken = search('{"color": "red"')
    assert broken.returncode == 2 and "not valid JSON" in error_lines(broken)[0]

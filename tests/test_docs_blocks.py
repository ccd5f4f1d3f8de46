"""Every fenced Python and shell block of README.md and docs/*.md runs (issue 23).

How a page is run (its own folder, one Python process per page, shell blocks in bash, the
models from a Hugging Face cache of tiny random checkpoints, an embedded PostgreSQL behind
the docs' ``postgresql://app@localhost/...`` URLs) and the markers a page may carry: see
:mod:`tests.docs_harness`. A block is skipped only when marked as needing a GPU or the
network, and then it is reported as a skipped test with its reason. This file runs the pages
not in :data:`tests.docs_fixtures.MORE`; tests/test_docs_blocks_more.py runs those.
"""
from __future__ import annotations

import pytest

from tests.docs_fixtures import REPO, SKIPPED, STEPS, docs_pg, hub_cache, pages, run_page, warm_qvl  # noqa: F401
from tests.docs_harness import DocsError, parse_page, shell_script

PAGES = pages(more=False)


def test_every_page_is_parsed_and_most_blocks_run():
    blocks = [s for steps in STEPS.values() for s in steps if s.kind in ("python", "bash") and not s.hidden]
    assert len(blocks) >= 60, len(blocks)
    assert len(SKIPPED) <= len(blocks) // 5, [s.where for s in SKIPPED]


@pytest.mark.parametrize("text, error", [
    ("<!-- docs-test: skip slow: takes long -->\n```bash\nqvl demo\n```\n", "only for `gpu: REASON`"),
    ("<!-- docs-test: skip gpu -->\n```bash\nqvl demo\n```\n", "only for `gpu: REASON`"),
    ("<!-- docs-test: skip network: a remote host -->\n```text\nout\n```\n", "not run"),
    ("```\nqvl demo\n```\n", "without a language"),
    ("<!-- docs-test: given nobody -->\n", "unknown given"),
    ("<!-- docs-test: later -->\n", "unknown docs-test marker"),
    ("```python\nx = 1\n", "never closed"),
])
def test_a_page_skips_only_for_a_gpu_or_the_network_and_names_every_language(tmp_path, text, error):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(DocsError, match=error):
        parse_page(page)


def test_markers_and_blocks_become_steps_in_page_order(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Quoted in prose: `<!-- docs-test: skip slow: x -->` is not a marker.\n"
                    "<!-- docs-test: given emb -->\n<!-- docs-test: setup bash\nqvl db weaviate --data ./wv\n-->\n"
                    "<!-- docs-test: skip network: a remote host -->\n```bash\nqvl ingest x --model http://h:1\n```\n"
                    "  ```python\n  hits = [1]\n  ```\n<!-- docs-test: stop-background -->\n")
    steps = parse_page(page)
    assert [(s.kind, s.hidden, s.skip) for s in steps] == [
        ("given", True, None), ("bash", True, None), ("bash", False, ("network", "a remote host")),
        ("python", False, None), ("stop-background", True, None)]
    assert steps[3].code == "hits = [1]" and steps[2].where.endswith("page.md:7")
    script = shell_script("export K=1\nK=2 qvl serve --port 8000   # runs until Ctrl-C\nqvl search x", tmp_path)
    assert "qvl serve --port 8000 > " in script and "__docs_wait" in script and script.rstrip().endswith("qvl search x")


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_blocks_run(page, tmp_path, hub_cache, docs_pg, warm_qvl):  # noqa: F811
    run_page(page, tmp_path, hub_cache, docs_pg, warm_qvl)


@pytest.mark.parametrize("step", SKIPPED, ids=[s.where for s in SKIPPED])
def test_marked_block_is_skipped_with_its_reason(step):
    pytest.skip(f"{step.where} needs {step.skip[0]}: {step.skip[1]}")

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

PAGES = pages(more=False)


def test_every_page_is_parsed_and_most_blocks_run():
    blocks = [s for steps in STEPS.values() for s in steps if s.kind in ("python", "bash") and not s.hidden]
    assert len(blocks) >= 60, len(blocks)
    assert len(SKIPPED) <= len(blocks) // 5, [s.where for s in SKIPPED]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_blocks_run(page, tmp_path, hub_cache, docs_pg, warm_qvl):  # noqa: F811
    run_page(page, tmp_path, hub_cache, docs_pg, warm_qvl)


@pytest.mark.parametrize("step", SKIPPED, ids=[s.where for s in SKIPPED])
def test_marked_block_is_skipped_with_its_reason(step):
    pytest.skip(f"{step.where} needs {step.skip[0]}: {step.skip[1]}")

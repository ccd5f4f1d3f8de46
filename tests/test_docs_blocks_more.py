"""The other half of the docs' pages (:data:`tests.docs_fixtures.MORE`): see tests/test_docs_blocks.py."""
from __future__ import annotations

import pytest

from tests.docs_fixtures import REPO, docs_pg, hub_cache, pages, run_page, warm_qvl  # noqa: F401

PAGES = pages(more=True)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_page_blocks_run(page, tmp_path, hub_cache, docs_pg, warm_qvl):  # noqa: F811
    run_page(page, tmp_path, hub_cache, docs_pg, warm_qvl)

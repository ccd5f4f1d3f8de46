"""Every relative link in README.md and docs/*.md resolves (issue 23).

A link to a file must name a file that exists; a link with ``#anchor`` must name a heading of
the target (README included) whose GitHub-style slug is that anchor. Links inside code blocks
and inline code are not links; absolute URLs are not checked (no network in the tests).
"""
from __future__ import annotations

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)\)")


def _prose(text: str) -> str:
    """The text outside fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: pathlib.Path) -> set[str]:
    text = re.sub(r"^```.*?^```[^\n]*$", "", path.read_text(), flags=re.S | re.M)
    seen: dict[str, int] = {}
    found = set()
    for m in re.finditer(r"^#{1,6} +(.+?) *#*$", text, re.M):
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def test_the_pages_exist():
    names = {p.name for p in PAGES if p.parent.name == "docs"}
    assert {"README.md", "embedder.md", "databases.md", "milvus.md", "postgres.md", "weaviate.md", "qdrant.md",
            "faiss.md", "service.md", "ingest.md", "search.md", "security.md", "performance.md",
            "operations.md", "testing.md"} <= names
    assert (REPO / "CHANGELOG.md").is_file()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page: pathlib.Path):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):   # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no file {dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not broken, "\n".join(broken)


def test_the_slugs_are_githubs():
    assert slug("The embedding service: `qvl serve`") == "the-embedding-service-qvl-serve"
    assert slug("Postgres / pgvector") == "postgres--pgvector"
    assert slug("1. Client-side vectors (named vectors at several MRL dims)") == \
        "1-client-side-vectors-named-vectors-at-several-mrl-dims"

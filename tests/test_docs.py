"""The README and docs/*.md link only to files that exist, and to headings that exist in them (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")
IMAGE = re.compile(r'<img src="([^"]+)"')


def anchors(markdown: str) -> set[str]:
    """GitHub's anchor of each heading: lower case, punctuation dropped, spaces as hyphens (code spans included)."""
    found = set()
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)  # a `# comment` in a code block is not a heading
    for heading in re.findall(r"^#{1,6} (.+)$", text, flags=re.M):
        found.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return found


def links(document: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", document.read_text(), flags=re.S)
    return LINK.findall(text) + IMAGE.findall(text)


def test_the_docs_exist_and_the_readme_links_each():
    names = {path.name for path in DOCUMENTS[1:]}
    assert {"using.md", "api.md", "serving.md", "faces.md", "training.md", "architecture.md"} <= names
    readme_links = links(ROOT / "README.md")
    assert all(f"docs/{name}" in readme_links for name in names), readme_links


def test_the_readme_is_read_in_five_minutes():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 200


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_relative_link_points_to_an_existing_file_and_heading(document):
    for target in links(document):
        if re.match(r"[a-z]+:", target):  # https:, mailto:, data:
            continue
        path, _, anchor = target.partition("#")
        linked = (document.parent / path).resolve() if path else document
        assert linked.exists(), f"{document.name}: {target} points to no file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked.read_text()), f"{document.name}: {target} points to no heading"

"""The documentation keeps its house: a short README, links that lead somewhere, no outside citations.

The README is the front door (at most 300 lines); the reference lives in docs/. Every relative
link in README.md and docs/*.md must lead to a file of the repository and, with an #anchor, to
a heading of that file. No document cites papers that are not in the repository (a contract,
a design note, issue numbers, the seed documents): the repository stands alone.
docs/pending/ holds drafts waiting to be folded in, and is not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import ROOT

README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINKED = [README, *DOCS]
MAX_README_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"`[^`]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CITATIONS = {
    "a section of the contract": re.compile(r"SPEC\s*§|§\s*\d|\bSPEC\.md\b"),
    "the design note": re.compile(r"\bDESIGN\.md\b|shared/DESIGN"),
    "a file outside the repository": re.compile(r"\bshared/(SPEC|DESIGN|STYLE|seeds)\b"),
    "a seed document": re.compile(r"\bseeds?\s+0\d\d\b|\bseeds/"),
    "an issue number": re.compile(r"\bissues?\s+#?\d+\b", re.IGNORECASE),
}


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file (repeated headings get -1, -2 ...)."""
    found: set[str] = set()
    for _, line in prose_lines(path):
        match = HEADING.match(line)
        if match:
            base = name = slug(match.group(2))
            count = 0
            while name in found:
                count += 1
                name = f"{base}-{count}"
            found.add(name)
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every relative link or image of a markdown file."""
    found = []
    for number, line in prose_lines(path):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ... are not ours
                found.append((number, target))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """One line per relative link of path that leads to no file, or to no heading of it."""
    problems = []
    for number, target in links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not dest.is_file():
            problems.append(f"{where}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{where}: no heading with that anchor in {dest.name}")
    return problems


def repository_docs() -> list[Path]:
    """Every markdown file of the repository, but drafts in docs/pending/ and hidden or generated folders."""
    pending = ROOT / "docs" / "pending"
    return sorted(
        p
        for p in ROOT.rglob("*.md")
        if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
        and pending not in p.parents
        and "egg-info" not in str(p)
    )


def test_the_readme_is_a_front_door_of_at_most_300_lines():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move reference material into docs/"


def test_the_readme_links_every_reference_page():
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in links(README)}
    assert [d.name for d in DOCS if d.resolve() not in linked] == []


@pytest.mark.parametrize("path", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_and_heading(path):
    assert broken_links(path) == []


def test_a_broken_link_or_anchor_is_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Some heading: `code` (here)\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md#some-heading-code-here) [gone](missing.md) [bad](other.md#nope)\n"
        "```\n[in code](ignored.md)\n```\n[web](https://example.org/x) `[span](ignored.md)`\n",
        encoding="utf-8",
    )
    assert [target for _, target in links(page)] == ["other.md#some-heading-code-here", "missing.md", "other.md#nope"]
    assert broken_links(page, tmp_path) == [
        "page.md:1: missing.md: no such file",
        "page.md:1: other.md#nope: no heading with that anchor in other.md",
    ]


def test_no_document_cites_papers_outside_the_repository():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()[:100]}"
        for path in repository_docs()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for what, pattern in CITATIONS.items()
        if pattern.search(line)
    ]
    assert found == []


@pytest.mark.parametrize(
    "line",
    ["as SPEC §8 says", "see shared/DESIGN.md", "seed 002's spelling", "since issue 13", "Issue #9's figures"],
)
def test_each_kind_of_outside_citation_is_caught(line):
    assert any(pattern.search(line) for pattern in CITATIONS.values())


@pytest.mark.parametrize("line", ["the seed network on ports 9000-9006", "From the seeds", "see docs/protocol.md"])
def test_the_seed_network_and_our_own_docs_are_not_citations(line):
    assert not any(pattern.search(line) for pattern in CITATIONS.values())


CODE_SUFFIXES = {".py", ".proto", ".tmpl"}
CODE_NAMES = {"Makefile", "pyproject.toml", "run"}  # run: .ci/run
NOT_CODE = {
    "transfer_pb2.py",
    "transfer_pb2.pyi",
    "transfer_pb2_grpc.py",
    "test_docs.py",
}  # generated; this file's examples


def code_files() -> list[Path]:
    """Every source, template and build file of the repository (not docs/, not hidden or generated folders)."""
    out = []
    for path in sorted(ROOT.rglob("*")):
        parts = path.relative_to(ROOT).parts
        hidden = any(
            p.startswith(".") and p != ".ci" or p in ("__pycache__", "docs") or p.endswith(".egg-info")
            for p in parts[:-1]
        )
        if hidden or not path.is_file() or path.name in NOT_CODE:
            continue
        if path.suffix in CODE_SUFFIXES or path.name in CODE_NAMES:
            out.append(path)
    return out


def test_code_cites_the_repositorys_docs_never_a_document_outside_it():
    files = code_files()
    assert ROOT / ".ci" / "run" in files and ROOT / "proto" / "common" / "transfer.proto" in files
    found = [
        f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for what, pattern in CITATIONS.items()
        if pattern.search(line)
    ]
    assert found == [], "cite docs/*.md instead:\n" + "\n".join(found)

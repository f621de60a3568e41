"""The documentation site builds with warnings as errors, and every internal link of the
built HTML resolves to an existing file and anchor."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from docsite import REPO, Site

# The first test to ask for the site pays for its build (a minute on a loaded 2-core box).
pytestmark = [pytest.mark.docs, pytest.mark.timeout(900)]


class _Links(HTMLParser):
    """Collects the ids and the href/src targets of one HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.targets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if key in ("id", "name") and value:
                self.ids.add(value)
            if key in ("href", "src") and value:
                self.targets.append(value)


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def internal_link_problems(root: Path) -> tuple[int, list[str]]:
    """(links checked, problems) over every HTML page under ``root``: a relative link whose
    file does not exist, or whose ``#fragment`` is no id of the page it points to."""
    pages = {p: _parse(p) for p in root.rglob("*.html")}
    checked, problems = 0, []
    for page, links in pages.items():
        for target in links.targets:
            parts = urlsplit(target)
            if parts.scheme or parts.netloc or target.startswith("//"):
                continue  # external: not this site's business
            checked += 1
            dest = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if dest.is_dir():
                dest = dest / "index.html"
            where = f"{page.relative_to(root)} -> {target}"
            if not dest.is_file():
                problems.append(f"{where}: no file {dest}")
            elif parts.fragment and dest.suffix == ".html":
                ids = pages[dest].ids if dest in pages else _parse(dest).ids
                if unquote(parts.fragment) not in ids:
                    problems.append(f"{where}: no anchor #{parts.fragment}")
    return checked, problems


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(site: Site):
    assert site.returncode == 0, site.log[-4000:]
    assert "WARNING" not in site.log and "ERROR" not in site.log, site.log[-4000:]
    for page in ("index.html", "getting-started.html", "design.html", "architecture.html",
                 "benchmarks.html", "reference/losses.html", "reference/models.html",
                 "reference/configuration.html", "api/losses.html", "api/models.html",
                 "api/train.html", "api/analysis.html", "api/experiments.html"):
        assert (site.html / page).is_file(), page
    # every guide page written in docs/guide (the glob toctree) is built and reachable
    index = (site.html / "index.html").read_text(encoding="utf-8")
    for md in sorted((REPO / "docs" / "guide").glob("*.md")):
        assert (site.html / "guide" / f"{md.stem}.html").is_file(), md.name
        assert f'href="guide/{md.stem}.html"' in index, md.name


@pytest.mark.slow
def test_every_internal_link_resolves(site: Site):
    assert site.returncode == 0, site.log[-4000:]
    checked, problems = internal_link_problems(site.html)
    assert checked > 500  # the pages really link to each other (toc, API, source pages)
    assert problems == [], "\n".join(problems[:20])


def test_link_checker_finds_a_broken_link_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.html").write_text(
        '<p id="here"><a href="b.html#nowhere">x</a><a href="gone.html">y</a>'
        '<a href="#here">z</a><a href="https://example.org/x">w</a></p>')
    (tmp_path / "b.html").write_text('<h1 id="top">b</h1>')
    checked, problems = internal_link_problems(tmp_path)
    assert checked == 3
    assert len(problems) == 2
    assert "no anchor #nowhere" in problems[0] or "no anchor #nowhere" in problems[1]
    assert any("gone.html" in p for p in problems)


@pytest.mark.slow
def test_benchmarks_page_includes_results_md_rather_than_a_copy(site: Site):
    # the page holds RESULTS.md's own headings, and docs/ holds no copy of its text
    results = (REPO / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    first_heading = next(line[3:] for line in results.splitlines() if line.startswith("## "))
    page = (site.html / "benchmarks.html").read_text(encoding="utf-8")
    assert first_heading.split(" (")[0] in page
    for md in (REPO / "docs").rglob("*.md"):
        assert first_heading not in md.read_text(encoding="utf-8"), md


def test_docs_and_readme_refer_to_nothing_outside_the_repository():
    """The README and every page, example and generator of docs/ stand on their own: no
    ``../shared``, no machine paths, no design notes that a clone does not have."""
    outside = re.compile(r"\.\./shared|/work/|(?<![\w/])DESIGN\.md|\.\./DESIGN")
    files = [REPO / "README.md", *(p for p in (REPO / "docs").rglob("*")
                                   if p.is_file() and "_build" not in p.parts
                                   and p.suffix in (".md", ".rst", ".py", ".yaml", ".txt"))]
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()[:80]}"
             for p in files for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
             if outside.search(line)]
    assert len(files) > 20
    assert found == [], "\n".join(found)


def test_every_design_reference_names_a_section_of_docs_design_md():
    """``docs/design.md §N`` (and the older ``DESIGN.md §N``) in the code, configs and tests
    point at a section that docs/design.md has, headed ``## §N ...``."""
    design = (REPO / "docs" / "design.md").read_text(encoding="utf-8")
    sections = {int(n) for n in re.findall(r"^## §(\d+) ", design, re.M)}
    assert sections == set(range(1, 11))
    cited = re.compile(r"DESIGN\.md §(\d+)|design\.md §(\d+)|§(\d+) and §(\d+)")
    missing = []
    for top in ("src", "tests", "configs", "benchmarks", "docs"):
        for path in (REPO / top).rglob("*"):
            if not path.is_file() or path.suffix not in (".py", ".md", ".yaml", ".rst"):
                continue
            for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if "design.md" not in line.lower():
                    continue
                for match in cited.finditer(line):
                    n = int(next(g for g in match.groups() if g))
                    if n not in sections:
                        missing.append(f"{path.relative_to(REPO)}:{i}: §{n}")
    assert missing == [], "\n".join(missing)

"""The built site in a real browser: headless Chromium (Debian's ``chromium``) opens the
index page, the losses page and one API page, and the DOM it renders has the expected
headings and the losses table; a screenshot of each is saved in the test's folder."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from docsite import Site

# The first test to ask for the site pays for its build (a minute on a loaded 2-core box).
pytestmark = [pytest.mark.docs, pytest.mark.slow, pytest.mark.timeout(900)]

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


@pytest.fixture(scope="module")
def browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium on PATH (Debian: apt-get install chromium; .ci/run installs "
                "it when it runs as root)")


def _run(browser: str, tmp: Path, *args: str) -> str:
    cmd = [browser, "--headless", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
           "--hide-scrollbars",
           f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=3000", *args]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to sandbox as root
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


class _Dom(HTMLParser):
    """Headings (level, text), tables (classes, rows of cell texts) of a rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[tuple[int, str]] = []
        self.tables: list[tuple[list[str], list[list[str]]]] = []
        self._heading: list[str] | None = None
        self._level = 0
        self._cell: list[str] | None = None
        self._row: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if re.fullmatch(r"h[1-6]", tag):
            self._heading, self._level = [], int(tag[1])
        elif tag == "table":
            self.tables.append(((dict(attrs).get("class") or "").split(), []))
        elif tag == "tr" and self.tables:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if re.fullmatch(r"h[1-6]", tag) and self._heading is not None:
            self.headings.append((self._level, " ".join("".join(self._heading).split())))
            self._heading = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self.tables:
            self.tables[-1][1].append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        for part in (self._heading, self._cell):
            if part is not None:
                part.append(data)


def _dom(browser: str, tmp: Path, page: Path) -> _Dom:
    parsed = _Dom()
    parsed.feed(_run(browser, tmp, "--dump-dom", page.as_uri()))
    return parsed


def _screenshot(browser: str, tmp: Path, page: Path, name: str):
    import matplotlib.image

    png = tmp / f"{name}.png"
    _run(browser, tmp, "--window-size=1280,1600", f"--screenshot={png}", page.as_uri())
    pixels = matplotlib.image.imread(png)  # (H, W, 3|4) floats in [0, 1]
    assert pixels.shape[:2] == (1600, 1280)
    gray = pixels[..., :3].mean(axis=2)
    # a rendered page: mostly light background, with dark text on it, not a blank canvas
    assert (gray > 0.9).mean() > 0.5 and (gray < 0.3).mean() > 0.001, name
    return png


def test_index_page_renders_its_headings_and_navigation(site: Site, browser: str, tmp_path):
    assert site.returncode == 0, site.log[-4000:]
    dom = _dom(browser, tmp_path, site.html / "index.html")
    assert (1, "supkd¶") in dom.headings or (1, "supkd") in dom.headings, dom.headings
    page = _run(browser, tmp_path, "--dump-dom", (site.html / "index.html").as_uri())
    for caption in ("Start", "Guides", "Reference", "Design"):
        assert caption in page, caption
    for title in ("Getting started", "Losses", "Configuration", "API reference"):
        assert f">{title}</a>" in page, title
    assert _screenshot(browser, tmp_path, site.html / "index.html", "index").is_file()


def test_losses_page_renders_the_losses_table(site: Site, browser: str, tmp_path):
    from supkd.losses import LOSSES

    dom = _dom(browser, tmp_path, site.html / "reference" / "losses.html")
    assert dom.headings[0][1].startswith("Losses"), dom.headings[:3]
    tables = [rows for classes, rows in dom.tables if "supkd-losses" in classes]
    assert len(tables) == 1
    header, *rows = tables[0]
    assert header == ["name", "label", "paper / equation", "what it does",
                      "arguments (defaults)"]
    names = [row[0] for row in rows]
    assert set(LOSSES) <= set(names) and names[-1] == "SupConLoss"
    by_name = {row[0]: row for row in rows}
    assert by_name["supcon_kd"][2] == "Eq. 5"
    assert "temperature=0.1" in by_name["supcon_kd"][4]
    # one section heading per loss
    section_titles = {text.rstrip("¶") for level, text in dom.headings if level == 2}
    assert set(LOSSES) <= section_titles
    _screenshot(browser, tmp_path, site.html / "reference" / "losses.html", "losses")


def test_api_page_renders_the_documented_objects(site: Site, browser: str, tmp_path):
    page = site.html / "api" / "losses.html"
    dom = _dom(browser, tmp_path, page)
    assert dom.headings[0][1].startswith("supkd.losses"), dom.headings[:3]
    text = _run(browser, tmp_path, "--dump-dom", page.as_uri())
    for anchor in ("supkd.losses.build_loss", "supkd.losses.register_loss",
                   "supkd.losses.KDLoss", "supkd.losses.SupConKDLoss"):
        assert f'id="{anchor}"' in text, anchor
    _screenshot(browser, tmp_path, page, "api_losses")

"""Find the examples of the documentation pages: fenced code blocks and the files they
include (``literalinclude``), for ``test_examples.py``."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from docsite import DOCS, REPO

_FENCE = re.compile(r"^(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                    re.MULTILINE | re.DOTALL)
SHELL = {"bash", "sh", "shell", "console"}


@dataclass(frozen=True)
class Block:
    page: Path
    lang: str  # "python", "bash", "{literalinclude}", ...
    arg: str  # a directive's argument (the included file), else ""
    body: str


def pages() -> list[Path]:
    """Every Markdown page of the site, and the README (its commands are examples too)."""
    found = sorted(p for p in DOCS.rglob("*.md")
                   if "_build" not in p.parts and p.parent.name != "examples"
                   and p != DOCS / "README.md")
    return [REPO / "README.md", *found]


def blocks(page: Path) -> list[Block]:
    out = []
    for m in _FENCE.finditer(page.read_text(encoding="utf-8")):
        info = m.group("info").strip()
        lang, _, arg = info.partition(" ")
        out.append(Block(page, lang.lower(), arg.strip(), m.group("body")))
    return out


def included_files(page: Path) -> list[Path]:
    """The files a page's ``literalinclude`` blocks include, resolved from the page."""
    return [(page.parent / b.arg).resolve() for b in blocks(page)
            if b.lang == "{literalinclude}"]


def commands(body: str, lang: str = "bash") -> list[list[str]]:
    """The commands of a shell block as argument lists: comments dropped, ``\\``
    continuations joined, ``&&`` chains split, leading ``VAR=value`` assignments dropped. A
    terminal transcript (a ``console`` block, or one with ``$ `` prompts) holds commands only
    on its prompt lines; the other lines are their output."""
    text = re.sub(r"\\\n\s*", " ", body)
    lines = text.splitlines()
    if lang in ("console", "shell-session") or any(ln.startswith("$ ") for ln in lines):
        lines = [ln[2:] for ln in lines if ln.startswith("$ ")]
    out = []
    for line in lines:
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for tok in [*tokens, "&&"]:
            if tok == "&&":
                while current and re.fullmatch(r"[A-Z_]+=\S*", current[0]):
                    current.pop(0)
                if current:
                    out.append(current)
                current = []
            else:
                current.append(tok)
    return out

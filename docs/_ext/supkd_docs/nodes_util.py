"""Small builders of docutils nodes: generated tables never go through a parser, so text
from the code (comments, defaults) can never break the build with markup it happens to hold."""

from __future__ import annotations

import re
from collections.abc import Sequence

from docutils import nodes

# ``literal`` and :role:`~target` spans of docstring text; everything else stays plain text.
_SPANS = re.compile(r"``(.+?)``|:[\w:.-]+:`~?([^`<]+?)(?:\s*<[^`]*>)?`")


def inline(text: str) -> list[nodes.Node]:
    """``text`` as Text and literal nodes (``x`` and :role:`x` become literals)."""
    out: list[nodes.Node] = []
    pos = 0
    for match in _SPANS.finditer(text):
        if match.start() > pos:
            out.append(nodes.Text(text[pos:match.start()]))
        literal = match.group(1) or match.group(2).split(".")[-1]
        out.append(nodes.literal(literal, literal))
        pos = match.end()
    if pos < len(text):
        out.append(nodes.Text(text[pos:]))
    return out


def para(text: str) -> nodes.paragraph:
    return nodes.paragraph("", "", *inline(text))


def code(text: str) -> nodes.paragraph:
    return nodes.paragraph("", "", nodes.literal(text, text))


def table(header: Sequence[str] | None, rows: Sequence[Sequence[nodes.Node | str]],
          widths: Sequence[int] | None = None, classes: Sequence[str] = ()) -> nodes.table:
    """A table with a header row (none for ``header=None``); a cell is a node or a string
    (plain text)."""
    cols = len(header) if header is not None else len(rows[0])
    tbl = nodes.table(classes=["supkd-table", *classes])
    group = nodes.tgroup(cols=cols)
    tbl += group
    for width in widths or [1] * cols:
        group += nodes.colspec(colwidth=width)
    body = nodes.tbody()
    if header is not None:
        head = nodes.thead()
        group += head
        head += _row([nodes.paragraph(text=h) for h in header])
    group += body
    for cells in rows:
        body += _row([c if isinstance(c, nodes.Node) else para(str(c)) for c in cells])
    return tbl


def _row(cells: Sequence[nodes.Node]) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        entry += cell
        row += entry
    return row


def section(document: nodes.document, title: str, *, literal: bool = False,
            key: str | None = None) -> nodes.section:
    """A section titled ``title`` (as code when ``literal``) with a stable anchor
    (``key`` or the title), registered with the document so links and the toc find it."""
    sec = nodes.section()
    sec["ids"].append(nodes.make_id(key or title))
    sec["names"].append(nodes.fully_normalize_name(key or title))
    heading = nodes.title()
    heading += nodes.literal(title, title) if literal else nodes.Text(title)
    sec += heading
    document.note_implicit_target(sec, sec)
    return sec

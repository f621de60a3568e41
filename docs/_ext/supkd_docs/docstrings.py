"""A docstring guard for autodoc: a docstring that is not valid reStructuredText is shown
verbatim (as a literal block) instead of failing the ``-W`` build.

supkd's docstrings are written to be read as plain text first (formulas such as
``||z_t - z_s||²``, shapes, Unicode), and most are also valid reStructuredText. One that is
not (an ``|x|`` read as a substitution, an unmatched ``*``) would otherwise stop the whole
site at the next docstring edit anywhere in the package. Such a docstring is checked with
docutils alone, after napoleon has converted its Google-style sections, and shown as
written when docutils reports a problem; the build log lists every docstring shown so.
Roles and directives that only Sphinx knows (``:class:``, ``.. attribute::``) are not
problems here: Sphinx renders them.
"""

from __future__ import annotations

import io
import re
from typing import Any

import docutils.core
import docutils.utils
from docutils.parsers.rst import directives, roles
from sphinx.util import logging

logger = logging.getLogger(__name__)

_SPHINX_ONLY = ("Unknown interpreted text role", "Unknown directive type",
                'No role entry for', 'No directive entry for', 'Trying "')
_MESSAGE = re.compile(r"^<string>:\d+: \((?:WARNING|ERROR|SEVERE)/\d\) ", re.MULTILINE)
_raw: dict[tuple[str, str], list[str]] = {}
verbatim: list[str] = []
# docutils' own lookups, saved before Sphinx patches them for its domains while it reads.
_LOOKUPS = (directives.directive, roles.role)


def problems(text: str) -> list[str]:
    """The docutils warnings and errors of ``text`` (reStructuredText) that Sphinx would
    also raise; an empty list when it parses clean."""
    stream = io.StringIO()
    settings = {"report_level": 2, "halt_level": 5, "warning_stream": stream,
                "file_insertion_enabled": False, "raw_enabled": False}
    patched = (directives.directive, roles.role)
    directives.directive, roles.role = _LOOKUPS
    try:
        docutils.core.publish_doctree(text, settings_overrides=settings)
    except Exception:  # a Sphinx directive that needs the build: not checkable here
        return []
    finally:
        directives.directive, roles.role = patched
    messages = _MESSAGE.split(stream.getvalue())[1:]
    return [" ".join(m.split()) for m in messages if not any(s in m for s in _SPHINX_ONLY)]


def _remember(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    _raw[(what, name)] = list(lines)


def _guard(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
    if not lines:
        return
    found = problems("\n".join(lines))
    if not found:
        return
    raw = _raw.get((what, name), lines)
    lines[:] = ["::", "", *("    " + line for line in raw), ""]
    verbatim.append(name)
    logger.info(f"supkd_docs: docstring of {name} shown verbatim ({found[0]})")


def _report(app: Any, exc: Exception | None) -> None:
    if verbatim:
        logger.info(f"supkd_docs: {len(verbatim)} docstrings shown verbatim: "
                    + ", ".join(sorted(set(verbatim))))


def _signature(app: Any, what: str, name: str, obj: Any, options: Any, signature: str | None,
               return_annotation: str | None) -> tuple[str, str | None] | None:
    # A class that takes no arguments of its own inherits nn.Module's ``(*args, **kwargs)``:
    # show it as taking none.
    if what == "class" and signature == "(*args, **kwargs)":
        return "()", return_annotation
    return None


def setup(app: Any) -> None:
    app.connect("autodoc-process-signature", _signature)
    app.connect("autodoc-process-docstring", _remember, priority=100)  # before napoleon
    app.connect("autodoc-process-docstring", _guard, priority=900)  # after it
    app.connect("build-finished", _report)

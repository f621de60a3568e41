"""``.. supkd-config::``: every section and field of a run config, generated.

Walks :class:`supkd.config.Config` (its fields, then each nested section) and the task
sections registered in :data:`supkd.config.TASK_SECTIONS` (one per task, plugins' too),
and prints one table per section: field, type, default, bound, meaning (see
:mod:`supkd_docs.fields` for where each comes from).
"""

from __future__ import annotations

from docutils import nodes
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

from supkd_docs.fields import field_docs
from supkd_docs.nodes_util import code, para, section, table

logger = logging.getLogger(__name__)

HEADER = ["field", "type", "default", "bound", "meaning"]
WIDTHS = [16, 12, 14, 16, 42]


class ConfigDirective(SphinxDirective):
    """One table per config section, the task sections last."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_reread()  # generated from the code: never cached
        from supkd.config import TASK_SECTIONS, Config, TaskConfig

        out: list[nodes.Node] = []
        queue: list[tuple[str, type]] = [("(top level)", Config)]
        while queue:
            title, cls = queue.pop(0)
            subs = [(f.section.SECTION, f.section) for f in field_docs(cls)
                    if f.section is not None and not issubclass(f.section, TaskConfig)]
            out.append(self._section(title, cls, key=f"config-{title}"))
            queue[:0] = subs
        base = self._section("task", TaskConfig, key="config-task",
                             intro="The task section: ``name`` picks the task, whose own "
                                   "fields follow in its section below.")
        out.append(base)
        for name, cls in TASK_SECTIONS.items():
            base += self._section(f"task: {name}", cls, key=f"config-task-{name}",
                                  intro=f"``task.name: {name}`` ({cls.__module__}."
                                        f"{cls.__qualname__}).")
        return out

    def _section(self, title: str, cls: type, *, key: str, intro: str = "") -> nodes.section:
        sec = section(self.state.document, title, literal=title != "(top level)", key=key)
        doc = (cls.__doc__ or "").strip().split("\n\n")[0]
        if intro:
            sec += para(intro)
        elif doc and not doc.startswith(cls.__name__ + "("):  # not dataclass's made-up one
            sec += para(" ".join(doc.split()))
        rows = []
        for f in field_docs(cls):
            if f.section is not None:
                continue  # a nested section: its own table
            if not f.meaning:
                logger.warning(
                    f"config field '{cls.SECTION + '.' if cls.SECTION else ''}{f.name}' "
                    f"({cls.__module__}.{cls.__qualname__}) has no meaning in the code: add "
                    "a comment above or beside it, or a '- ``name``: ...' docstring bullet",
                    location=self.get_location())
            rows.append([code(f.name), f.type, code(f.default), f.bound or "-",
                         para(f.meaning or "-")])
        sec += table(HEADER, rows, widths=WIDTHS, classes=["supkd-config"])
        return sec

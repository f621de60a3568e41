"""``.. supkd-tables::``: the report's tables, from ``supkd.experiments.tables.TABLES``.

One row per registered table (the paper's and the benchmarks', a plugin's too): its id, its
title, what places a run in it (the ``meta`` keys of its rows and columns), how its baseline
is chosen and where its published numbers come from.
"""

from __future__ import annotations

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

from supkd_docs.nodes_util import code, para, table


def _published(spec: object) -> str:
    pub = getattr(spec, "published", None)
    if pub is None:
        return "-"
    try:
        return pub.describe(pub.block)
    except Exception:  # a description that needs the report's data: name the block only
        return f"block {pub.block}"


class TablesDirective(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_reread()  # generated from the code: never cached
        from supkd.experiments.tables import TABLES

        rows = []
        for table_id, spec in TABLES.items():
            where = f"meta.{spec.row_key}" + (f" × meta.{spec.col_key}" if spec.col_key else "")
            rows.append([code(table_id), para(spec.title), code(where),
                         para(spec.baseline_note or "-"), para(_published(spec))])
        return [table(["meta.table", "title", "rows × columns", "baseline", "published numbers"],
                      rows, widths=[14, 26, 18, 22, 20], classes=["supkd-tables"])]

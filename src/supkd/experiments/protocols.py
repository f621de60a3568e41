"""Run meta, table placement and the α rule.

The tables themselves are data: one :class:`~supkd.experiments.tables.TableSpec` each, in
:mod:`supkd.experiments.tables`; this module names the meta keys and keeps the helpers
other modules use.

A grid writes a ``meta`` dict into every run config (kept verbatim by the engine in
``config.yaml`` and ``result.json``). The report places runs in tables from ``meta`` alone,
never from run names. Keys (all optional except where a table needs them):

=================  =====================================================================
key                meaning
=================  =====================================================================
``grid``           name of the grid that wrote the run
``entry``          the grid entry (template) the run was expanded from, e.g. ``kd_gram``
``cell``           identity of the table cell across seeds and α values (entry + matrix
                   values); runs with the same ``cell`` and ``stage`` are replicates
``stage``          ``final`` (trained on the full training split, scored on the test set)
                   or ``tune`` (trained on train minus validation, scored on validation,
                   used only to choose α)
``seed``           the run's seed
``alpha``          the KD weight α of Eq. 6 used by this run (absent for non-KD runs)
``alpha_candidates``  the α values the grid tried for this cell (on ``final`` runs)
``table``          the report table(s) the run feeds: an id of :data:`TABLES` or a list
                   (``table1``..``table5``, ``cifar100_kd``, ``imagenet_kd``)
``role``           ``teacher`` | ``student`` (rows of Tables I and III)
``kind``           ``ce`` | ``supcon`` (columns of Tables I and III: the training objective)
``method``         KD loss name, a key of ``supkd.losses.LOSSES`` (rows of Tables II, IV)
``variant``        a short text naming a non-default option of ``method`` (e.g. ``logit
                   standardization``): the run is its own row of the report's table "KD
                   baselines beyond the paper", never the loss's row of Tables II, IV
``teacher_kind``   ``ce`` | ``supcon`` (columns of Tables II and IV)
``placement``      ``none`` | ``teacher_only`` | ``student_only`` | ``both``: where
                   ``supcon_kd`` L2-normalizes features (rows of Table V)
``published``      which block of published numbers to show beside ours
                   (``cifar10`` or ``imagenet1k`` of ``published_results.yaml``;
                   ``cifar100`` or ``imagenet_kd`` of ``published_kd_benchmark.yaml``)
``cka_teacher``    on KD students: name of the run whose model is the teacher for Fig. 2
``teacher_arch``   KD benchmark tables: the teacher's architecture (zoo name), row
``student_arch``   KD benchmark tables: the student's architecture (zoo name), row
=================  =====================================================================

A SupCon model's accuracy is that of its linear stage (a classifier trained on the frozen
encoder, DESIGN.md §5), so the linear run, not the encoder run, carries ``table: table1``.
"""

from __future__ import annotations

import math
from typing import Any

from supkd.experiments.tables import TABLES, CellKey, TableSpec, tables_of
from supkd.experiments.tables.paper import (
    PLACEMENT_LABELS,
    PLACEMENTS,
    method_order,
)
from supkd.experiments.tables.spec import load_numbers
from supkd.losses import loss_label
from supkd.vocab import Stage

META_KEYS: tuple[str, ...] = (
    "grid", "entry", "cell", "stage", "seed", "alpha", "alpha_candidates", "table", "role",
    "kind", "method", "variant", "teacher_kind", "placement", "published", "cka_teacher",
    "teacher_arch", "student_arch",
)

STAGES = tuple(s.value for s in Stage)

# Snapshots of the registry when this module is imported (the built-in losses).
METHOD_ORDER = method_order()
METHOD_LABELS = {name: loss_label(name) for name in METHOD_ORDER}
# normalize_student / normalize_teacher flags of supcon_kd for each placement.
PLACEMENT_FLAGS = {
    "none": (False, False),
    "teacher_only": (False, True),
    "student_only": (True, False),
    "both": (True, True),
}


def cell_of(meta: dict[str, Any], table: str) -> tuple[str, str] | None:
    """(row, col) of a run in ``table``, or None when its meta lacks the keys."""
    return TABLES[table].place(meta)


def baseline_of(table: str, row: str, col: str) -> CellKey | None:
    """(table, row, col) of the cell that (table, row, col) is tested against, or None (the
    rule is the table spec's :attr:`~supkd.experiments.tables.TableSpec.baseline`)."""
    return TABLES[table].baseline(row, col)


def load_published() -> dict[str, Any]:
    """The paper's published numbers (``published_results.yaml`` shipped in this package)."""
    return load_numbers("published_results.yaml")


def published_cell(table: str, row: str, col: str, block: str | None = None) -> str:
    """The published number for a cell as text: ``'94.45 ± 0.09'``, ``'NaN'`` (the paper's
    run diverged), or ``'–'`` (not reported)."""
    return TABLES[table].published_cell(row, col, block)


def choose_alpha(scores: dict[float, list[float | None]]) -> tuple[float, dict[float, float]]:
    """Pick α from validation accuracies: ``scores[α]`` lists the val accuracy of each tune
    run (None for a diverged/failed run, which counts as −inf). Returns (chosen α, mean val
    accuracy per α, NaN where no run finished). Ties go to the candidate listed first, so the
    choice does not depend on dict order beyond the grid's own candidate order."""
    if not scores:
        raise ValueError("choose_alpha needs at least one candidate")
    means: dict[float, float] = {}
    for a, vals in scores.items():
        ok = [float(v) for v in vals if v is not None and math.isfinite(float(v))]
        # A candidate with any diverged seed is not safe to pick: score it as failed.
        means[a] = sum(ok) / len(ok) if ok and len(ok) == len(vals) else math.nan
    best = None
    for a, m in means.items():
        if math.isnan(m):
            continue
        if best is None or m > means[best]:
            best = a
    if best is None:
        best = next(iter(scores))
    return best, means


__all__ = ["META_KEYS", "METHOD_LABELS", "METHOD_ORDER", "PLACEMENTS", "PLACEMENT_FLAGS",
           "PLACEMENT_LABELS", "STAGES", "TABLES", "TableSpec", "baseline_of", "cell_of",
           "choose_alpha", "load_published", "method_order", "published_cell", "tables_of"]

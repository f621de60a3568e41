"""The paper's tables as data: which run feeds which cell, and the published numbers.

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
``table``          the paper table(s) the run feeds: one of :data:`TABLES` or a list
``role``           ``teacher`` | ``student`` (rows of Tables I and III)
``kind``           ``ce`` | ``supcon`` (columns of Tables I and III: the training objective)
``method``         KD loss name, a key of ``supkd.losses.LOSSES`` (rows of Tables II, IV)
``variant``        a short text naming a non-default option of ``method`` (e.g. ``logit
                   standardization``): the run is its own row of the report's table "KD
                   baselines beyond the paper", never the loss's row of Tables II, IV
``teacher_kind``   ``ce`` | ``supcon`` (columns of Tables II and IV)
``placement``      ``none`` | ``teacher_only`` | ``student_only`` | ``both``: where
                   ``supcon_kd`` L2-normalizes features (rows of Table V)
``published``      which block of ``published_results.yaml`` to show beside ours
                   (``cifar10`` or ``imagenet1k``)
``cka_teacher``    on KD students: name of the run whose model is the teacher for Fig. 2
=================  =====================================================================

A SupCon model's accuracy is that of its linear stage (a classifier trained on the frozen
encoder, DESIGN.md §5), so the linear run, not the encoder run, carries ``table: table1``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from supkd.losses import LOSSES, loss_label
from supkd.vocab import Stage

META_KEYS: tuple[str, ...] = (
    "grid", "entry", "cell", "stage", "seed", "alpha", "alpha_candidates", "table", "role",
    "kind", "method", "variant", "teacher_kind", "placement", "published", "cka_teacher",
)

STAGES = tuple(s.value for s in Stage)


def method_order() -> tuple[str, ...]:
    """The rows of the KD tables (II, IV): the registered losses whose class says they have
    one (``kd_table_row``), in registration order: the paper's Table II order, then the
    classic Hinton KD that the paper does not report. Read from the registry at call time,
    so a plugin's loss that asks for a row gets one; every other method's runs go to the
    report's table of methods beyond the paper's tables."""
    return tuple(name for name, cls in LOSSES.items() if cls.kd_table_row)


# Snapshots of the registry when this module is imported (the built-in losses).
METHOD_ORDER = method_order()
METHOD_LABELS = {name: loss_label(name) for name in METHOD_ORDER}
PLACEMENTS = ("none", "teacher_only", "student_only", "both")
PLACEMENT_LABELS = {
    "none": "Without normalization",
    "teacher_only": "Normalized teacher feature",
    "student_only": "Normalized student feature",
    "both": "Both normalized",
}
# normalize_student / normalize_teacher flags of supcon_kd for each placement.
PLACEMENT_FLAGS = {
    "none": (False, False),
    "teacher_only": (False, True),
    "student_only": (True, False),
    "both": (True, True),
}


@dataclass(frozen=True)
class TableSpec:
    """How one paper table is laid out.

    ``row_key``/``col_key`` are the meta keys giving the row and column; ``rows``/``cols``
    their values in display order; ``baseline`` how each cell's Welch test reference is
    found (see :func:`baseline_of`).
    """

    id: str
    title: str
    row_key: str
    rows: tuple[str, ...]
    row_labels: dict[str, str]
    col_key: str | None
    cols: tuple[str, ...]
    col_labels: dict[str, str]
    baseline_note: str


TABLES: dict[str, TableSpec] = {
    "table1": TableSpec(
        "table1", "Table I: teachers and students trained on their own, CE vs SupCon",
        "role", ("teacher", "student"), {"teacher": "Teacher", "student": "Student"},
        "kind", ("ce", "supcon"), {"ce": "Cross entropy", "supcon": "SupCon"},
        "p: SupCon vs cross entropy in the same row (Welch's t-test)",
    ),
    "table2": TableSpec(
        "table2", "Table II: students distilled with each KD loss, from CE and SupCon teachers",
        "method", METHOD_ORDER, METHOD_LABELS,
        "teacher_kind", ("ce", "supcon"),
        {"ce": "KD from CE teacher", "supcon": "KD from SupCon teacher"},
        "p: each loss vs the Baseline (logit MSE) row in the same column; "
        "the Baseline row vs the CE student trained without KD (Table I)",
    ),
    "table5": TableSpec(
        "table5", "Table V: where supcon_kd L2-normalizes the features",
        "placement", PLACEMENTS, PLACEMENT_LABELS,
        None, ("acc",), {"acc": "Top-1 accuracy"},
        "p: each placement vs normalized student feature (the default)",
    ),
}
# ImageNet tables share the layout of their CIFAR-10 counterparts.
TABLES["table3"] = dataclasses.replace(
    TABLES["table1"], id="table3",
    title="Table III: ImageNet-1k teachers and students, CE vs SupCon")
TABLES["table4"] = dataclasses.replace(
    TABLES["table2"], id="table4",
    title="Table IV: ImageNet-1k students distilled with each KD loss")

#: Tables whose rows are KD methods (``meta.method``).
METHOD_TABLES = ("table2", "table4")


def rows_of(table: str) -> tuple[str, ...]:
    """The rows of ``table`` in display order (for the KD tables: :func:`method_order`)."""
    return method_order() if table in METHOD_TABLES else TABLES[table].rows


def row_label(table: str, row: str) -> str:
    """The label of ``row`` in ``table`` (a KD method's from its loss class's metadata)."""
    return loss_label(row) if table in METHOD_TABLES else TABLES[table].row_labels.get(row, row)


# The published block each table's numbers come from, by table id.
PUBLISHED_BLOCK = {"table1": "cifar10", "table2": "cifar10", "table3": "imagenet1k",
                   "table4": "imagenet1k", "table5": "imagenet1k"}


def tables_of(meta: dict[str, Any]) -> list[str]:
    """The table ids a run's meta places it in (``table`` may be a string or a list)."""
    t = meta.get("table")
    if t is None:
        return []
    items = [t] if isinstance(t, str) else list(t)
    return [str(x) for x in items if str(x) in TABLES]


def cell_of(meta: dict[str, Any], table: str) -> tuple[str, str] | None:
    """(row, col) of a run in ``table``, or None when its meta lacks the keys."""
    spec = TABLES[table]
    row = meta.get(spec.row_key)
    if row is None:
        return None
    col = spec.cols[0] if spec.col_key is None else meta.get(spec.col_key)
    if col is None:
        return None
    return str(row), str(col)


def baseline_of(table: str, row: str, col: str) -> tuple[str, str, str] | None:
    """(table, row, col) of the cell that (table, row, col) is tested against, or None.

    Table I/III: SupCon vs CE in the same row. Table II/IV: every loss vs the logit-MSE
    baseline of the same column, and the baseline itself vs the CE student without KD
    (the paper's "KD baseline outperforms the baseline student"). Table V: every placement
    vs ``student_only``.
    """
    if table in ("table1", "table3"):
        return (table, row, "ce") if col == "supcon" else None
    if table in ("table2", "table4"):
        if row == "logit_mse":
            own = "table1" if table == "table2" else "table3"
            return (own, "student", "ce")
        return (table, "logit_mse", col)
    if table == "table5":
        return None if row == "student_only" else (table, "student_only", col)
    return None


@cache
def load_published() -> dict[str, Any]:
    """The paper's published numbers (``published_results.yaml`` shipped in this package;
    a copy of ``paper/published_results.yaml``)."""
    text = resources.files("supkd.experiments").joinpath("published_results.yaml").read_text(
        encoding="utf-8")
    return yaml.safe_load(text)


def published_cell(table: str, row: str, col: str, block: str | None = None) -> str:
    """The paper's number for a cell as text: ``'94.45 ± 0.09'``, ``'NaN'`` (the paper's run
    diverged), or ``'–'`` (not reported)."""
    data = load_published().get(block or PUBLISHED_BLOCK[table], {})
    tab = data.get(table)
    if tab is None:
        # Table V is published for ImageNet only; the CIFAR-10 grid shows those numbers too.
        tab = load_published().get(PUBLISHED_BLOCK[table], {}).get(table)
    if tab is None:
        return "–"
    if table in ("table1", "table3"):
        value = (tab.get(row) or {}).get(col)
    elif table in ("table2", "table4"):
        value = (tab.get(row) or {}).get(f"{col}_teacher")
    else:
        value = tab.get(row)
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        return f"{float(value[0]):.2f} ± {float(value[1]):.2f}"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return f"{float(value):.2f}"


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

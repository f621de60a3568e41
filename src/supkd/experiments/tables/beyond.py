"""The table "KD baselines beyond the paper" (``beyond``): the runs with a KD method that no
table their meta names has a cell for, so that none is dropped.

That is a KD baseline the paper does not report (``dkd``, ``crd``, ...), a loss a plugin
registers, a variant of a loss (``meta.variant``, e.g. Hinton KD with logit standardization:
never the loss's own row of Tables II/IV, see ``TableSpec.strict_rows``), a ``meta.table``
the method does not fit, or a distill run whose meta names no table (its method is its
``task.loss``). Rows: ``method``, ``method+variant``, each ``@table`` when the meta names a
KD table (one with a ``kd_baseline_row``; the first named). Columns: teacher kinds
(``meta.teacher_kind``; ``acc`` when it names none). Each cell is tested against the
Baseline row (logit MSE) of the KD table its row names, same column; a row that names none
is tested against nothing. Rows in loss-registration order, then by name.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from supkd.experiments.tables.paper import TEACHER_KIND_LABELS
from supkd.experiments.tables.spec import TABLES, CellKey, TableSpec, register_table, tables_of
from supkd.losses import LOSSES, loss_label

ANY_TEACHER = "acc"  # the column of a run whose meta names no teacher kind
TEACHER_COLUMNS = {**TEACHER_KIND_LABELS, ANY_TEACHER: "Top-1 accuracy"}


def _split(row: str) -> tuple[str, str, str]:
    """``method+variant@table`` -> (method, variant, table); the last two may be empty."""
    head, _, source = row.partition("@")
    method, _, variant = head.partition("+")
    return method, variant, source


def row_of(meta: Mapping[str, Any]) -> str | None:
    """A run's row: its method, ``+variant``, ``@`` the first KD table its meta names."""
    method = meta.get("method")
    if not method:
        return None
    row = f"{method}+{meta['variant']}" if meta.get("variant") else str(method)
    source = next((t for t in tables_of(meta) if TABLES[t].kd_baseline_row), None)
    return f"{row}@{source}" if source else row


def _col_of(meta: Mapping[str, Any]) -> str:
    return str(meta.get("teacher_kind") or ANY_TEACHER)


def _baseline(row: str, col: str) -> CellKey | None:
    """The Baseline (logit MSE) of the KD table the row names, same teacher column."""
    source = _split(row)[2]
    base = TABLES[source].kd_baseline_row if source in TABLES else None
    return (source, base, col) if base else None


def _row_order(rows: Iterable[str]) -> list[str]:
    names = list(LOSSES)  # read now: a plugin's loss sorts after the built-in ones

    def key(row: str) -> tuple[int, str]:
        method = _split(row)[0]
        return (names.index(method) if method in names else len(names), row)
    return sorted(rows, key=key)


def _col_order(cols: Iterable[str]) -> list[str]:
    known = list(TEACHER_COLUMNS)
    return sorted(cols, key=lambda c: (known.index(c) if c in known else len(known), c))


def _row_label(row: str) -> str:
    method, variant, _ = _split(row)
    return f"{loss_label(method)}, {variant}" if variant else loss_label(method)


def _tested_against(row: str) -> str:
    """The table whose Baseline the row is tested against (``Table II``), or ``–``."""
    source = _split(row)[2]
    return TABLES[source].title.split(":")[0] if source else "–"


BEYOND = register_table(TableSpec(
    "beyond", "KD baselines beyond the paper", "method", (), _row_label,
    "teacher_kind", None, lambda c: TEACHER_COLUMNS.get(c, f"KD from {c} teacher"),
    _baseline,
    "p: each method vs the Baseline (logit MSE) row of the KD table its meta names, same "
    "column (none when it names none)",
    first_header="Method",
    note="Top-1 test accuracy (%), mean ± sample std over seeds (n), of the runs no paper "
         "table has a cell for: KD baselines and loss variants the paper does not report (α "
         "tuned on the validation split like the paper's rows; see the α section), other "
         "methods, and runs whose meta names no table. {baseline}; ns = not significant at "
         "0.05.\n",
    rows_from_runs=True, run_row_order=_row_order, catch_all=True,
    label_columns=(("p against the Baseline of", _tested_against),),
    row_rule=row_of, col_rule=_col_of, col_order=_col_order,
    position=float("inf")))  # after every other table, a plugin's too

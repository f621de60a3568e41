"""The founding paper's Tables I-V as :class:`TableSpec` entries.

Published numbers: ``published_results.yaml`` in ``supkd.experiments`` (the paper's
numbers, transcribed), blocks ``cifar10`` (Tables I, II) and ``imagenet1k`` (III-V).
"""

from __future__ import annotations

from collections.abc import Callable

from supkd.experiments.tables.spec import CellKey, Keyed, ReferenceRow, TableSpec, register_table
from supkd.losses import LOSSES, loss_label

PAPER_NUMBERS = "published_results.yaml"
PAPER_TITLES = {
    "cifar10": "CIFAR-10, ResNet-50 → ResNet-18, mean ± std over 5 seeds",
    "imagenet1k": "ImageNet-1k, ResNet-50 → ResNet-34, mean ± std over 3 seeds",
}


def method_order() -> tuple[str, ...]:
    """The rows of the KD tables (II, IV): the registered losses whose class says they have
    one (``kd_table_row``), in registration order: the paper's Table II order, then the
    classic Hinton KD that the paper does not report. Read from the registry at call time,
    so a plugin's loss that asks for a row gets one; every other method's runs go to the
    report's table of methods beyond the paper's tables."""
    return tuple(name for name, cls in LOSSES.items() if cls.kd_table_row)


PLACEMENTS = ("none", "teacher_only", "student_only", "both")
PLACEMENT_LABELS = {
    "none": "Without normalization",
    "teacher_only": "Normalized teacher feature",
    "student_only": "Normalized student feature",
    "both": "Both normalized",
}


def _own_baseline(table: str) -> Callable[[str, str], CellKey | None]:
    """Tables I/III: SupCon vs CE in the same row."""
    def rule(row: str, col: str) -> CellKey | None:
        return (table, row, "ce") if col == "supcon" else None
    return rule


def _kd_baseline(table: str, own: str) -> Callable[[str, str], CellKey | None]:
    """Tables II/IV: every loss vs the logit-MSE Baseline of the same column; the Baseline
    itself vs the CE student without KD of ``own`` (the paper's "KD baseline outperforms the
    baseline student")."""
    def rule(row: str, col: str) -> CellKey | None:
        return (own, "student", "ce") if row == "logit_mse" else (table, "logit_mse", col)
    return rule


def _placement_baseline(row: str, col: str) -> CellKey | None:
    """Table V: every placement vs ``student_only`` (the default)."""
    return None if row == "student_only" else ("table5", "student_only", col)


def _own_table(id: str, title: str, block: str, position: float) -> TableSpec:
    return TableSpec(
        id, title, "role", ("teacher", "student"), {"teacher": "Teacher", "student": "Student"},
        "kind", ("ce", "supcon"), {"ce": "Cross entropy", "supcon": "SupCon"},
        _own_baseline(id), "p: SupCon vs cross entropy in the same row (Welch's t-test)",
        Keyed(PAPER_NUMBERS, block, (id, "{row}", "{col}"), PAPER_TITLES), position=position)


def _kd_table(id: str, title: str, block: str, own: str, position: float) -> TableSpec:
    return TableSpec(
        id, title, "method", method_order, loss_label,
        "teacher_kind", ("ce", "supcon"),
        {"ce": "KD from CE teacher", "supcon": "KD from SupCon teacher"},
        _kd_baseline(id, own),
        "p: each loss vs the Baseline (logit MSE) row in the same column; "
        "the Baseline row vs the CE student trained without KD (Table I)",
        Keyed(PAPER_NUMBERS, block, (id, "{row}", "{col}_teacher"), PAPER_TITLES),
        strict_rows=True, kd_baseline_row="logit_mse", position=position,
        reference_rows=(ReferenceRow("Student without KD (CE, Table I)",
                                     (own, "student", "ce"), "ce"),))


TABLE1 = register_table(_own_table(
    "table1", "Table I: teachers and students trained on their own, CE vs SupCon", "cifar10",
    1))
TABLE2 = register_table(_kd_table(
    "table2", "Table II: students distilled with each KD loss, from CE and SupCon teachers",
    "cifar10", "table1", 2))
# Shown before Tables III/IV: the report has always put the CIFAR-10 ablation after Table II.
TABLE5 = register_table(TableSpec(
    "table5", "Table V: where supcon_kd L2-normalizes the features",
    "placement", PLACEMENTS, PLACEMENT_LABELS,
    None, ("acc",), {"acc": "Top-1 accuracy"},
    _placement_baseline, "p: each placement vs normalized student feature (the default)",
    Keyed(PAPER_NUMBERS, "imagenet1k", ("table5", "{row}"), PAPER_TITLES, fixed_block=True),
    paper_note="ImageNet-1k, ResNet-50 → ResNet-34, single runs (NaN: the paper's run "
               "diverged)", position=2.5))
# ImageNet tables share the layout of their CIFAR-10 counterparts.
TABLE3 = register_table(_own_table(
    "table3", "Table III: ImageNet-1k teachers and students, CE vs SupCon", "imagenet1k", 3))
TABLE4 = register_table(_kd_table(
    "table4", "Table IV: ImageNet-1k students distilled with each KD loss", "imagenet1k",
    "table3", 4))

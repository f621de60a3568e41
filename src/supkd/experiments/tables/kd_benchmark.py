"""The KD literature's benchmark tables: CIFAR-100 (``cifar100_kd``) and ImageNet
(``imagenet_kd``), rows teacher → student pairs, columns methods.

A run feeds them through its meta (the grid's convention): ``table: cifar100_kd`` (or
``imagenet_kd``), ``teacher_arch``, ``student_arch``, ``method`` (a supkd loss name; plain
KD is ``hinton_kl``, the student trained alone ``ce``), ``teacher_kind`` (``ce`` or
``supcon``: a SupCon teacher's runs are their own row). Each cell shows the last epoch's
accuracy (as RepDistiller reports) and the best epoch's (the highest per-epoch test
accuracy, as mdistiller reports), each tested against KD in the same row (KD itself against
the CE student). Published numbers: ``published_kd_benchmark.yaml`` (sources with URL and
commit in the file), shown only on rows with a CE teacher, as the literature trains them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from supkd.experiments.tables.spec import (
    BEST,
    LAST,
    CellKey,
    TableSpec,
    format_number,
    load_numbers,
    register_table,
)
from supkd.losses import LOSSES, loss_label

NUMBERS = "published_kd_benchmark.yaml"
KD, CE = "hinton_kl", "ce"
_SUPCON = "@supcon"

#: Column order: the student alone, KD, the methods in the READMEs' row order, DKD; then
#: any other method in loss-registration order, then by name.
METHODS = (CE, KD, "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst",
           "crd", "kdsvd", "ofd", "reviewkd", "dkd")
SHORT_LABELS = {CE: "CE student", KD: "KD", "fitnet": "FitNet", "at": "AT", "sp": "SP",
                "cc": "CC", "vid": "VID", "rkd": "RKD", "pkt": "PKT", "ab": "AB", "ft": "FT",
                "fsp": "FSP", "nst": "NST", "crd": "CRD", "kdsvd": "KDSVD", "ofd": "OFD",
                "reviewkd": "ReviewKD", "dkd": "DKD", "dist": "DIST"}


def arch_key(name: str) -> str:
    """Architectures compared by name without case, ``_`` or ``-`` (``ResNet34`` is
    ``resnet34``; ``wrn_40_2`` is ``wrn-40-2``)."""
    return name.lower().replace("_", "").replace("-", "")


def pair_row(teacher: str, student: str, teacher_kind: str | None = None) -> str:
    """A row's key: ``resnet32x4->resnet8x4``, with ``@supcon`` for a SupCon teacher."""
    return f"{teacher}->{student}" + (_SUPCON if teacher_kind == "supcon" else "")


def _split_row(row: str) -> tuple[str, str, bool]:
    supcon = row.endswith(_SUPCON)
    teacher, _, student = row.removesuffix(_SUPCON).partition("->")
    return teacher, student, supcon


def _row_of(meta: Mapping[str, Any]) -> str | None:
    t, s = meta.get("teacher_arch"), meta.get("student_arch")
    if not t or not s:
        return None
    return pair_row(str(t), str(s), str(meta.get("teacher_kind") or "ce"))


def _col_of(meta: Mapping[str, Any]) -> str | None:
    method = meta.get("method")
    if not method:
        return None
    return f"{method}+{meta['variant']}" if meta.get("variant") else str(method)


def method_columns(present: Iterable[str]) -> list[str]:
    """Columns present, in :data:`METHODS` order, then loss-registration order, then name."""
    names = list(LOSSES)

    def key(col: str) -> tuple[int, int, str]:
        method = col.partition("+")[0]
        if method in METHODS:
            return (0, METHODS.index(method), col)
        return (1, names.index(method) if method in names else len(names), col)
    return sorted(set(present), key=key)


def method_label(col: str) -> str:
    method, _, variant = col.partition("+")
    label = SHORT_LABELS.get(method) or loss_label(method)
    return f"{label}, {variant}" if variant else label


def _baseline(table: str) -> Callable[[str, str], CellKey | None]:
    def rule(row: str, col: str) -> CellKey | None:
        if col == CE:
            return None
        return (table, row, CE if col == KD else KD)
    return rule


@dataclass(frozen=True)
class SourcedNumbers:
    """Published numbers per pair from several sources (``published_kd_benchmark.yaml``):
    a cell shows each source that has one, e.g. ``73.33 (RepDistiller), 73.33 (mdistiller)``."""

    file: str
    block: str
    fixed_block: bool = False

    def _pair(self, row: str, block: str) -> Mapping[str, Any] | None:
        teacher, student, supcon = _split_row(row)
        if supcon:
            return None  # the literature's teachers are trained with cross entropy
        data = load_numbers(self.file)
        pairs = (data.get(block) or data.get(self.block) or {}).get("pairs", [])
        for p in pairs:
            if (arch_key(p["teacher"]), arch_key(p["student"])) == (arch_key(teacher),
                                                                   arch_key(student)):
                return p
        return None

    def cell(self, row: str, col: str, block: str) -> str:
        pair = self._pair(row, block)
        if pair is None:
            return "–"
        sources = load_numbers(self.file)["sources"]
        bits = [f"{format_number(pair[src][col])} ({sources[src]['name']})"
                for src in sources if isinstance(pair.get(src), dict)
                and pair[src].get(col) is not None]
        return ", ".join(bits) or "–"

    def teacher(self, row: str, block: str) -> str | None:
        """The published teacher accuracy of a pair (RepDistiller's README has them)."""
        pair = self._pair(row, block) or {}
        vals = [v["teacher"] for v in pair.values() if isinstance(v, dict) and v.get("teacher")]
        return format_number(vals[0]) if vals else None

    def describe(self, block: str) -> str:
        data = load_numbers(self.file)
        title = (data.get(block) or data[self.block])["title"]
        srcs = "; ".join(f"{s['name']} ({s['url']} at {s['commit'][:7]}, {s['section']}; "
                         f"{s['epoch']} epoch)" for s in data["sources"].values())
        return f"{title}. Sources: {srcs}"


def _row_label(numbers: SourcedNumbers, block: str) -> Callable[[str], str]:
    def label(row: str) -> str:
        teacher, student, supcon = _split_row(row)
        text = f"{teacher} (SupCon teacher) → {student}" if supcon else f"{teacher} → {student}"
        acc = numbers.teacher(row, block)
        return f"{text} (published teacher {acc})" if acc else text
    return label


def _declared_rows(numbers: SourcedNumbers, block: str) -> Callable[[], tuple[str, ...]]:
    def rows() -> tuple[str, ...]:
        pairs = load_numbers(numbers.file)[block]["pairs"]
        out: list[str] = []
        for p in pairs:
            out += [pair_row(p["teacher"], p["student"]),
                    pair_row(p["teacher"], p["student"], "supcon")]
        return tuple(out)
    return rows


NOTE = ("Top-1 test accuracy (%), mean ± sample std over seeds (n): `last` is the last "
        "epoch's (result.json; what RepDistiller reports), `best` the highest per-epoch test "
        "accuracy (metrics.jsonl; what mdistiller reports). {baseline}; ns = not significant "
        "at 0.05. Published: {paper}.\n")


def _benchmark(id: str, title: str, block: str, position: float) -> TableSpec:
    numbers = SourcedNumbers(NUMBERS, block)
    return TableSpec(
        id, title, "teacher_arch", _declared_rows(numbers, block), _row_label(numbers, block),
        "method", None, method_label, _baseline(id),
        "p: each method vs KD (hinton_kl) in the same row, same epoch rule (Welch's t-test); "
        "KD vs the student trained alone",
        numbers, first_header="Teacher → student", note=NOTE, published_header="published",
        interleave_published=True, rows_from_runs=True, metrics=(LAST, BEST),
        row_rule=_row_of, col_rule=_col_of, col_order=method_columns, position=position)


CIFAR100_KD = register_table(_benchmark(
    "cifar100_kd", "CIFAR-100 KD benchmark: teacher → student pairs × methods", "cifar100",
    10))
IMAGENET_KD = register_table(_benchmark(
    "imagenet_kd", "ImageNet-1k KD benchmark: teacher → student pairs × methods",
    "imagenet_kd", 11))

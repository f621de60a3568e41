"""A report table as data: :class:`TableSpec` and the registry the report iterates over.

A spec says which runs feed which cell (from ``meta`` alone: :meth:`TableSpec.place`), in
which order its rows and columns are shown, which cell each cell is tested against (its
baseline rule, :attr:`TableSpec.baseline`) and where its published numbers come from
(:attr:`TableSpec.published`). The report renders every registered spec the same way and
knows no table by name. A new table is one :func:`register_table` call in its own module
(see ``paper.py`` and ``kd_benchmark.py`` beside this file) plus its test.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Protocol

import yaml

from supkd.utils.registry import Registry

CellKey = tuple[str, str, str]  # (table, row, col)

#: Accuracy of a run's last epoch (``result.json``'s ``test_acc``) and of its best epoch
#: (the highest per-epoch ``test_acc`` in ``metrics.jsonl``).
LAST, BEST = "last", "best"

DEFAULT_NOTE = ("Top-1 test accuracy (%), mean ± sample std over seeds (n). {baseline}; "
                "ns = not significant at 0.05. Paper: {paper}.\n")


@cache
def load_numbers(filename: str) -> dict[str, Any]:
    """A YAML file of published numbers shipped in ``supkd.experiments`` (read once)."""
    text = resources.files("supkd.experiments").joinpath(filename).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def format_number(value: Any) -> str:
    """``[m, s]`` -> ``'m ± s'``, a NaN -> ``'NaN'`` (the source's run diverged), a number
    -> ``'m'``, ``None`` -> ``'–'`` (not reported); two decimals, as the sources print."""
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        return f"{float(value[0]):.2f} ± {float(value[1]):.2f}"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return f"{float(value):.2f}"


class PublishedNumbers(Protocol):
    """Where a table's published numbers come from."""

    block: str  # the default block of its file (e.g. ``cifar10``)
    fixed_block: bool  # True: always ``block``, whatever the runs' ``meta.published`` says

    def cell(self, row: str, col: str, block: str) -> str:
        """The published number(s) of a cell as text, ``'–'`` when none."""
        ...

    def describe(self, block: str) -> str:
        """What the published numbers are (for the note under the table)."""
        ...


@dataclass(frozen=True)
class Keyed:
    """Numbers at a key path of a block: ``file[block][table][row][col]`` with ``path`` the
    format strings after the block, e.g. ``("table2", "{row}", "{col}_teacher")``. A block
    without the table falls back to the default block's (Table V is published for ImageNet
    only)."""

    file: str
    block: str
    path: tuple[str, ...]
    titles: Mapping[str, str] = field(default_factory=dict)
    fixed_block: bool = False

    def cell(self, row: str, col: str, block: str) -> str:
        data = load_numbers(self.file)
        head, *rest = (p.format(row=row, col=col) for p in self.path)
        tab = (data.get(block) or {}).get(head)
        if tab is None:
            tab = (data.get(self.block) or {}).get(head)
        for key in rest:
            tab = tab.get(key) if isinstance(tab, dict) else None
        return "–" if isinstance(tab, dict) else format_number(tab)

    def describe(self, block: str) -> str:
        return self.titles.get(block, block)


def _label(labels: Mapping[str, str] | Callable[[str], str], key: str) -> str:
    return labels(key) if callable(labels) else labels.get(key, key)


@dataclass(frozen=True)
class ReferenceRow:
    """A row shown above a table's own rows that repeats a cell of another table (Table II's
    "Student without KD"): ``cell`` is shown in column ``col``, the others stay empty."""

    label: str
    cell: CellKey
    col: str


@dataclass(frozen=True)
class TableSpec:
    """One report table.

    Placement: a run feeds row ``meta[row_key]`` (or ``row_rule(meta)``) and column
    ``meta[col_key]`` (the one column ``cols[0]`` when ``col_key`` is None). ``rows`` and
    ``cols`` give the display order (a callable is read at report time, e.g. the losses that
    ask for a KD-table row); ``cols=None`` shows the columns present, in ``col_order``.
    ``strict_rows``: a run whose row is not among ``rows``, or that names a ``meta.variant``,
    gets no cell here (the report's table of methods beyond the paper takes it, tested
    against ``(this table, kd_baseline_row, col)``). ``baseline(row, col)`` is the cell that
    a cell is tested against (Welch's t-test), or None. ``metrics``: the accuracies each
    cell shows (:data:`LAST`, :data:`BEST`), labelled when there are several.
    """

    id: str
    title: str
    row_key: str
    rows: Sequence[str] | Callable[[], Sequence[str]]
    row_labels: Mapping[str, str] | Callable[[str], str]
    col_key: str | None
    cols: Sequence[str] | None
    col_labels: Mapping[str, str] | Callable[[str], str]
    baseline: Callable[[str, str], CellKey | None]
    baseline_note: str
    published: PublishedNumbers | None = None
    first_header: str | None = None  # default: the row key, or "Configuration" (one column)
    note: str = DEFAULT_NOTE  # with {baseline} and {paper}
    paper_note: str | None = None  # fixed text for {paper} (default: the published block's)
    published_header: str = "paper"
    interleave_published: bool = False  # published column beside each of ours, not after
    rows_from_runs: bool = False  # rows shown: those with runs (declared ones first)
    strict_rows: bool = False
    kd_baseline_row: str | None = None
    reference_rows: tuple[ReferenceRow, ...] = ()
    metrics: tuple[str, ...] = (LAST,)
    row_rule: Callable[[Mapping[str, Any]], str | None] | None = None
    col_rule: Callable[[Mapping[str, Any]], str | None] | None = None
    col_order: Callable[[Iterable[str]], list[str]] | None = None
    position: float = 100.0  # where the report shows it (ascending; ties: registration order)

    def row_order(self) -> tuple[str, ...]:
        return tuple(self.rows() if callable(self.rows) else self.rows)

    def row_label(self, row: str) -> str:
        return _label(self.row_labels, row)

    def col_label(self, col: str) -> str:
        return _label(self.col_labels, col)

    def columns(self, present: Iterable[str]) -> list[str]:
        """The columns shown: the declared ones, or those present in ``col_order``."""
        if self.cols is not None:
            return list(self.cols)
        return (self.col_order or sorted)(set(present))

    def header(self) -> str:
        if self.first_header is not None:
            return self.first_header
        return self.row_key.replace("_", " ").capitalize() if self.col_key else "Configuration"

    def place(self, meta: Mapping[str, Any]) -> tuple[str, str] | None:
        """(row, col) of a run in this table, or None when its meta lacks the keys (or, for
        ``strict_rows``, names a row the table does not have or a variant)."""
        row = self.row_rule(meta) if self.row_rule else meta.get(self.row_key)
        if row is None:
            return None
        if self.col_rule is not None:
            col = self.col_rule(meta)
        else:
            col = self.cols[0] if self.col_key is None and self.cols else (
                meta.get(self.col_key) if self.col_key else None)
        if col is None:
            return None
        if self.strict_rows and (str(row) not in self.row_order() or meta.get("variant")):
            return None
        return str(row), str(col)

    def published_block(self, blocks: set[str]) -> str | None:
        """The block of published numbers shown: the one the runs' ``meta.published`` names
        when they agree (and the spec does not fix it), else the spec's default."""
        if self.published is None:
            return None
        if self.published.fixed_block or len(blocks) != 1:
            return self.published.block
        return next(iter(blocks))

    def published_cell(self, row: str, col: str, block: str | None = None) -> str:
        if self.published is None:
            return "–"
        return self.published.cell(row, col, block or self.published.block)

    def note_text(self, block: str | None) -> str:
        paper = self.paper_note
        if paper is None:
            paper = self.published.describe(block or self.published.block) if self.published \
                else "–"
        return self.note.format(baseline=self.baseline_note, paper=paper)


#: Every report table, in the order the report shows them.
TABLES: Registry[TableSpec] = Registry("report table")


def register_table(spec: TableSpec) -> TableSpec:
    """Add ``spec`` to :data:`TABLES` (a taken id is refused, naming who holds it)."""
    return TABLES.add(spec.id, spec)


def report_order() -> list[str]:
    """The registered table ids in the order the report shows them (:attr:`position`)."""
    return sorted(TABLES, key=lambda t: TABLES[t].position)  # stable: ties keep registration


def tables_of(meta: Mapping[str, Any]) -> list[str]:
    """The registered table ids a run's meta places it in (``table``: a string or a list)."""
    t = meta.get("table")
    if t is None:
        return []
    items = [t] if isinstance(t, str) else list(t)
    return [str(x) for x in items if str(x) in TABLES]

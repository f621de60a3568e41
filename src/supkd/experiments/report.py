"""``supkd report RUNS_DIR``: the report tables from run directories alone.

Writes ``report.md`` and one CSV per table (plus ``alpha.csv`` and ``runs.csv``) into the
output folder. The tables are data (:mod:`supkd.experiments.tables`): this module renders
every registered :class:`~supkd.experiments.tables.TableSpec` the same way, in the specs'
order, and knows none by name. Each cell is mean ± sample std over seeds with n and the
Welch p-value against the cell its spec's baseline rule names, ``ns`` where that difference
is not significant at 0.05, and ``NaN (diverged at step k)`` for diverged runs; the published
number sits beside ours. A spec may show several accuracies per cell (the KD benchmark
tables: the last epoch and the best epoch, labelled). Only ``stage: final`` runs (trained
on the full training split, scored on the test set) enter the tables; ``stage: tune`` runs
only show in the α section.

Method labels come from each loss class's metadata (:func:`supkd.losses.loss_label`). A run
whose method has no row in the paper's tables (a KD baseline the paper does not report, such
as ``dkd`` or ``crd``, a loss registered by a plugin, a variant of a loss named by
``meta.variant`` such as Hinton KD with logit standardization, a ``meta.table`` the method
does not fit, or a distill run without ``meta.table``) is not dropped: it appears in the
extra table "KD baselines beyond the paper" (``beyond.csv``) with the same statistics, each
method tested against the Baseline row (``TableSpec.kd_baseline_row``) of the KD table its
meta names.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import platform
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from supkd.analysis.plots import plot_cka_per_stage
from supkd.analysis.stats import (
    Comparison,
    Summary,
    format_cell,
    summarize,
    welch_test,
)
from supkd.errors import UserError
from supkd.experiments.protocols import choose_alpha, method_order
from supkd.experiments.store import CORRUPT, UNFINISHED, RunRecord, scan_runs
from supkd.experiments.tables import (
    BEST,
    LAST,
    TABLES,
    CellKey,
    TableSpec,
    report_order,
    tables_of,
)
from supkd.losses import LOSSES, loss_label
from supkd.train.cka_record import CkaRecord
from supkd.utils.atomic import atomic_write_text
from supkd.utils.paths import prepare_output_dir
from supkd.vocab import RunStatus, Stage

#: Id of the extra table of runs whose method has no row in a paper table. Its rows are
#: ``method``, ``method+variant`` (``meta.variant``), each optionally ``@table`` (the KD
#: table its meta named); its columns are teacher kinds.
BEYOND = "beyond"
BEYOND_TITLE = "KD baselines beyond the paper"
ANY_TEACHER = "acc"  # column of a run whose meta names no teacher kind
_TEACHER_COLUMNS = {"ce": "KD from CE teacher", "supcon": "KD from SupCon teacher",
                    ANY_TEACHER: "Top-1 accuracy"}


@dataclass
class Cell:
    """Runs of one table cell (final stage only)."""

    runs: list[RunRecord] = field(default_factory=list)

    def summary(self, metric: str = LAST) -> Summary:
        """The cell's accuracies: each run's last epoch (``last``) or best epoch (``best``)."""
        done = [a for r in self.runs if r.status == RunStatus.COMPLETED
                and (a := r.test_acc if metric == LAST else r.best_test_acc) is not None]
        div = [r.diverged_step for r in self.runs if r.status == RunStatus.DIVERGED]
        failed = sum(r.status in (RunStatus.FAILED, CORRUPT) for r in self.runs)
        return summarize(done, div, failed)

    @property
    def unfinished(self) -> int:
        return sum(r.status == UNFINISHED for r in self.runs)


@dataclass
class Collected:
    """Everything the report shows, gathered from run records."""

    records: list[RunRecord]
    cells: dict[CellKey, Cell]
    tables: list[str]
    alpha_rows: list[dict[str, Any]]

    def summary(self, key: CellKey, metric: str = LAST) -> Summary:
        cell = self.cells.get(key)
        return cell.summary(metric) if cell else summarize([])

    def comparison(self, key: CellKey, metric: str = LAST
                   ) -> tuple[CellKey | None, Comparison | None]:
        """The cell ``key`` is tested against (the table spec's baseline rule) and Welch's
        test of the two on ``metric``."""
        base = _beyond_baseline(key) if key[0] == BEYOND else TABLES[key[0]].baseline(*key[1:])
        if base is None or base not in self.cells:
            return base, None
        return base, welch_test(self.summary(key, metric), self.summary(base, metric))


def collect(records: Sequence[RunRecord]) -> Collected:
    """Group runs into table cells (from ``meta`` only) and gather the α tuning."""
    cells: dict[CellKey, Cell] = defaultdict(Cell)
    for rec in records:
        if rec.meta.get("stage", Stage.FINAL) != Stage.FINAL:
            continue
        for key in places(rec):
            cells[key].runs.append(rec)
    order = [*report_order(), BEYOND]
    present = sorted({k[0] for k in cells}, key=order.index)
    return Collected(list(records), dict(cells), present, _alpha_rows(records))


def method_of(rec: RunRecord) -> str | None:
    """A run's KD method: ``meta.method``, else the ``task.loss`` of a distill run."""
    if rec.meta.get("method"):
        return str(rec.meta["method"])
    if _get(rec.config, "task.name") == "distill" and _get(rec.config, "task.loss"):
        return str(_get(rec.config, "task.loss"))
    return None


def places(rec: RunRecord) -> list[CellKey]:
    """The cells a final run feeds. A run with a method but no cell of a paper table (the
    method is no row of the KD table its meta names, or it names none) feeds the
    :data:`BEYOND` table instead of being dropped."""
    keys: list[CellKey] = []
    named = tables_of(rec.meta)
    # A variant of a loss (meta.variant: another option than the paper's) is never the
    # loss's own row of a KD table (TableSpec.strict_rows).
    variant = rec.meta.get("variant")
    for table in named:
        rc = TABLES[table].place(rec.meta)
        if rc is not None:
            keys.append((table, *rc))
    method = method_of(rec)
    if keys or method is None:
        return keys
    source = next((t for t in named if TABLES[t].kd_baseline_row), None)
    row = f"{method}+{variant}" if variant else method
    row = f"{row}@{source}" if source else row
    return [(BEYOND, row, str(rec.meta.get("teacher_kind") or ANY_TEACHER))]


def _beyond_baseline(key: CellKey) -> CellKey | None:
    """A beyond-the-tables method is tested against the Baseline (logit MSE) of the KD
    table its meta named, same teacher column; with no table named, against nothing."""
    source = key[1].partition("@")[2]
    row = TABLES[source].kd_baseline_row if source in TABLES else None
    return (source, row, key[2]) if row else None


def _beyond_order(row: str) -> tuple[int, str]:
    method = row.partition("@")[0].partition("+")[0]
    names = list(LOSSES)
    return (names.index(method) if method in names else len(names), row)


def _alpha_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """One row per tuned cell: candidates, mean validation accuracy per α, chosen α (as the
    grid chose it: recomputed here with the same rule, and the α the final runs used)."""
    tune: dict[str, dict[float, list[float | None]]] = defaultdict(dict)
    label: dict[str, str] = {}
    used: dict[str, set[float]] = defaultdict(set)
    order: dict[str, list[float]] = {}
    borrowed: dict[str, tuple[str, set[float]]] = {}
    for rec in records:
        cell = rec.meta.get("cell")
        if cell is None or rec.meta.get("alpha") is None:
            continue
        alpha = float(rec.meta["alpha"])
        if rec.meta.get("stage") == Stage.TUNE:
            val = rec.val_acc if rec.status == RunStatus.COMPLETED else None
            if rec.status != UNFINISHED:
                tune[cell].setdefault(alpha, []).append(val)
            label.setdefault(cell, _cell_label(rec.meta))
        elif rec.meta.get("alpha_from"):
            borrowed.setdefault(cell, (str(rec.meta["alpha_from"]), set()))[1].add(alpha)
        elif rec.meta.get("stage", Stage.FINAL) == Stage.FINAL:
            used[cell].add(alpha)
            if rec.meta.get("alpha_candidates"):
                order[cell] = [float(a) for a in rec.meta["alpha_candidates"]]
            label.setdefault(cell, _cell_label(rec.meta))
    rows = []
    for cell in sorted(set(tune) | {c for c in used if c in order and len(order[c]) > 1}):
        scores = tune.get(cell, {})
        cands = order.get(cell) or sorted(scores)
        ordered = {a: scores.get(a, []) for a in cands}
        chosen, means = choose_alpha(ordered) if ordered else (math.nan, {})
        rows.append({
            "cell": cell,
            "label": label.get(cell, cell),
            "candidates": cands,
            "val_acc": means,
            "chosen": chosen,
            "used": sorted(used.get(cell, set())),
            "tune_runs": sum(len(v) for v in scores.values()),
        })
    for cell, (src, alphas) in sorted(borrowed.items()):
        rows.append({"cell": cell, "label": label.get(cell, cell), "candidates": [],
                     "val_acc": {}, "chosen": math.nan, "used": sorted(alphas),
                     "tune_runs": 0, "alpha_from": src})
    return rows


def _cell_label(meta: dict[str, Any]) -> str:
    if meta.get("method"):
        text = str(meta["method"])
        if meta.get("variant"):
            text += f" + {meta['variant']}"
        if meta.get("teacher_kind"):
            text += f" from {meta['teacher_kind']} teacher"
        if meta.get("placement"):
            text += f" ({meta['placement']})"
        return text
    return str(meta.get("cell", "?"))


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


def _model_label(c: Any) -> str:
    """``resnet18 (width 64)``; a family member (``timm/<arch>``) has no ResNet width: its
    name, with the constructor arguments it was given."""
    name = str(_get(c, "model.name") or "?")
    if "/" not in name:
        return f"{name} (width {_get(c, 'model.width') or '?'})"
    args = _get(c, "model.timm_args")
    return f"{name} {json.dumps(args, sort_keys=True)}" if args else name


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(x: str) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _published_block(col: Collected, table: str) -> str | None:
    blocks = {r.meta.get("published") for k, c in col.cells.items() if k[0] == table
              for r in c.runs}
    blocks.discard(None)
    return TABLES[table].published_block({str(b) for b in blocks})


def _metrics(table: str) -> tuple[str, ...]:
    return (LAST,) if table == BEYOND else TABLES[table].metrics


def _cell_text(col: Collected, key: CellKey) -> str:
    """Each of the table's metrics as ``mean ± std (n, p)``, labelled when there are
    several (``last: ...; best: ...``), then the unfinished runs."""
    metrics = _metrics(key[0])
    parts = []
    for m in metrics:
        text = format_cell(col.summary(key, m), col.comparison(key, m)[1])
        parts.append(f"{m}: {text}" if len(metrics) > 1 else text)
    text = "; ".join(parts)
    unfinished = col.cells[key].unfinished if key in col.cells else 0
    if unfinished:
        text += f"; {unfinished} unfinished"
    return text


def shown_rows(spec: TableSpec, present: set[str]) -> list[str]:
    """A table's rows in display order: the declared ones; for a table whose rows come from
    its runs, those with runs (declared first, then the others by name)."""
    declared = list(spec.row_order())
    if not spec.rows_from_runs:
        return declared
    return [r for r in declared if r in present] + sorted(present - set(declared))


def _arrange(spec: TableSpec, ours: list[str], paper: list[str]) -> list[str]:
    if not spec.interleave_published or not paper:
        return [*ours, *paper]
    return [x for pair in zip(ours, paper, strict=True) for x in pair]


def _header(spec: TableSpec, cols: Sequence[str]) -> list[str]:
    ours = [f"{spec.col_label(c)} (ours)" for c in cols]
    paper = ([f"{spec.col_label(c)} ({spec.published_header})" for c in cols]
             if spec.published is not None else [])
    return [spec.header(), *_arrange(spec, ours, paper)]


def _reference_rows(col: Collected, spec: TableSpec, cols: Sequence[str],
                    block: str | None) -> list[list[str]]:
    rows = []
    for ref in spec.reference_rows:
        if ref.cell not in col.cells:
            continue
        ours = [format_cell(col.summary(ref.cell)) if c == ref.col else "" for c in cols]
        paper = [TABLES[ref.cell[0]].published_cell(ref.cell[1], ref.cell[2], block)
                 if c == ref.col else "" for c in cols]
        rows.append([ref.label, *_arrange(spec, ours, paper)])
    return rows


def table_rows(col: Collected, table: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one table as Markdown cell text (ours, and the published)."""
    if table == BEYOND:
        return beyond_rows(col)
    spec = TABLES[table]
    block = _published_block(col, table)
    present = [k for k in col.cells if k[0] == table]
    cols = spec.columns(k[2] for k in present)
    rows = _reference_rows(col, spec, cols, block)
    for r in shown_rows(spec, {k[1] for k in present}):
        keys = [(table, r, c) for c in cols]
        paper = ([spec.published_cell(r, c, block) for c in cols]
                 if spec.published is not None else [])
        # A row with neither our runs nor a published number says nothing.
        if not any(k in col.cells for k in keys) and all(p == "–" for p in paper):
            continue
        ours = [_cell_text(col, k) if k in col.cells else "–" for k in keys]
        rows.append([spec.row_label(r), *_arrange(spec, ours, paper)])
    return _header(spec, cols), rows


def _beyond_columns(col: Collected) -> list[str]:
    cols = {k[2] for k in col.cells if k[0] == BEYOND}
    return sorted(cols, key=lambda c: (_index(list(_TEACHER_COLUMNS), c), c))


def beyond_rows(col: Collected) -> tuple[list[str], list[list[str]]]:
    """The :data:`BEYOND` table: one row per method (and KD table its meta named), one
    column per teacher kind, with the cells of the paper tables' statistics."""
    cols = _beyond_columns(col)
    header = ["Method", "p against the Baseline of",
              *(f"{_TEACHER_COLUMNS.get(c, f'KD from {c} teacher')} (ours)" for c in cols)]
    rows = []
    for row in sorted({k[1] for k in col.cells if k[0] == BEYOND}, key=_beyond_order):
        head, _, source = row.partition("@")
        method, _, variant = head.partition("+")
        where = TABLES[source].title.split(":")[0] if source else "–"
        ours = [_cell_text(col, (BEYOND, row, c)) if (BEYOND, row, c) in col.cells else "–"
                for c in cols]
        label = f"{loss_label(method)}, {variant}" if variant else loss_label(method)
        rows.append([label, where, *ours])
    return header, rows


def table_markdown(col: Collected, table: str) -> str:
    header, rows = table_rows(col, table)
    if table == BEYOND:
        return (f"### {BEYOND_TITLE}\n\n" + _md_table(header, rows)
                + "\n\nTop-1 test accuracy (%), mean ± sample std over seeds (n), of the runs "
                "no paper table has a cell for: KD baselines and loss variants the paper does "
                "not report (α tuned on the validation split like the paper's rows; see the "
                "α section), other methods, and runs whose meta names no table. p: each "
                "method vs the Baseline (logit MSE) row of the KD table its meta names, same "
                "column (none when it names none); ns = not significant at 0.05.\n")
    spec = TABLES[table]
    return (f"### {spec.title}\n\n" + _md_table(header, rows) + "\n\n"
            + spec.note_text(_published_block(col, table)))


def table_csv(col: Collected, table: str) -> str:
    """One line per cell (per cell and metric, with a ``metric`` column, for a table that
    shows several): the numbers behind the Markdown table."""
    keys = [k for k in col.cells if k[0] == table]
    spec = None if table == BEYOND else TABLES[table]
    if spec is None:
        cols = _beyond_columns(col)
        keys.sort(key=lambda k: (_beyond_order(k[1]), _index(cols, k[2])))
    else:
        rows = shown_rows(spec, {k[1] for k in keys})
        cols = spec.columns(k[2] for k in keys)
        keys.sort(key=lambda k: (_index(rows, k[1]), _index(cols, k[2])))
    block = None if spec is None else _published_block(col, table)
    metrics = _metrics(table)
    labelled = len(metrics) > 1
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["table", "row", "col", *(["metric"] if labelled else []), "n", "mean", "std",
                "values", "diverged", "diverged_steps", "failed", "unfinished", "baseline",
                "p_welch", "significant_0.05", "paper"])
    for key in keys:
        for m in metrics:
            s = col.summary(key, m)
            base, comp = col.comparison(key, m)
            w.writerow([
                table, key[1], key[2], *([m] if labelled else []), s.n, _num(s.mean),
                _num(s.std), " ".join(f"{v:.4f}" for v in s.values), len(s.diverged_steps),
                " ".join(str(k) for k in s.diverged_steps if k is not None), s.failed,
                col.cells[key].unfinished, "/".join(base) if base else "",
                _num(comp.p) if comp else "",
                (comp.significant() if comp and comp.tested else ""),
                "" if spec is None else spec.published_cell(key[1], key[2], block),
            ])
    return buf.getvalue()


def _index(seq: Sequence[str], x: str) -> int:
    return seq.index(x) if x in seq else len(seq)


def _num(x: float) -> str:
    return "" if x is None or not math.isfinite(x) else f"{x:.6g}"


def alpha_markdown(col: Collected) -> str:
    if not col.alpha_rows:
        return ""
    rows = []
    for r in col.alpha_rows:
        if r.get("alpha_from"):
            used = ", ".join(f"{a:g}" for a in r["used"])
            rows.append([r["label"], f"α of {r['alpha_from']}", "–", "–", used])
            continue
        scores = ", ".join(
            f"α={a:g}: {v:.2f}" if math.isfinite(v) else f"α={a:g}: failed"
            for a, v in r["val_acc"].items())
        used = ", ".join(f"{a:g}" for a in r["used"]) or "–"
        flag = "" if not r["used"] or r["used"] == [r["chosen"]] else " (differs!)"
        rows.append([r["label"], ", ".join(f"{a:g}" for a in r["candidates"]), scores,
                     f"{r['chosen']:g}", used + flag])
    return ("### α (weight of the KD loss, Eq. 6) chosen on the validation split\n\n"
            + _md_table(["Cell", "Candidates", "Validation accuracy (%) per α",
                         "Chosen α", "α used by the test runs"], rows)
            + "\n\nTuning runs train on the training split minus the validation split and are "
            "scored on the validation split; the test set is never used to choose α. "
            "Ties go to the candidate listed first.\n")


def alpha_csv(col: Collected) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["cell", "alpha", "val_acc_mean", "chosen", "used"])
    for r in col.alpha_rows:
        if r.get("alpha_from"):
            for a in r["used"]:
                w.writerow([r["cell"], f"{a:g}", "", f"from {r['alpha_from']}", True])
        for a in r["candidates"]:
            w.writerow([r["cell"], f"{a:g}", _num(r["val_acc"].get(a, math.nan)),
                        a == r["chosen"], a in r["used"]])
    return buf.getvalue()


def runs_csv(col: Collected) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["name", "status", "stage", "table", "seed", "alpha", "test_acc", "val_acc",
                "diverged_step", "epochs", "wall_time_s", "problem", "path"])
    for r in col.records:
        t = r.meta.get("table")
        w.writerow([r.name, r.status, r.meta.get("stage", ""),
                    " ".join(t) if isinstance(t, list) else (t or ""), r.meta.get("seed", ""),
                    r.meta.get("alpha", ""), _num(r.test_acc or math.nan),
                    _num(r.val_acc or math.nan), r.diverged_step or "",
                    r.result.get("epochs", ""), r.result.get("wall_time_s", ""),
                    r.problem or (r.result.get("error") or ""), str(r.path)])
    return buf.getvalue()


def _get(d: dict[str, Any], dotted: str) -> Any:
    for k in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def setup_markdown(col: Collected) -> str:
    """Machine, versions and the budgets the runs used (from result.json and config.yaml)."""
    recs = col.records
    devices = sorted({str(r.result.get("device")) for r in recs if r.result.get("device")})
    versions: dict[str, set[str]] = defaultdict(set)
    for r in recs:
        for k, v in (r.result.get("versions") or {}).items():
            versions[k].add(str(v))
    hosts = sorted({str(r.result.get("host")) for r in recs if r.result.get("host")})
    wall = sum(float(r.result.get("wall_time_s") or 0) for r in recs)
    counts: dict[str, int] = defaultdict(int)
    for r in recs:
        counts[r.status] += 1
    lines = ["## Setup", ""]
    lines.append(f"- Runs: {len(recs)} (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
                 + f"); total training time {wall / 60:.1f} min (sum over runs)")
    lines.append(f"- Device(s): {', '.join(devices) or 'not recorded'}"
                 + (f"; host(s): {', '.join(hosts)}" if hosts else ""))
    if versions:
        lines.append("- Versions: " + ", ".join(f"{k} {'/'.join(sorted(v))}"
                                                 for k, v in sorted(versions.items())))
    lines.append(f"- Report written on {platform.node() or 'unknown host'} "
                 f"({platform.system()} {platform.machine()}, Python {platform.python_version()})")
    lines.append("- Accuracy: top-1 on the test split at the last epoch (not the best epoch).")
    best = [TABLES[t].title.split(":")[0] for t in col.tables if BEST in _metrics(t)]
    if best:
        lines[-1] = lines[-1][:-1] + (f"; {', '.join(best)} also show the best epoch (the "
                                      "highest per-epoch test accuracy in metrics.jsonl).")
    # Budgets per grid entry: what each kind of run trained for.
    per_entry: dict[str, list[RunRecord]] = defaultdict(list)
    for r in recs:
        per_entry[str(r.meta.get("entry") or r.name)].append(r)
    rows = []
    for entry, rs in per_entry.items():
        c = rs[0].config
        finals = [r for r in rs if r.meta.get("stage", Stage.FINAL) == Stage.FINAL]
        tunes = [r for r in rs if r.meta.get("stage") == Stage.TUNE]
        wall_e = [float(r.result["wall_time_s"]) for r in rs if r.result.get("wall_time_s")]
        rows.append([
            entry, str(_get(c, "task.name") or "?"),
            _model_label(c),
            str(_get(c, "data.name") or "?"), str(_get(c, "train.epochs") or "?"),
            str(_get(c, "train.batch_size") or "?"),
            f"{_get(c, 'optim.name') or '?'} lr {_get(c, 'optim.lr') or '?'}",
            f"{len(finals)} + {len(tunes)} tune",
            f"{sum(wall_e) / len(wall_e):.1f}" if wall_e else "–",
        ])
    lines += ["", "Budgets used:", "",
              _md_table(["Entry", "Task", "Model", "Data", "Epochs", "Batch", "Optimizer",
                         "Runs", "Mean wall time per run (s)"], rows)]
    # Loss arguments change what a row means (e.g. a row-normalized Gram): say which were set.
    settings: dict[str, str] = {}
    for r in recs:
        args = _get(r.config, "task.loss_args")
        if _get(r.config, "task.name") == "distill" and isinstance(args, dict) and args:
            cell = str(r.meta.get("cell") or r.name)
            settings.setdefault(cell, f"`{_get(r.config, 'task.loss')}` "
                                + ", ".join(f"{k}={v}" for k, v in sorted(args.items())))
    if settings:
        lines += ["", "Loss arguments set by the grid (others are the loss defaults): "
                  + "; ".join(f"{c}: {v}" for c, v in sorted(settings.items())) + "."]
    return "\n".join(lines) + "\n"


def problems_markdown(col: Collected) -> str:
    bad = [r for r in col.records
           if r.status in (RunStatus.FAILED, CORRUPT, UNFINISHED, RunStatus.DIVERGED)]
    if not bad:
        return ""
    rows = []
    for r in bad:
        why = r.problem or r.result.get("error") or ""
        if r.status == RunStatus.DIVERGED:
            step = r.diverged_step
            why = f"diverged at step {step}" if step is not None else "diverged"
        if r.status == UNFINISHED:
            why = "no result.json yet (interrupted or not started; `supkd grid` resumes it)"
        rows.append([r.name, r.status, str(why).splitlines()[0][:160] if why else ""])
    return "## Runs that did not complete\n\n" + _md_table(["Run", "Status", "Why"], rows) + "\n"


def _short_method(meta: dict[str, Any]) -> str:
    if meta.get("method") and any(TABLES[t].kd_baseline_row for t in tables_of(meta)):
        return str(meta["method"])
    return str(meta.get("cell") or meta.get("method") or "?")


def cka_figure(col: Collected, out: Path) -> tuple[Path | None, str, str]:
    """Fig. 2 from the ``cka.json`` files the grid wrote into KD students' run directories:
    same-stage CKA (teacher vs student) per stage, mean ± sample std over seeds, one line per
    method. Returns (PNG path or None, Markdown table, CSV text)."""
    per: dict[str, list[dict[str, float]]] = defaultdict(list)
    stages: list[str] = []
    sanity: list[float] = []
    for rec in col.records:
        path = rec.path / "cka.json"
        if rec.meta.get("stage", Stage.FINAL) != Stage.FINAL or not path.is_file():
            continue
        try:
            data = CkaRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))
            diag = data.diagonal()
            order = [s for s in data.teacher_stages or diag if s in diag]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError):
            continue  # a partial or foreign file: leave it out of the figure
        sanity += [float(v) for v in (data.sanity or {}).values()]
        stages += [s for s in order if s not in stages]
        per[_short_method(rec.meta)].append(diag)
    if not per:
        return None, "", ""
    methods = sorted(per, key=lambda m: (_index(method_order(), m), m))
    series: dict[str, dict[str, Any]] = {}
    rows = []
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["method", "stage", "n", "mean", "std"])
    for m in methods:
        means, stds, cells = [], [], []
        for st in stages:
            vals = [d[st] for d in per[m] if st in d and math.isfinite(d[st])]
            mean = float(np.mean(vals)) if vals else math.nan
            std = float(np.std(vals, ddof=1)) if len(vals) >= 2 else math.nan
            means.append(mean)
            stds.append(std)
            cells.append("–" if not vals else (f"{mean:.3f}" if len(vals) < 2
                                               else f"{mean:.3f} ± {std:.3f}"))
            w.writerow([m, st, len(vals), _num(mean), _num(std)])
        series[m] = {"mean": means, "std": stds, "n": len(per[m])}
        rows.append([m, str(len(per[m])), *cells])
    png = plot_cka_per_stage(stages, series, out / "fig2_cka.png",
                             title="Fig. 2: layer-wise CKA, teacher vs KD student")
    note = ("Same-stage linear CKA between the teacher and each KD student on the test split "
            "(unbiased minibatch estimator), mean ± sample std over seeds.")
    if sanity:
        note += (f" Sanity check: teacher vs itself = {min(sanity):.3f}–{max(sanity):.3f} "
                 "(should be 1).")
    md = _md_table(["Method", "Runs", *stages], rows) + "\n\n" + note + "\n"
    return png, md, buf.getvalue()


@dataclass
class Report:
    """Paths written by :func:`write_report` and the Markdown of each table."""

    out_dir: Path
    markdown_path: Path
    tables: dict[str, str]
    files: list[Path]


def write_report(
    runs_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    figures: dict[str, Path] | None = None,
    title: str | None = None,
) -> Report:
    """Read every run under ``runs_dir`` and write ``report.md`` and CSVs to ``out_dir``
    (default ``runs_dir/report``). ``figures`` maps a caption to a PNG to embed (Fig. 2).
    Raises ``DataError`` when ``runs_dir`` is not a folder."""
    runs_dir = Path(runs_dir)
    out = Path(out_dir) if out_dir is not None else runs_dir / "report"
    records = [r for r in scan_runs(runs_dir) if out not in r.path.parents]
    prepare_output_dir(out, "report: folder", hint="pass --out a writable folder")
    try:
        return _write_report(runs_dir, out, records, figures, title)
    except OSError as exc:
        # A path under a regular file, a read-only or full disk: the user's --out, not a bug.
        raise UserError(f"report: cannot write to folder {out} "
                        f"({exc.strerror or type(exc).__name__}); pass --out a writable "
                        "folder") from None


def _write_report(runs_dir: Path, out: Path, records: list[RunRecord],
                  figures: dict[str, Path] | None, title: str | None) -> Report:
    col = collect(records)
    files: list[Path] = []
    tables = {t: table_markdown(col, t) for t in col.tables}
    parts = [f"# {title or 'supkd report'}", "",
             f"Built from {len(records)} run directories under `{runs_dir}` by `supkd report`.",
             ""]
    data_names = sorted({str(_get(r.config, "data.name")) for r in records
                         if _get(r.config, "data.name")})
    if data_names and not set(data_names) & {"cifar10", "cifar10-jpeg", "imagenet", "imagenet1k"}:
        parts += [f"Our runs use data `{', '.join(data_names)}` and the models listed under "
                  "Setup; the paper's columns are its CIFAR-10 / ImageNet-1k numbers, shown for "
                  "reference, not as a like-for-like comparison.", ""]
    if not tables:
        parts += ["No finished run carries table placement (`meta.table`); nothing to tabulate.",
                  ""]
    parts.append("## Results\n")
    for t, md in tables.items():
        parts.append(md)
        csv_path = out / f"{t}.csv"
        atomic_write_text(csv_path, table_csv(col, t))
        files.append(csv_path)
    figures = dict(figures or {})
    png, cka_md, cka_csv = cka_figure(col, out)
    if png is not None:
        parts += ["### Fig. 2: layer-wise CKA between the teacher and each KD student", "",
                  "![Fig. 2: layer-wise CKA](fig2_cka.png)", "", cka_md]
        atomic_write_text(out / "fig2_cka.csv", cka_csv)
        files += [png, out / "fig2_cka.csv"]
    for caption, png in figures.items():
        rel = Path(png)
        with contextlib.suppress(ValueError):  # outside out_dir: keep the path as given
            rel = Path(png).resolve().relative_to(out.resolve())
        parts += [f"### {caption}", "", f"![{caption}]({rel.as_posix()})", ""]
    alpha = alpha_markdown(col)
    if alpha:
        parts.append(alpha)
        atomic_write_text(out / "alpha.csv", alpha_csv(col))
        files.append(out / "alpha.csv")
    parts.append(setup_markdown(col))
    probs = problems_markdown(col)
    if probs:
        parts.append(probs)
    atomic_write_text(out / "runs.csv", runs_csv(col))
    files.append(out / "runs.csv")
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(parts))
    files.insert(0, md_path)
    return Report(out, md_path, tables, files)


__all__ = ["Collected", "Report", "collect", "table_markdown", "write_report"]

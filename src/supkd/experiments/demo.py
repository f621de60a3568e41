"""``supkd demo``: the paper's whole protocol in miniature, offline, in about two minutes.

Runs the grid in ``supkd/configs/demo.yaml`` (CE and SupCon teachers with the SupCon linear
stage, CE and SupCon students, every KD loss from the SupCon teacher with α tuned on the
validation split, the logit-MSE baseline from the CE teacher, the normalization ablation of
``supcon_kd``, and layer-wise CKA) on scikit-learn's embedded digits, then writes the report
and prints Tables I, II and V.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

import yaml

from supkd.config import merge
from supkd.errors import UserError
from supkd.experiments.grid import GridResult, GridSpec, PlannedRun, parse_grid, run_grid
from supkd.experiments.report import Report, write_report

DEMO_TABLES = ("table1", "table2", "table5")


def demo_raw() -> dict[str, Any]:
    """The demo grid spec as a dict (the file shipped in the package)."""
    text = resources.files("supkd.configs").joinpath("demo.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def demo_spec(seeds: int = 2, overrides: Mapping[str, Any] | None = None) -> GridSpec:
    """The demo grid with ``seeds`` seeds (0..seeds-1); ``overrides`` are merged into the
    spec's top level (``base`` and the other sections are merged key by key)."""
    if seeds < 1:
        raise UserError(f"--seeds: expected a number of seeds >= 1, got {seeds}")
    raw = demo_raw()
    raw["seeds"] = list(range(seeds))
    return parse_grid(merge(raw, overrides), "supkd/configs/demo.yaml")


def default_jobs() -> int:
    """Parallel runs: one per core, at most 4 (tiny runs stop scaling beyond that)."""
    return max(1, min(4, os.cpu_count() or 1))


def run_demo(
    out: str | Path = "runs/demo",
    *,
    jobs: int | None = None,
    seeds: int = 2,
    stream: TextIO | None = sys.stdout,
    overrides: Mapping[str, Any] | None = None,
    only: Callable[[PlannedRun], bool] | None = None,
    run_fn: Callable[..., dict[str, Any]] | None = None,
) -> tuple[GridResult, Report]:
    """Run the demo grid into ``out`` and write ``out/report``. Completed runs of an earlier
    demo with the same settings are reused; runs whose settings changed are redone."""
    t0 = time.perf_counter()
    spec = demo_spec(seeds, overrides)
    jobs = jobs or default_jobs()
    res = run_grid(spec, out, jobs=jobs, stream=stream, rerun_changed=True, only=only,
                   **({"run_fn": run_fn} if run_fn else {}))
    rep = write_report(out, title="supkd demo report (digits, offline)")
    if stream is not None:
        print("", file=stream)
        for t in DEMO_TABLES:
            if t in rep.tables:
                print(rep.tables[t], file=stream)
        if res.problems:
            print(f"{len(res.problems)} run(s) did not complete (diverged runs are expected in "
                  "Table V):", file=stream)
            for p in res.problems[:12]:
                print(f"  {p}", file=stream)
        print(f"demo finished in {time.perf_counter() - t0:.0f} s with {jobs} job(s)", file=stream)
        print(f"report: {rep.markdown_path}", file=stream)
    return res, rep

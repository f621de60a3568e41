"""``supkd report RUNS_DIR``: tables (and Fig. 2 when CKA results exist) from run directories.

Reads only the run directories under RUNS_DIR (config.yaml + result.json), so a report can be
rebuilt at any time, also while a grid is still running (unfinished runs are counted).
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("write report.md + CSV tables (paper Tables I-V, Fig. 2, the CIFAR-100/ImageNet KD "
        "benchmark) from a folder of runs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", metavar="RUNS_DIR", help="folder of run directories")
    parser.add_argument("--out", default=None,
                        help="output folder for report.md and CSVs (default RUNS_DIR/report)")
    parser.add_argument("--quiet", action="store_true",
                        help="do not print the tables, only where report.md is")


def run(args: argparse.Namespace) -> int:
    import warnings

    from supkd.errors import DataError, SupkdWarning
    from supkd.experiments.report import write_report
    from supkd.experiments.store import scan_runs

    runs = scan_runs(Path(args.runs_dir))
    if not runs:
        raise DataError(f"runs folder {args.runs_dir}: holds no run directories (expected "
                        "folders with a config.yaml or result.json, e.g. a grid's --out)")
    rep = write_report(Path(args.runs_dir), args.out)
    for r in runs:
        if r.problem is not None:  # also in report.md; said here so that it is not missed
            warnings.warn(f"run {r.path}: {r.status}, {r.problem}", SupkdWarning, stacklevel=1)
    if not args.quiet:
        for md in rep.tables.values():
            print(md)
    print(f"report: {rep.markdown_path}")
    return 0

"""``supkd demo``: the whole pipeline offline on the embedded digits, in about two minutes."""

from __future__ import annotations

import argparse

HELP = ("run the paper's protocol in miniature offline (teachers, students, every KD loss, "
        "ablation, CKA, report) and print Tables I, II and V")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo",
                        help="folder for the runs and the report (default runs/demo)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at once, in separate processes (default: cores, at most 4)")
    parser.add_argument("--seeds", type=int, default=2,
                        help="seeds per table cell (default 2; tables need >= 2 for std)")


def run(args: argparse.Namespace) -> int:
    from supkd.errors import UserError
    from supkd.experiments.demo import run_demo

    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs: expected a number >= 1, got {args.jobs}")
    res, _ = run_demo(args.out, jobs=args.jobs, seeds=args.seeds)
    return 0 if res.ok else 1

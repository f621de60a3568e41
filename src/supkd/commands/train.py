"""``supkd train CONFIG [key=value ...] [--out DIR] [--resume] [--quiet]``: one training run.

``supkd train GRID.yaml --run NAME [key=value ...]``: one run of a grid spec (e.g.
``ce_teacher-s0``, as ``supkd grid GRID.yaml --dry-run`` lists them), trained with the config
the grid resolves for it (:mod:`supkd.experiments.grid_run`). Its folder defaults to
``runs/<grid name>/NAME``, where ``supkd grid`` puts it; with ``--out DIR`` the runs it
needs are DIR's siblings. Overrides apply to the resolved run config.

Exit codes: 0 completed; 2 user error (bad config, data, teacher; one line on stderr);
3 the run diverged (non-finite loss; result.json records the step); 130 interrupted
(Ctrl-C or SIGTERM; a checkpoint was saved, continue with ``--resume``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from supkd.vocab import RunStatus

HELP = ("train one run (teacher, linear stage, baseline or KD student) from a YAML config, "
        "or one run of a grid spec (--run NAME)")

EXIT_DIVERGED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", help="run config (YAML), or a grid spec with --run, e.g. "
        "configs/fast/cifar10.yaml --run ce_teacher-s0"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],  # without a default argparse lists it among the missing arguments
        metavar="key=value",
        help="dotted overrides applied on top of the file, e.g. optim.lr=0.1 task.alpha=2",
    )
    parser.add_argument(
        "--run", metavar="NAME", default=None,
        help="train one run of the grid spec CONFIG (names: supkd grid CONFIG --dry-run), "
        "with the config the grid resolves for it",
    )
    parser.add_argument("--out", metavar="DIR",
                        help="run directory (default: runs/<name>; with --run "
                             "runs/<grid name>/<run name>)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run in --out from checkpoints/last.pt "
        "(a finished run is left as it is)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")


def run(args: argparse.Namespace) -> int:
    from supkd.config import read_yaml
    from supkd.errors import ConfigError
    from supkd.train import distributed as dist_utils
    from supkd.train import load_run_config as load_config
    from supkd.train.engine import run as run_training
    from supkd.train.run_dir import RunDir

    raw = read_yaml(args.config)
    if args.run is not None:
        cfg, out = _grid_run(args, raw)
    elif "runs" in raw:  # run configs have no 'runs'; grid specs always do
        raise ConfigError(f"config file {args.config}: is a grid spec (it has 'runs'); run "
                          f"it with: supkd grid {args.config}, or one run of it with "
                          f"--run NAME")
    else:
        cfg = load_config(raw, args.overrides)
        out = Path(args.out) if args.out else RunDir.under("runs", cfg.name, "name").path
    try:
        result = run_training(cfg, out, resume=args.resume, quiet=args.quiet)
        # Asked before cleanup(): after it every process reads as rank 0. The messages are
        # printed once per run, not once per torchrun process.
        main = dist_utils.is_main()
    finally:
        dist_utils.cleanup()
    status = result.get("status")
    if status == RunStatus.DIVERGED:
        if not main:
            return EXIT_DIVERGED
        print(
            f"supkd train: run '{cfg.name}' diverged at step {result.get('diverged_step')} "
            f"(non-finite loss); see {out / 'result.json'}",
            file=sys.stderr,
        )
        return EXIT_DIVERGED
    if not args.quiet and main:
        acc = result.get("test_acc")
        acc_text = f"test accuracy {acc:.2f}%" if acc is not None else "no classifier accuracy"
        print(f"run '{cfg.name}' {status}: {acc_text}; results in {out}")
    return 0


def _grid_run(args: argparse.Namespace, raw: dict) -> tuple[object, Path]:
    """(run config, run directory) of ``--run NAME`` of the grid spec ``args.config``."""
    from supkd.errors import ConfigError
    from supkd.experiments.grid import parse_grid
    from supkd.experiments.grid_run import resolve_run
    from supkd.train import load_run_config
    from supkd.train.run_dir import RunDir

    if "runs" not in raw:
        raise ConfigError(f"--run: config file {args.config} is a run config, not a grid spec "
                          f"(it has no 'runs'); train it without --run")
    spec = parse_grid(raw, args.config)
    runs_dir = Path(args.out).parent if args.out else Path("runs") / spec.name
    cfg = resolve_run(spec, args.run, runs_dir, args.config, args.overrides)
    out = Path(args.out) if args.out else RunDir.under(runs_dir, args.run, "--run").path
    return load_run_config(cfg), out

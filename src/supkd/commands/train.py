"""``supkd train CONFIG [key=value ...] [--out DIR] [--resume] [--quiet]``: one training run.

Exit codes: 0 completed; 2 user error (bad config, data, teacher; one line on stderr);
3 the run diverged (non-finite loss; result.json records the step); 130 interrupted
(Ctrl-C or SIGTERM; a checkpoint was saved, continue with ``--resume``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from supkd.vocab import RunStatus

HELP = "train one run (teacher, linear stage, baseline or KD student) from a YAML config"

EXIT_DIVERGED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", help="run config (YAML), e.g. configs/fast/cifar10_ce_teacher.yaml"
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        default=[],  # without a default argparse lists it among the missing arguments
        metavar="key=value",
        help="dotted overrides applied on top of the file, e.g. optim.lr=0.1 task.alpha=2",
    )
    parser.add_argument("--out", metavar="DIR", help="run directory (default: runs/<name>)")
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
    if "runs" in raw:  # run configs have no 'runs'; grid specs always do
        raise ConfigError(f"config file {args.config}: is a grid spec (it has 'runs'); run "
                          f"it with: supkd grid {args.config}")
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

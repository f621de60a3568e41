"""``supkd grid CONFIG``: run a grid of runs (teachers, linear stages, students; methods x
seeds x α) in dependency order; skips completed runs, resumes interrupted ones, records
diverged and failed runs and goes on; then writes the report.

``--launcher local`` (default: this machine, ``--jobs N`` at once), ``slurm`` (a job per
run, or packed workers with ``--pack N``; submitit), ``ray`` (a task per run) or a plugin's
launcher (``supkd --plugin FILE``); ``--status`` shows where each run stands and which job
or worker holds it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from supkd.vocab import RunKind

#: Top-level keys of a run config that a grid spec never has (a spec puts them in ``base``).
_RUN_CONFIG_KEYS = ("data", "model", "optim", "schedule", "train", "task")

HELP = "run a grid spec (e.g. configs/paper/cifar10.yaml) resumably, then write its report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG", help="grid spec YAML")
    parser.add_argument("--out", default=None,
                        help="folder of the run directories (default runs/<grid name>)")
    parser.add_argument("--launcher", default="local", metavar="NAME",
                        help="where runs run: local (this machine, default), slurm "
                             "(a job per run, or packed: --pack), ray (a task per run), or "
                             "a launcher of a --plugin")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at once (local: processes, default 1; slurm/ray: jobs "
                             "submitted at once, default no limit)")
    parser.add_argument("--status", action="store_true",
                        help="show each run's state (done, running, queued, failed, "
                             "diverged, ...) and submit nothing")
    parser.add_argument("--detach", action="store_true",
                        help="slurm: submit what can be submitted (held with afterok on "
                             "the runs it needs) and exit; run again to attach")
    parser.add_argument("--on-interrupt", choices=("leave", "cancel"), default="leave",
                        help="slurm, on Ctrl-C: leave the jobs running for the next "
                             "`supkd grid` to attach to (default), or cancel them (each "
                             "saves a checkpoint); ray tasks always stop with the driver")
    parser.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                        help="ray: the cluster to join (default $RAY_ADDRESS, else start "
                             "one on this machine)")
    for flag in ("partition", "account", "qos", "constraint"):
        parser.add_argument(f"--{flag}", default=None,
                            help=f"slurm: --{flag} of every job (over the spec's "
                                 f"resources.slurm.{flag})")
    parser.add_argument("--pack", type=int, default=None, metavar="N",
                        help="slurm: a job is a worker that runs up to N runs (over the "
                             "spec's resources.slurm.pack; see docs/guide/packing.md)")
    parser.add_argument("--sbatch", action="append", default=[], metavar="FLAG=VALUE",
                        help="slurm: another sbatch flag for every job, e.g. "
                             "--sbatch exclusive=true (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="override the spec's seeds, e.g. --seeds 0 1 2")
    parser.add_argument("--only", default=None, metavar="SUBSTRING",
                        help="run only runs whose name contains SUBSTRING (and never their "
                             "dependencies: those must exist already)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the planned runs and their dependencies, run nothing")
    parser.add_argument("--rerun-changed", action="store_true",
                        help="redo finished runs whose config differs from the spec")
    parser.add_argument("--no-report", action="store_true", help="do not write the report")
    parser.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="overrides of the spec's base config, e.g. train.epochs=2")


def _slurm_options(args: argparse.Namespace) -> dict[str, Any]:
    from supkd.errors import UserError

    opts: dict[str, Any] = {k: getattr(args, k) for k in ("partition", "account", "qos",
                                                           "constraint") if getattr(args, k)}
    flags = {}
    for item in args.sbatch:
        flag, sep, value = item.partition("=")
        if not sep or not flag.strip("-"):
            raise UserError(f"--sbatch: expected FLAG=VALUE (e.g. exclusive=true), got {item!r}")
        flags[flag.strip().lstrip("-")] = True if value.lower() == "true" else value
    if flags:
        opts["sbatch"] = flags
    if args.pack is not None:
        if args.pack < 1:
            raise UserError(f"--pack: expected a number of runs per Slurm job >= 1, got "
                            f"{args.pack}")
        opts["pack"] = args.pack
    return opts


def _status(spec: Any, out: Path) -> int:
    from supkd.experiments.grid import plan_grid
    from supkd.experiments.grid.status import grid_status, print_status

    plan = plan_grid(spec, out)
    print_status(grid_status(plan, out), f"grid '{spec.name}': {len(plan)} runs in {out}")
    return 0


def run(args: argparse.Namespace) -> int:
    from supkd.config import apply_overrides
    from supkd.errors import UserError
    from supkd.experiments.grid import load_grid, parse_grid, plan_grid, read_grid_yaml, run_grid
    from supkd.experiments.report import write_report

    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs: expected a number >= 1, got {args.jobs}")
    raw_spec = read_grid_yaml(args.config)
    run_keys = [k for k in _RUN_CONFIG_KEYS if k in raw_spec]
    if "runs" not in raw_spec and run_keys:
        raise UserError(f"grid file {args.config}: is a run config (it has '{run_keys[0]}' and "
                        f"no 'runs'); train it with: supkd train {args.config}")
    spec = load_grid(args.config)
    if args.seeds is not None or args.overrides:
        raw = read_grid_yaml(args.config)
        if args.seeds is not None:
            raw["seeds"] = list(args.seeds)
            if isinstance(raw.get("tune"), dict) and "seeds" in raw["tune"]:
                raw["tune"]["seeds"] = [s for s in raw["tune"]["seeds"] if s in args.seeds] or [
                    args.seeds[0]]
        raw["base"] = apply_overrides(raw.get("base") or {}, args.overrides)
        spec = parse_grid(raw, args.config)
    out = Path(args.out) if args.out else Path("runs") / spec.name
    if args.dry_run:
        for r in _selected(plan_grid(spec, out), args.only, spec.name):
            deps = ", ".join(r.deps + r.soft_deps)
            print(f"{r.name:<40} {r.label:<5}" + (f"  after {deps}" if deps else ""))
            _check_planned(r)
        return 0
    if args.status:
        return _status(spec, out)
    only = (lambda r: args.only in r.name) if args.only else None
    for r in _selected(plan_grid(spec, out), args.only, spec.name):
        _check_wandb(r)  # before anything is submitted: a W&B login, the wandb package
    if not args.no_report and not args.detach:
        from supkd.utils.manifest import OutputFolder

        # The report's fixed names, before the runs: a user's own report.md in --out/report
        # is refused now, not after hours of training.
        OutputFolder(out / "report", "grid: report folder").claim(["report.md", "runs.csv"])
    options = {"ray_address": args.ray_address, "on_interrupt": args.on_interrupt,
               "overrides": {"slurm": _slurm_options(args)}}
    # stream: this call's sys.stdout (run_grid's default is the one of its import time)
    res = run_grid(spec, out, jobs=args.jobs, rerun_changed=args.rerun_changed, only=only,
                   launcher=args.launcher, launcher_options=options, detach=args.detach,
                   stream=sys.stdout)
    if args.detach:
        return 0 if res.ok else 1  # the report waits for the runs: `supkd report OUT`
    if not args.no_report:
        rep = write_report(out)
        for table in rep.tables.values():  # the tables with a filled cell, as `supkd demo`
            print(table)
        print(f"report: {rep.markdown_path}")
    return 0 if res.ok else 1


def _selected(plan: list[Any], only: str | None, grid: str) -> list[Any]:
    """The planned runs ``--only`` keeps (all without it); UserError when it keeps none."""
    from supkd.errors import UserError
    from supkd.utils.registry import did_you_mean

    if only is None:
        return plan
    kept = [r for r in plan if only in r.name]
    if not kept:
        names = [r.name for r in plan]
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise UserError(f"--only {only!r}: matches no run of grid '{grid}'"
                        f"{did_you_mean(only, names) or f' (its runs: {shown})'}")
    return kept


def _check_wandb(run: Any) -> None:
    """The planned run's ``train.wandb`` through :func:`supkd.train.loggers.check_wandb`,
    the message naming the run."""
    from supkd.config import WandbConfig
    from supkd.errors import ConfigError
    from supkd.train.loggers import check_wandb

    train = run.config.get("train") if run.stage != "cka" else None
    raw = train.get("wandb") if isinstance(train, dict) else None
    if not isinstance(raw, dict):
        return
    try:
        cfg = WandbConfig(**raw)
    except (TypeError, ConfigError):
        return  # a bad field: the run's own config check names it
    check_wandb(cfg, where=f"grid run '{run.name}': ")


def _check_planned(run: Any) -> None:
    """A planned run's resolved config through the checks ``supkd train`` makes
    (``supkd.train.load_run_config``); ConfigError naming the run on the first bad field.
    A ``${alpha}`` still to be tuned is checked with its first candidate."""
    import copy

    from supkd.errors import ConfigError
    from supkd.experiments.grid.plan import _refs, _substitute
    from supkd.train import load_run_config

    if run.kind == RunKind.CKA:
        return
    cfg = copy.deepcopy(run.config)
    if "alpha" in _refs(cfg):
        candidates = cfg.get("meta", {}).get("alpha_candidates") or []
        if not candidates:
            raise ConfigError(f"grid run '{run.name}': uses ${{alpha}} but has no alphas")
        cfg = _substitute(cfg, {"alpha": candidates[0]}, set(), f"runs.{run.cell}.config")
    try:
        load_run_config(cfg)
    except ConfigError as exc:
        raise ConfigError(f"grid run '{run.name}': {exc}") from None
    _check_wandb(run)

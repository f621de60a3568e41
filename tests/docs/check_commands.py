"""Run in a fresh process by ``test_examples.py``: check ``supkd`` command lines of the docs.

Reads a JSON list of argument lists (after ``supkd``) from argv[1], prints a JSON list of
problems. Each command is parsed by the CLI's own parser; its overrides must be
``key=value``. ``supkd train`` of a config in the repository loads it with its overrides
through ``supkd.train.load_run_config`` (plugins imported as the CLI would), and ``supkd
grid`` of a spec in the repository runs ``--dry-run``, which checks every planned run's
resolved config as ``supkd train`` would. A fresh process, so that plugins the commands load
do not stay registered in the test session.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path


def _alpha_filled(obj, alpha):
    """``obj`` with every ``${alpha}`` replaced by ``alpha`` (a tuned α, as a dry run does)."""
    if isinstance(obj, dict):
        return {k: _alpha_filled(v, alpha) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_alpha_filled(v, alpha) for v in obj]
    return alpha if obj == "${alpha}" else obj


def _check_grid_run(path: Path, name: str, overrides: list[str], out: Path) -> None:
    """``supkd train GRID --run NAME overrides``: the planned run exists and its config,
    with the overrides (and α's first candidate when it is still to be tuned), passes the
    checks ``supkd train`` makes. Whether the runs it needs have finished is the user's
    state, not the page's: not checked."""
    from supkd.config import apply_overrides
    from supkd.errors import ConfigError
    from supkd.experiments.grid import load_grid, plan_grid
    from supkd.train import load_run_config

    plan = {r.name: r for r in plan_grid(load_grid(path), out)}
    if name not in plan:
        raise ConfigError(f"--run {name!r}: the grid has no run of that name")
    cfg = apply_overrides(plan[name].config, overrides)
    candidates = cfg.get("meta", {}).get("alpha_candidates") or [1.0]
    load_run_config(_alpha_filled(cfg, candidates[0]))


def check(argv: list[str], repo: Path, out: Path) -> str | None:
    from supkd.cli import COMMANDS, build_parser
    from supkd.errors import UserError

    parser = build_parser(argv)
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            args, extra = parser.parse_known_args(argv)
    except SystemExit:
        return f"the CLI refuses it: {err.getvalue().strip().splitlines()[-1]}"
    if args.command not in COMMANDS:
        return "no supkd command in it"
    # the CLI's own rule (supkd.cli.main): KEY=VALUE and ~KEY leftovers are overrides
    bad = [a for a in extra if not (("=" in a and not a.startswith("-")) or a.startswith("~"))]
    if bad:
        return f"unknown arguments {bad}"
    overrides = list(getattr(args, "overrides", None) or []) + extra
    config = getattr(args, "config", None)
    path = repo / config if config else None
    if path is None or not path.is_file():
        return None  # a file of the user's (or made in the same block): the parser's word only
    from supkd.utils.plugins import load_plugins

    try:
        load_plugins([str(repo / "docs" / "examples" / p) for p in args.plugin or []])
        if args.command == "train" and getattr(args, "run", None):
            _check_grid_run(path, args.run, overrides, out)
        elif args.command == "train":
            from supkd.train import load_run_config

            load_run_config(path, overrides)
        elif args.command == "grid":
            from supkd.cli import main

            with contextlib.redirect_stdout(io.StringIO()):
                rc = main(["grid", str(path), *overrides, "--dry-run", "--out", str(out)])
            if rc != 0:
                return f"supkd grid --dry-run exits {rc}"
    except UserError as exc:
        return str(exc)
    return None


def main() -> None:
    repo = Path(__file__).resolve().parents[2]
    os.chdir(sys.argv[2])  # run folders of dry runs land in the test's folder
    problems = []
    for argv in json.loads(sys.argv[1]):
        why = check(argv, repo, Path(sys.argv[2]) / "dry")
        if why:
            problems.append(f"supkd {' '.join(argv)}: {why}")
    print(json.dumps(problems))


if __name__ == "__main__":
    main()

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
    bad = [a for a in extra if "=" not in a or a.startswith("-")]
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
        if args.command == "train":
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

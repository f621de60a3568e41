"""The ``supkd`` command line.

Each subcommand lives in its own module under :mod:`supkd.commands` and exposes
``HELP: str``, ``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported
lazily (only the one asked for, and torch only when a command runs) so that
``supkd --version`` and ``supkd --help`` start fast.

``supkd --plugin MODULE COMMAND ...`` (repeatable) imports a user's module before the
command runs, so that the losses, models, data sets or tasks it registers can be named in a
config; installed ``supkd.plugins`` entry points are imported too (:mod:`supkd.utils.plugins`).

Exit codes: 0 success; 2 user error (one line on stderr naming the field or file, no
traceback); 3 a single training run diverged (NaN/Inf loss); 130 interrupted by Ctrl-C.

Warnings about results that would mislead (:class:`supkd.errors.SupkdWarning`) are printed
once each, as ``supkd CMD: warning: MESSAGE`` on stderr. Argument errors show the usage of
the subcommand they belong to, and an unknown command gets the closest one.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from supkd import __version__
from supkd.errors import SupkdWarning, UserError
from supkd.utils.plugins import load_plugins
from supkd.utils.registry import did_you_mean

# name -> module under supkd.commands (one module per subcommand)
COMMANDS: dict[str, str] = {
    "demo": "demo",
    "train": "train",
    "grid": "grid",
    "report": "report",
    "cka": "cka",
    "losses": "losses",
    "models": "models",
    "import-teacher": "import_teacher",
}


def _load(name: str):
    return importlib.import_module(f"supkd.commands.{COMMANDS[name]}")


#: Options of the top-level parser that take a value (skipped when finding the command).
_VALUED_OPTIONS = ("--plugin",)


def _command_of(argv: Sequence[str]) -> str | None:
    """The first argument that is neither an option nor an option's value."""
    args = iter(argv)
    for a in args:
        if a in _VALUED_OPTIONS:
            next(args, None)
        elif not a.startswith("-"):
            return a
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="supkd",
        description="Knowledge distillation from supervised-contrastive (SupCon) teachers.",
    )
    parser.add_argument("--version", action="version", version=f"supkd {__version__}")
    parser.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE",
        help="import MODULE (a module name, or a .py file) before the command runs, e.g. one "
             "that registers a loss with @register_loss; repeatable",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only import the module of the command actually asked for (plus cheap help text for
    # the others) so that start-up stays fast.
    wanted = _command_of(argv) if argv else None
    for name in COMMANDS:
        if wanted is not None and wanted != name and wanted in COMMANDS:
            sub.add_parser(name)
            continue
        try:
            mod = _load(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("supkd.commands"):
                continue  # command not built yet
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_module=mod, _parser=p)
    return parser


class _WarningPrinter:
    """``warnings.showwarning`` for one command: each distinct SupkdWarning message once, as
    one ``supkd CMD: warning: ...`` line; other warnings the usual way."""

    def __init__(self, command: str, show: Any) -> None:
        self.command, self.show, self.seen = command, show, set()

    def __call__(self, message: Any, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
        if not issubclass(category, SupkdWarning):
            self.show(message, category, filename, lineno, file, line)
            return
        text = str(message).replace("\n", " ").strip()
        if text not in self.seen:
            self.seen.add(text)
            print(f"supkd {self.command}: warning: {text}", file=sys.stderr)


def _check_command(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """argparse's error (usage, exit 2) for an unknown command, with the closest one."""
    wanted = _command_of(argv)
    if wanted is not None and wanted not in COMMANDS:
        parser.error(f"argument COMMAND: invalid choice: {wanted!r}"
                     f"{did_you_mean(wanted, list(COMMANDS))} "
                     f"(choose from {', '.join(COMMANDS)})")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    _check_command(parser, argv)
    # key=value overrides may follow options (`supkd train cfg.yaml --out r optim.lr=0.1`);
    # argparse stops filling a positional nargs="*" at the first option, so collect the
    # leftovers that look like overrides and hand them to commands that take overrides.
    args, extra = parser.parse_known_args(argv)
    if extra:
        overrides = [a for a in extra if "=" in a and not a.startswith("-")]
        rest = [a for a in extra if a not in overrides]
        if rest or not hasattr(args, "overrides"):
            # the subcommand's own usage: the arguments it takes, not the command list
            getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides or []) + overrides
    if getattr(args, "_module", None) is None:
        parser.print_help()
        return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", SupkdWarning)  # _WarningPrinter keeps them unique
            warnings.showwarning = _WarningPrinter(args.command, warnings.showwarning)
            load_plugins(args.plugin, export=True)
            return int(args._module.run(args) or 0)
    except UserError as exc:
        msg = str(exc).replace("\n", " ").strip()
        print(f"supkd {args.command}: error: {msg}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"supkd {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

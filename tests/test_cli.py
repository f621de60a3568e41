"""The CLI dispatcher: version, help, exit codes, overrides placed after options."""

from __future__ import annotations

import pytest

from supkd import __version__
from supkd.cli import COMMANDS, main

REPO = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"supkd {__version__}"


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_override_after_options_reaches_the_config(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The unknown key can only be reported if the override placed after --out was passed on.
    cfg = REPO / "configs" / "fast" / "cifar10.yaml"
    code = main(["train", str(cfg), "--run", "ce_teacher-s0", "--out", str(tmp_path / "r"),
                 "optim.bogus_key=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "optim.bogus_key" in err
    assert len(err.strip().splitlines()) == 1


def test_unknown_option_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["losses", "--bogus"])
    assert exc.value.code == 2
    assert "--bogus" in capsys.readouterr().err


def test_override_to_command_without_overrides_is_rejected() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["losses", "a=b"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["train", "cfg.yaml"], "train"),
        (["--plugin", "mymod", "train", "cfg.yaml"], "train"),
        (["--plugin", "a", "--plugin", "b.py", "losses"], "losses"),
        (["--plugin=mymod", "report", "runs"], "report"),
        (["--plugin", "mymod"], None),
        (["--version"], None),
    ],
)
def test_the_command_is_found_past_the_plugin_option(argv, command) -> None:
    from supkd.cli import _command_of

    assert _command_of(argv) == command


def test_plugin_option_is_repeatable_and_parsed_before_the_command() -> None:
    from supkd.cli import build_parser

    argv = ["--plugin", "a", "--plugin", "./b.py", "losses", "--json"]
    args = build_parser(argv).parse_args(argv)
    assert args.plugin == ["a", "./b.py"] and args.command == "losses" and args.json


def test_no_command_loads_no_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    # Help is printed (exit 2) before any plugin is imported: a missing one is not an error.
    assert main(["--plugin", "no_such_module_anywhere"]) == 2
    assert "usage: supkd" in capsys.readouterr().out

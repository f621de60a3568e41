"""``supkd train``: exit codes 0 / 2 / 3, one-line errors with no traceback."""

from __future__ import annotations

import json

import pytest
import yaml

from supkd.cli import main


@pytest.fixture
def config_file(tmp_path, tiny):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(tiny("name=cli_run").to_dict()))
    return path


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_train_ok_then_refuses_to_overwrite(config_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["train", str(config_file), "train.epochs=1", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "result.json").read_text())["status"] == "completed"
    capsys.readouterr()
    assert main(["train", str(config_file), "--out", str(out), "--quiet"]) == 2
    assert "already holds a run" in _err_line(capsys)
    # --resume on a finished run leaves it as it is.
    assert main(["train", str(config_file), "--out", str(out), "--quiet", "--resume"]) == 0


def test_diverged_run_exits_3(config_file, tmp_path, capsys):
    out = tmp_path / "div"
    code = main(["train", str(config_file), "optim.lr=1e6", "schedule.name=constant",
                 "train.epochs=3", "--out", str(out), "--quiet"])
    assert code == 3
    assert "diverged at step" in _err_line(capsys)
    assert json.loads((out / "result.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optim.lrr=1"], "unknown config key 'optim.lrr' (did you mean 'optim.lr'?)"),
        (["train.epochs=many"], "config field 'train.epochs': expected an integer"),
        (["task.name=distill", "task.teacher=/no/such/run"], "task.teacher"),
        (["optim.lr"], "expected KEY=VALUE"),
    ],
)
def test_bad_input_exits_2_with_one_line(config_file, tmp_path, capsys, overrides, expected):
    code = main(["train", str(config_file), *overrides, "--out", str(tmp_path / "x"), "--quiet"])
    assert code == 2
    line = _err_line(capsys)
    assert line.startswith("supkd train: error: ") and expected in line


def test_missing_config_file_exits_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "none.yaml")]) == 2
    assert "none.yaml: not found" in _err_line(capsys)

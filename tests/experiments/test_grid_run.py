"""``supkd train GRID.yaml --run NAME``: one run of a grid with the config the grid resolves
for it; a later ``supkd grid`` over the same folder finds those runs done."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml

from supkd.cli import main
from supkd.experiments.grid import load_grid, plan_grid, run_grid, spec_hash
from supkd.experiments.grid_run import resolve_run
from supkd.experiments.store import load_run

# Digits, width-4 ResNet-18, two steps per run: a few seconds for the five runs.
GRID = {
    "grid": "tiny",
    "seeds": [0],
    "base": {
        "device": "cpu",
        "data": {"name": "digits", "image_size": 8, "subset": 96, "num_workers": 0},
        "model": {"name": "resnet18", "stem": "cifar", "width": 4},
        "optim": {"name": "sgd", "lr": 0.05},
        "train": {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "eval_batch_size": 64,
                  "progress": False},
    },
    "final": {"config": {"data": {"val_fraction": 0.0}}},
    "tune": {"seeds": [0], "config": {"data": {"val_fraction": 0.25}}},
    "runs": {
        "teacher": {"config": {"task": {"name": "ce"}},
                    "meta": {"table": "table1", "role": "teacher", "kind": "ce"}},
        "kd": {"alphas": [0.5, 2.0],
               "config": {"task": {"name": "distill", "teacher": "${run:teacher}",
                                   "loss": "logit_mse", "alpha": "${alpha}"}},
               "meta": {"table": "table2", "method": "logit_mse", "teacher_kind": "ce"}},
    },
}


@pytest.fixture()
def grid(tmp_path) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(GRID))
    return path


def _assert_within(want, got, where="config"):
    """Every value of ``want`` is in ``got`` at the same key path."""
    if isinstance(want, dict):
        assert isinstance(got, dict), where
        for k, v in want.items():
            assert k in got, f"{where}.{k}"
            _assert_within(v, got[k], f"{where}.{k}")
    else:
        assert got == want, where


def _train(grid: Path, name: str, out: Path, *extra: str) -> int:
    return main(["train", str(grid), "--run", name, "--out", str(out / name), "--quiet",
                 *extra])


@pytest.mark.slow
def test_runs_trained_one_by_one_are_the_grids_runs(grid, tmp_path, capfd):
    out = tmp_path / "runs"
    for name in ("teacher-s0", "kd-tune-a0.5-s0", "kd-tune-a2-s0", "kd-s0"):
        assert _train(grid, name, out) == 0, capfd.readouterr().err
    spec = load_grid(grid)
    planned = {r.name: r for r in plan_grid(spec, out)}
    # Each run's config is the grid's resolution (α chosen by the grid's rule from the
    # tuning runs' validation accuracy), and the folders are where the grid puts them.
    val = {a: load_run(out / f"kd-tune-a{a:g}-s0").val_acc for a in (0.5, 2.0)}
    chosen = 0.5 if val[0.5] >= val[2.0] else 2.0
    kd = yaml.safe_load((out / "kd-s0" / "config.yaml").read_text())
    assert kd["task"]["alpha"] == chosen and kd["meta"]["alpha"] == chosen
    assert kd["task"]["teacher"] == str(out.resolve() / "teacher-s0")
    teacher = yaml.safe_load((out / "teacher-s0" / "config.yaml").read_text())
    want = dict(planned["teacher-s0"].config)
    want["meta"] = {**want["meta"], "spec_hash": spec_hash(want)}
    _assert_within(want, teacher)  # config.yaml adds the defaults the plan leaves out
    assert teacher["meta"] == want["meta"]
    assert teacher["data"]["val_fraction"] == 0.0 and teacher["model"]["width"] == 4
    # The grid over the same folder trains nothing: every run is already done.
    stream = io.StringIO()
    res = run_grid(spec, out, stream=stream, rerun_changed=True)
    assert res.statuses == dict.fromkeys(planned, "cached"), stream.getvalue()
    assert stream.getvalue().count("already done") == 4
    assert res.alphas["kd"][0] == chosen


def test_unknown_run_is_exit_2_with_did_you_mean(grid, tmp_path, capsys):
    assert _train(grid, "teacher-s1", tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--run 'teacher-s1'" in err and "did you mean 'teacher-s0'?" in err
    assert "--dry-run" in err


def test_a_run_whose_dependency_is_missing_says_which(grid, tmp_path, capsys):
    assert _train(grid, "kd-tune-a0.5-s0", tmp_path) == 2
    err = capsys.readouterr().err.strip()
    assert "needs run teacher-s0" in err and "--run teacher-s0" in err
    assert not (tmp_path / "kd-tune-a0.5-s0").exists()
    # A teacher given on the command line replaces the grid's: nothing to wait for.
    spec = load_grid(grid)
    cfg = resolve_run(spec, "kd-tune-a0.5-s0", tmp_path, str(grid),
                      ["task.teacher=/elsewhere/my_teacher"])
    assert cfg["task"]["teacher"] == "/elsewhere/my_teacher" and cfg["task"]["alpha"] == 0.5


def test_a_tuned_run_needs_its_tuning_runs_or_an_alpha(grid, tmp_path, capsys):
    spec = load_grid(grid)
    out = tmp_path / "runs"
    (out / "teacher-s0").mkdir(parents=True)
    (out / "teacher-s0" / "result.json").write_text(json.dumps({"status": "completed"}))
    from supkd.errors import ConfigError

    with pytest.raises(ConfigError, match=r"takes α from its tuning runs.*task.alpha=VALUE"):
        resolve_run(spec, "kd-s0", out, str(grid))
    cfg = resolve_run(spec, "kd-s0", out, str(grid), ["task.alpha=3.0"])
    assert cfg["task"]["alpha"] == 3.0 and cfg["meta"]["alpha"] == 3.0
    assert cfg["meta"]["spec_hash"] == spec_hash(cfg)


def test_run_of_a_run_config_and_a_cka_entry_are_user_errors(grid, tmp_path, capsys):
    cfg = tmp_path / "one.yaml"
    cfg.write_text(yaml.safe_dump({"name": "x", **GRID["base"]}))
    assert main(["train", str(cfg), "--run", "teacher-s0"]) == 2
    assert "is a run config, not a grid spec" in capsys.readouterr().err
    with_cka = {**GRID, "cka": {"teacher": "teacher", "students": ["kd"]}}
    grid.write_text(yaml.safe_dump(with_cka))
    assert _train(grid, "kd-s0/cka", tmp_path) == 2
    assert "is a CKA analysis" in capsys.readouterr().err
    assert main(["train", str(grid)]) == 2
    assert "--run NAME" in capsys.readouterr().err

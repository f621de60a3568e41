"""Refusal catalogue, round 2 (issue 25, classes 6, 7 and 11): silent no-ops (an empty
config, ``--only`` that keeps no run, a report of folders that are not runs), overrides that
remove a key (``~key``) or reset a field (``key=null``), and a grid spec that extends
another with a misspelt run name.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from catalogue import TINY, refused, write_cfg

from supkd.config import ModelConfig, OptimConfig, TrainConfig
from supkd.train import load_run_config


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


BASE = {k: v for k, v in TINY.items() if k != "name"}


# ====================================================================== 6: silent no-ops
@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "\n\n   \n"])
def test_an_empty_config_file_is_refused(tmp_path, capsys, text):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    refused(capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], "c.yaml", "is empty",
            watch=[tmp_path])


def test_an_empty_grid_file_is_refused(tmp_path, capsys):
    spec = tmp_path / "g.yaml"
    spec.write_text("# todo\n")
    refused(capsys, ["grid", str(spec), "--out", str(tmp_path / "r")], "grid file", "g.yaml",
            "is empty", watch=[tmp_path])


def test_an_empty_file_that_a_config_extends_is_refused(tmp_path, capsys):
    (tmp_path / "parent.yaml").write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "extends": "parent.yaml"}))
    refused(capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], "parent.yaml",
            "is empty", watch=[tmp_path])


def _spec(tmp_path: Path, name: str = "g.yaml", **extra) -> Path:
    spec = tmp_path / name
    spec.write_text(yaml.safe_dump({
        "grid": "g", "base": BASE,
        "runs": {"ce_teacher": {"config": {"task": {"name": "ce"}}},
                 "kd_cosine": {"config": {"task": {"name": "distill", "loss": "cosine",
                                                   "teacher": "${run:ce_teacher}"}}}},
        **extra}))
    return spec


@pytest.mark.parametrize("only, hint", [
    ("kd_cosien", "did you mean"),   # a typo: the closest run
    ("linear", "its runs: ce_teacher-s0, kd_cosine-s0"),  # nothing like it: the runs
])
@pytest.mark.parametrize("dry", [False, True])
def test_only_that_keeps_no_run_is_refused(tmp_path, capsys, only, hint, dry):
    argv = ["grid", str(_spec(tmp_path)), "--only", only, "--out", str(tmp_path / "a" / "r")]
    refused(capsys, argv + (["--dry-run"] if dry else []), f"--only '{only}'",
            "matches no run of grid 'g'", hint, watch=[tmp_path])
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("content", [
    {"runs": {"a": {}}, "base": {}},          # a grid spec left in a results folder
    {"data": {"name": "digits"}},             # a partial run config of the user's
    {"name": "x", "seed": 0},
])
def test_a_report_of_folders_whose_config_is_not_a_run_is_no_runs(tmp_path, capsys, content):
    runs = tmp_path / "results"
    for sub in ("one", "two/deeper"):
        (runs / sub).mkdir(parents=True)
        (runs / sub / "config.yaml").write_text(yaml.safe_dump(content))
    refused(capsys, ["report", str(runs)], "runs folder", "holds no run directories (no runs",
            "a config.yaml of your own is not a run", watch=[tmp_path])


# ===================================================================== 7: ~key, key=null
def _loaded(tmp_path: Path, *overrides: str):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "optim": {"lr": 0.5, "weight_decay": 0.01},
                                   "data": {**TINY["data"], "split_seed": 3}}))
    return load_run_config(str(cfg), list(overrides))


def test_tilde_removes_a_key_and_null_resets_a_field_to_its_default(tmp_path):
    cfg = _loaded(tmp_path, "~model.width", "optim.lr=null", "~train.steps_per_epoch")
    assert cfg.model.width == ModelConfig().width == 64  # TINY's 4 is gone
    assert cfg.optim.lr == OptimConfig().lr != 0.5
    assert cfg.optim.weight_decay == 0.01  # the rest of the section is kept
    assert cfg.train.steps_per_epoch == TrainConfig().steps_per_epoch != 1
    # A field that takes null keeps null's own meaning (here: the run's seed).
    assert _loaded(tmp_path, "data.split_seed=null").data.split_seed is None
    # A whole section removed: its defaults.
    assert _loaded(tmp_path, "~optim").optim == OptimConfig()


def test_tilde_and_null_work_through_the_cli(tmp_path, capsys):
    from catalogue import run_cli

    cfg = write_cfg(tmp_path / "c.yaml", model={"width": 8})
    code, lines, _ = run_cli(capsys, ["train", str(cfg), "--out", str(tmp_path / "o"),
                                      "~model.width", "train.eval_batch_size=null", "--quiet"])
    assert code == 0, lines
    saved = yaml.safe_load((tmp_path / "o" / "config.yaml").read_text())
    assert saved["model"]["width"] == 64
    assert saved["train"]["eval_batch_size"] == TrainConfig().eval_batch_size  # not TINY's 64


@pytest.mark.parametrize("override, needles", [
    ("~model.widht", ["'~model.widht'", "no key 'model.widht'", "keys there: name, width"]),
    ("~schedule.milestones", ["no key 'schedule.milestones'"]),
    ("~model.width=8", ["expected ~KEY", "with no value"]),
    ("~", ["expected ~KEY"]),
    ("~.a", ["expected ~KEY"]),
])
def test_a_bad_removal_is_refused(tmp_path, capsys, override, needles):
    cfg = write_cfg(tmp_path / "c.yaml")
    refused(capsys, ["train", str(cfg), override, "--out", str(tmp_path / "o")], *needles,
            watch=[tmp_path])


def test_a_grid_override_can_remove_a_key_of_the_base(tmp_path, capsys):
    from catalogue import run_cli

    code, lines, _ = run_cli(capsys, ["grid", str(_spec(tmp_path)), "~model.width",
                                        "--dry-run"])
    assert code == 0, lines
    refused(capsys, ["grid", str(_spec(tmp_path)), "~model.depth", "--dry-run"],
            "no key 'model.depth'", watch=[tmp_path])


# ======================================================= 11: a typo in an extending spec
@pytest.mark.parametrize("entry, keys", [
    ({"meta": {"table": "table1"}}, "meta"),
    ({"seeds": [0, 1], "resources": {"cpus": 1}}, "resources, seeds"),
    ({}, "nothing"),
])
def test_an_override_of_a_run_the_extended_spec_lacks_is_refused(tmp_path, capsys, entry,
                                                                 keys):
    _spec(tmp_path, "base.yaml")
    child = tmp_path / "more.yaml"
    child.write_text(yaml.safe_dump({"extends": "base.yaml", "runs": {"kd_cosin": entry}}))
    refused(capsys, ["grid", str(child), "--dry-run"], "'runs.kd_cosin' only overrides",
            f"({keys})", "did you mean 'kd_cosine'?", "needs its own 'config'",
            watch=[tmp_path])


def test_a_new_run_with_its_own_config_in_an_extending_spec_is_accepted(tmp_path, capsys):
    from catalogue import run_cli

    _spec(tmp_path, "base.yaml")
    child = tmp_path / "more.yaml"
    child.write_text(yaml.safe_dump({"extends": "base.yaml", "runs": {
        "kd_cosine": {"resources": {"cpus": 1}},   # an override of an inherited run
        "kd_gram": {"config": {"task": {"name": "distill", "loss": "gram",
                                        "teacher": "${run:ce_teacher}"}}}}}))
    code, lines, out = run_cli(capsys, ["grid", str(child), "--dry-run"])
    assert code == 0, lines
    assert [ln.split()[0] for ln in out.splitlines()] == ["ce_teacher-s0", "kd_cosine-s0",
                                                          "kd_gram-s0"]

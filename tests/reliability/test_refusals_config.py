"""Refusal catalogue (issue 16), configs and values: YAML that PyYAML would read silently
wrong, numbers that only show up later as a NaN loss, devices and batch sizes this machine
or the model cannot use, grids whose runs would all fail, and the wrong file for a command.

Every case is ``supkd train`` / ``supkd grid`` in process: exit 2, one stderr line naming the
field or file, nothing written (the test's folder is the working directory and is watched).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from catalogue import TINY, refused, run_cli, warned, write_cfg

pytestmark = pytest.mark.usefixtures("in_tmp")


def _train(tmp_path: Path, cfg: Path, *overrides: str) -> list[str]:
    return ["train", str(cfg), *overrides, "--out", str(tmp_path / "out")]


# ============================================================================ YAML text
YAML_TEXTS = {
    "duplicate-top": ("name: a\nseed: 1\nname: b\n", "'name' is given twice"),
    "duplicate-nested": ("optim:\n  lr: 0.1\n  momentum: 0.9\n  lr: 0.5\n", "'lr' is given twice"),
    "duplicate-flow": ("train: {epochs: 1, epochs: 2}\n", "'epochs' is given twice"),
    "duplicate-in-list": ("meta:\n  runs:\n    - {a: 1, a: 2}\n", "'a' is given twice"),
    "recursive-list": ("meta: &m [1, *m]\n", "recursive"),
    "recursive-map": ("meta: &m\n  self: *m\n", "recursive"),
    "recursive-deep": ("meta: &m\n  a:\n    b: [*m]\n", "recursive"),
    "tab-indent": ("optim:\n\tlr: 0.1\n", "tab"),
    "tab-mixed": ("train:\n  epochs: 1\n\tbatch_size: 2\n", "tab"),
    "unclosed-list": ("schedule:\n  milestones: [60, 75\n", "line"),
}


@pytest.mark.parametrize("case", list(YAML_TEXTS))
def test_yaml_that_would_be_read_wrong_is_refused_with_its_line(tmp_path, capsys, case):
    text, needle = YAML_TEXTS[case]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    line = refused(capsys, _train(tmp_path, cfg), "c.yaml", needle, watch=[tmp_path])
    assert "line" in line


def test_a_yaml_merge_key_may_override_on_purpose(tmp_path, capsys):
    """``<<: *defaults`` then a key of its own is an override YAML allows, not a duplicate."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({k: v for k, v in TINY.items() if k != "train"})
                   + "meta:\n  defaults: &d {epochs: 1, batch_size: 16, steps_per_epoch: 1, "
                   "progress: false}\n"
                   "train:\n  <<: *d\n  batch_size: 8\n")
    code, lines, _ = run_cli(capsys, _train(tmp_path, cfg, "--quiet"))
    assert code == 0, lines
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert (saved["train"]["batch_size"], saved["train"]["epochs"]) == (8, 1)


def test_a_duplicate_key_in_an_override_is_refused(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml")
    refused(capsys, _train(tmp_path, cfg, "meta={a: 1, a: 2}"), "override", "'a' is given twice",
            watch=[tmp_path])


GRID_TEXTS = {
    "duplicate-run": ("runs:\n  a: {config: {}}\n  a: {config: {seed: 1}}\n", "'a' is given twice"),
    "duplicate-base": ("base:\n  seed: 1\n  seed: 2\nruns: {a: {}}\n", "'seed' is given twice"),
    "recursive": ("base: &b {x: *b}\nruns: {a: {}}\n", "recursive"),
    "tab": ("runs:\n\ta: {}\n", "tab"),
}


@pytest.mark.parametrize("case", list(GRID_TEXTS))
def test_a_grid_spec_is_read_as_strictly(tmp_path, capsys, case):
    text, needle = GRID_TEXTS[case]
    spec = tmp_path / "g.yaml"
    spec.write_text("grid: g\n" + text)
    refused(capsys, ["grid", str(spec), "--dry-run"], "g.yaml", needle, watch=[tmp_path])


# ============================================================ numbers that must be finite
NON_FINITE = [
    ("optim.lr", "inf"), ("optim.lr", ".inf"), ("optim.lr", "-.inf"), ("optim.lr", "nan"),
    ("optim.weight_decay", "inf"), ("optim.eps", "inf"), ("optim.betas", "[0.9, .nan]"),
    ("schedule.warmup_epochs", "inf"), ("schedule.gamma", "inf"),
    ("schedule.min_lr_factor", ".nan"), ("schedule.milestones", "[.inf]"),
    ("schedule.final_div_factor", "inf"), ("train.grad_clip", "inf"),
    ("data.supcon_jitter", "nan"), ("data.supcon_scale", "[0.2, .inf]"),
    ("task.label_smoothing", "nan"),
]


@pytest.mark.parametrize("field, value", NON_FINITE)
def test_a_non_finite_number_is_refused(tmp_path, capsys, field, value):
    cfg = write_cfg(tmp_path / "c.yaml")
    line = refused(capsys, _train(tmp_path, cfg, f"{field}={value}"), field, watch=[tmp_path])
    assert "finite" in line or "number" in line


@pytest.mark.parametrize("field", ["task.alpha", "task.ce_weight"])
def test_a_non_finite_kd_weight_is_refused(tmp_path, capsys, field):
    cfg = write_cfg(tmp_path / "c.yaml")
    refused(capsys, _train(tmp_path, cfg, "task.name=distill", "task.teacher=T", f"{field}=inf"),
            field, "finite", watch=[tmp_path])


@pytest.mark.parametrize("field", ["task.temperature", "task.base_temperature"])
def test_a_non_finite_supcon_temperature_is_refused(tmp_path, capsys, field):
    cfg = write_cfg(tmp_path / "c.yaml")
    refused(capsys, _train(tmp_path, cfg, "task.name=supcon", f"{field}=.inf"), field, "finite",
            watch=[tmp_path])


@pytest.mark.parametrize("alphas", ["[.inf]", "[.nan]", "[1, .inf]"])
def test_a_non_finite_grid_alpha_is_refused(tmp_path, capsys, alphas):
    spec = tmp_path / "g.yaml"
    spec.write_text(f"grid: g\nruns:\n  kd:\n    alphas: {alphas}\n")
    refused(capsys, ["grid", str(spec), "--dry-run"], "runs.kd.alphas", "finite",
            watch=[tmp_path])


# ============================================================ devices and batch sizes
@pytest.mark.parametrize("device, needle", [
    ("mps", "mps"), ("cuda:7", "cuda:7"), ("CPU", "did you mean 'cpu'"), ("gpu", "'gpu'"),
    ("cuda:-1", "cuda:-1"),
])
def test_a_device_this_machine_cannot_use_is_refused(tmp_path, capsys, device, needle):
    mps = getattr(torch.backends, "mps", None)
    if (device == "mps" and mps is not None and mps.is_available()) or (
            device == "cuda:7" and torch.cuda.device_count() > 7):
        pytest.skip(f"{device} is usable here")
    cfg = write_cfg(tmp_path / "c.yaml")
    refused(capsys, _train(tmp_path, cfg, f"device={device}"), "config field 'device'", needle,
            watch=[tmp_path])


def test_a_batch_that_leaves_batchnorm_one_value_per_channel_is_refused(tmp_path, capsys):
    """An ImageNet-stem ResNet on 16x16 digits has 1x1 maps in its last stages: a batch of 1
    cannot train (today: a ValueError from inside BatchNorm)."""
    cfg = write_cfg(tmp_path / "c.yaml")
    refused(capsys, _train(tmp_path, cfg, "train.batch_size=1", "model.stem=imagenet"),
            "train.batch_size", "BatchNorm", "one value per channel", watch=[tmp_path],
            allowed=[tmp_path / "out"])


# ============================================================ grid --dry-run and the wrong file
DRY_RUN_BAD = {
    "base-lr": ({"base": {"optim": {"lr": -1}}, "runs": {"a": {}}}, "a-s0", "optim.lr"),
    "cell-key": ({"runs": {"a": {}, "b": {"config": {"optim": {"lrr": 0.1}}}}}, "b-s0",
                 "optim.lrr"),
    "matrix-loss": ({"runs": {"t": {}, "kd_{m}": {
        "matrix": {"m": ["cosine", "SupCon_KD"]},
        "config": {"task": {"name": "distill", "teacher": "${run:t}", "loss": "${m}"}}}}},
        "kd_SupCon_KD-s0", "did you mean 'supcon_kd'"),
    "task-name": ({"runs": {"a": {"config": {"task": {"name": "distil"}}}}}, "a-s0", "task.name"),
    "data-name": ({"base": {"data": {"name": "mnist"}}, "runs": {"a": {}}}, "a-s0", "data.name"),
    "tuned-alpha": ({"runs": {"t": {}, "kd": {
        "alphas": [0.5, 2.0], "config": {"task": {"name": "distill", "teacher": "${run:t}",
                                                  "alpha": "${alpha}", "ce_weight": -1}}}}},
        "kd-tune-a0.5-s0", "task.ce_weight"),
}


@pytest.mark.parametrize("case", list(DRY_RUN_BAD))
def test_dry_run_checks_every_resolved_run_config(tmp_path, capsys, case):
    """Today ``--dry-run`` exits 0 and the real grid then marks every run failed."""
    raw, run, field = DRY_RUN_BAD[case]
    spec = tmp_path / "g.yaml"
    base = {**TINY, **raw.get("base", {})}
    spec.write_text(yaml.safe_dump({"grid": "g", **raw, "base": base}))
    refused(capsys, ["grid", str(spec), "--dry-run"], f"grid run '{run}'", field,
            watch=[tmp_path])


def test_dry_run_of_a_valid_grid_exits_0(tmp_path, capsys):
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({"grid": "g", "base": TINY, "runs": {"t": {}, "kd": {
        "alphas": [0.5, 2.0], "config": {"task": {"name": "distill", "teacher": "${run:t}",
                                                  "alpha": "${alpha}"}}}}}))
    code, lines, out = run_cli(capsys, ["grid", str(spec), "--dry-run"])
    assert code == 0 and not lines and "kd-s0" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.yaml"]


def test_a_grid_spec_given_to_train_names_the_command(tmp_path, capsys):
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({"grid": "g", "base": TINY, "runs": {"a": {}}}))
    refused(capsys, ["train", str(spec)], "g.yaml", "grid spec", "supkd grid", watch=[tmp_path])


def test_a_run_config_given_to_grid_names_the_command(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml")
    refused(capsys, ["grid", str(cfg)], "c.yaml", "run config", "supkd train", watch=[tmp_path])


def test_a_warm_up_longer_than_the_run_is_warned_about(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml")
    warned(capsys, _train(tmp_path, cfg, "schedule.warmup_epochs=5", "--quiet"),
           "schedule.warmup_epochs", "longer than the run")

"""`supkd grid` prints the report's tables that its runs filled (as `supkd demo` prints its
Tables I, II and V), then the report's path: here a tiny CIFAR-100-benchmark-shaped grid of
real runs on digits (a zoo CE student, two seeds)."""

from __future__ import annotations

import json

import pytest
import yaml

import supkd.experiments.grid.scheduler  # noqa: F401  (see below)
from supkd.cli import main

# The scheduler's `stream=sys.stdout` default is bound when it is first imported; imported
# here, at collection, it is pytest's session-wide stream, not one test's capsys (which is
# closed after that test). Progress lines therefore bypass capsys; the tables do not.

GRID = {
    "grid": "tiny_zoo_table",
    "published": "cifar100",
    "seeds": [0, 1],
    "base": {
        "device": "cpu",
        "data": {"name": "digits", "image_size": 8, "subset": 32, "val_fraction": 0.0,
                 "num_workers": 0, "gpu_resident": "off"},
        "model": {"name": "resnet8"},
        "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "train": {"epochs": 1, "batch_size": 16, "eval_batch_size": 64, "steps_per_epoch": 1,
                  "eval_every": 1, "progress": False},
        "task": {"name": "ce"},
    },
    "runs": {"ce-{pair}": {
        "meta": {"table": "cifar100_kd", "method": "ce", "teacher_kind": "ce"},
        "matrix": {"pair": {"resnet56-resnet8": {
            "meta": {"teacher_arch": "resnet56", "student_arch": "resnet8"}}}},
    }},
}


@pytest.mark.slow
def test_grid_prints_the_tables_its_runs_filled(tmp_path, capsys):
    spec = tmp_path / "grid.yaml"
    spec.write_text(yaml.safe_dump(GRID))
    out = tmp_path / "runs"
    assert main(["grid", str(spec), "--out", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    report = (out / "report" / "report.md").read_text()
    accs = [json.loads((out / f"ce-resnet56-resnet8-s{s}" / "result.json").read_text())["test_acc"]
            for s in (0, 1)]
    # the printed table is the report's own (same Markdown), with the run's pair and its n
    table_lines = [ln for ln in printed.splitlines() if ln.startswith("|")]
    assert table_lines, printed
    assert all(ln in report for ln in table_lines)
    row = next(ln for ln in table_lines if "resnet8" in ln and "resnet56" in ln)
    assert "(2)" in row or "n=2" in row or " 2 " in row, row
    mean = sum(accs) / 2
    assert f"{mean:.2f}" in row, (mean, row)
    assert printed.rstrip().splitlines()[-1] == f"report: {out / 'report' / 'report.md'}"


def test_grid_prints_no_table_when_no_run_carries_one(tmp_path, capsys):
    raw = {**GRID, "seeds": [0], "runs": {"plain": {}}}
    spec = tmp_path / "grid.yaml"
    spec.write_text(yaml.safe_dump(raw))
    out = tmp_path / "runs"
    assert main(["grid", str(spec), "--out", str(out), "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    assert not [ln for ln in printed.splitlines() if ln.startswith("|")], printed
    assert printed.rstrip().splitlines()[-1].startswith("report: ")

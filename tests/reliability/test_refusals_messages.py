"""Refusal catalogue (issue 16), messages and warnings: start-up without torch, "did you
mean", the usage of the subcommand at fault, ``--resume`` saying where it resumes, one unit
for accuracies, and a warning (once, on stderr) wherever a result would mislead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from catalogue import TINY, refused, run_cli, warned, write_cfg

pytestmark = pytest.mark.usefixtures("in_tmp")


# ============================================================================= start-up
@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_do_not_import_torch(flag):
    code = (f"import sys\nfrom supkd.cli import main\ntry:\n    main([{flag!r}])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    assert "supkd" in proc.stdout


# ========================================================================= did you mean
@pytest.mark.parametrize("typo, meant", [
    ("tarin", "train"), ("gird", "grid"), ("reprot", "report"),
    ("import_teacher", "import-teacher"),
])
def test_an_unknown_command_gets_the_closest(tmp_path, capsys, typo, meant):
    refused(capsys, [typo, "x.yaml"], f"'{typo}'", f"did you mean '{meant}'", usage=True,
            watch=[tmp_path])


@pytest.mark.parametrize("override, field, meant", [
    ("task.loss=SupCon_KD", "task.loss", "supcon_kd"),
    ("task.loss=Cosine", "task.loss", "cosine"),
    ("task.name=CE", "task.name", "ce"),
    ("data.name=Digits", "data.name", "digits"),
    ("model.name=ResNet18", "model.name", "resnet18"),
    ("optim.name=SGD", "optim.name", "sgd"),
])
def test_a_name_in_the_wrong_case_gets_the_right_one(tmp_path, capsys, override, field, meant):
    cfg = write_cfg(tmp_path / "c.yaml")
    extra = ["task.name=distill", "task.teacher=T"] if field == "task.loss" else []
    refused(capsys, ["train", str(cfg), *extra, override, "--out", str(tmp_path / "o")], field,
            f"did you mean '{meant}'", watch=[tmp_path])


# ================================================================= the subcommand's usage
@pytest.mark.parametrize("argv", [
    ["train", "c.yaml", "--bogus"], ["grid", "g.yaml", "--bogus"],
    ["report", "runs", "--bogus"], ["cka", "--teacher", "t", "--student", "s", "--bogus"],
    ["import-teacher", "x.pth", "--out", "t", "--bogus"], ["demo", "--bogus"],
    ["losses", "--bogus"],
])
def test_an_unknown_option_shows_the_usage_of_its_subcommand(tmp_path, capsys, argv):
    from supkd.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines[0].startswith(f"usage: supkd {argv[0]} "), lines
    assert lines[-1] == f"supkd {argv[0]}: error: unrecognized arguments: --bogus"


def test_a_missing_config_is_the_only_missing_argument(tmp_path, capsys):
    line = refused(capsys, ["train"], "required: config", usage=True, watch=[tmp_path])
    assert "key=value" not in line


# ==================================================================== resume, accuracies
def _interrupted_run(tmp_path: Path) -> tuple[Path, Path]:
    """A 2-epoch run stopped after its first step (checkpoint written, no result)."""
    from supkd.train import run
    from supkd.train.loop import TrainingInterrupted

    cfg = write_cfg(tmp_path / "c.yaml", train={"epochs": 2, "steps_per_epoch": 2})
    out = tmp_path / "r"

    def stop(state):
        state.stop = state.step == 3

    with pytest.raises(TrainingInterrupted):
        run(yaml.safe_load(cfg.read_text()), out, quiet=True, callbacks=[stop])
    return cfg, out


def test_resume_says_from_which_step(tmp_path, capsys):
    cfg, out = _interrupted_run(tmp_path)
    code, lines, _ = run_cli(capsys, ["train", str(cfg), "--out", str(out), "--resume"])
    assert code == 0, lines
    said = [ln for ln in lines if "resuming" in ln]
    assert said == [f"supkd: resuming {out} from last.pt at step 3 of 4 (epoch 2/2, batch 1/2)"]


def test_resume_is_silent_when_quiet(tmp_path, capsys):
    cfg, out = _interrupted_run(tmp_path)
    code, lines, _ = run_cli(capsys, ["train", str(cfg), "--out", str(out), "--resume",
                                      "--quiet"])
    assert code == 0 and lines == []


def test_train_accuracy_is_in_percent_as_every_accuracy():
    """3 of 4 right is 75 (%), the unit of test_acc and val_acc, not 0.75."""
    from supkd.data import Batch
    from supkd.train.tasks import CETask

    class Fixed(torch.nn.Module):
        def forward(self, x):
            return torch.eye(3)[[0, 1, 2, 0]] * 5

    out = CETask(Fixed()).training_step(Batch(torch.zeros(4, 1), torch.tensor([0, 1, 2, 1]),
                                              None, None))
    assert float(out["acc"]) == 75.0


def test_metrics_hold_every_accuracy_in_percent(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml", train={"epochs": 2, "steps_per_epoch": 4})
    code, lines, _ = run_cli(capsys, ["train", str(cfg), "optim.lr=0.2", "--out",
                                      str(tmp_path / "r"), "--quiet"])
    assert code == 0, lines
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # 4 steps of 16 images: a multiple of 100/64 % (a fraction would be < 1)
        assert 0 <= row["train_acc"] <= 100 and (row["train_acc"] * 64 / 100) % 1 < 1e-6, row
    assert any(row["train_acc"] > 1 for row in rows)


# ============================================================================== warnings
def _teacher(tmp_path: Path, capsys, finished: bool) -> Path:
    cfg = write_cfg(tmp_path / "t.yaml", train={"epochs": 2})
    out = tmp_path / "T"
    assert run_cli(capsys, ["train", str(cfg), "--out", str(out), "--quiet"])[0] == 0
    if not finished:  # as a run killed before its end leaves it: a checkpoint, no model.pt
        (out / "model.pt").unlink()
        (out / "result.json").unlink()
    return out


@pytest.mark.parametrize("task", ["distill", "linear"])
def test_building_on_a_run_that_never_finished_is_warned_about(tmp_path, capsys, task):
    teacher = _teacher(tmp_path, capsys, finished=False)
    cfg = write_cfg(tmp_path / "c.yaml")
    field = "task.teacher" if task == "distill" else "task.encoder"
    warned(capsys, ["train", str(cfg), f"task.name={task}", f"{field}={teacher}", "--out",
                    str(tmp_path / "S"), "--quiet"], field, str(teacher), "never finished",
           "last.pt after epoch 2 of 2")


def test_a_finished_teacher_is_not_warned_about(tmp_path, capsys):
    teacher = _teacher(tmp_path, capsys, finished=True)
    cfg = write_cfg(tmp_path / "c.yaml")
    code, lines, _ = run_cli(capsys, ["train", str(cfg), "task.name=distill",
                                      f"task.teacher={teacher}", "--out", str(tmp_path / "S"),
                                      "--quiet"])
    assert code == 0 and lines == []


def test_supcon_batches_without_positives_are_warned_about(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml")
    warned(capsys, ["train", str(cfg), "task.name=supcon", "train.batch_size=4", "--out",
                    str(tmp_path / "S"), "--quiet"], "train.batch_size", "same-class pairs",
           "SimCLR")


def test_cka_between_runs_of_different_data_sets_is_warned_about(tmp_path, capsys):
    from PIL import Image

    roots = []
    for k in (0, 1):
        root = tmp_path / f"images{k}"
        for c in ("a", "b"):
            (root / c).mkdir(parents=True)
            for i in range(10):
                Image.new("RGB", (8, 8), (40 * i, 20 * k, 100)).save(root / c / f"{i}.png")
        roots.append(root)
    cfg = write_cfg(tmp_path / "c.yaml", data={"name": "imagefolder", "image_size": 8,
                                               "subset": None, "val_fraction": 0},
                    train={"batch_size": 4})
    runs = []
    for k, root in enumerate(roots):
        out = tmp_path / f"R{k}"
        assert run_cli(capsys, ["train", str(cfg), f"data.root={root}", "--out", str(out),
                                "--quiet"])[0] == 0
        runs.append(out)
    warned(capsys, ["cka", "--teacher", str(runs[0]), "--student", str(runs[1]),
                    "--batch-size", "4", "--out", str(tmp_path / "cka")],
           str(runs[1]), "images0", "images1", "never saw")


def test_a_report_of_a_folder_without_runs_is_refused(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "notes.txt").write_text("x")
    refused(capsys, ["report", str(tmp_path / "runs")], "runs", "no run directories",
            watch=[tmp_path])


def test_a_report_lists_its_corrupt_runs_on_the_console(tmp_path, capsys):
    runs = tmp_path / "runs"
    good = write_cfg(tmp_path / "c.yaml")
    assert run_cli(capsys, ["train", str(good), "--out", str(runs / "ok"), "--quiet"])[0] == 0
    (runs / "bad_result").mkdir()
    (runs / "bad_result" / "result.json").write_text("{broken")
    (runs / "bad_config").mkdir()
    (runs / "bad_config" / "config.yaml").write_text("optim: [\n")
    code, lines, _ = run_cli(capsys, ["report", str(runs), "--quiet"])
    assert code == 0, lines
    warn = [ln for ln in lines if ": warning: " in ln]
    assert len(warn) == 2, lines
    assert str(runs / "bad_config") in warn[0] and "config.yaml" in warn[0]
    assert str(runs / "bad_result") in warn[1] and "result.json" in warn[1]


def test_a_warning_raised_for_every_run_is_printed_once(tmp_path, capsys):
    spec = tmp_path / "g.yaml"
    base = {**TINY, "schedule": {"warmup_epochs": 3}}
    spec.write_text(yaml.safe_dump({"grid": "g", "seeds": [0, 1, 2], "base": base,
                                    "runs": {"a": {}, "b": {}}}))
    warned(capsys, ["grid", str(spec), "--dry-run"], "schedule.warmup_epochs")

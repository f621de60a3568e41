"""Refusal catalogue, round 2 (issue 25, classes 9 and 10): ``--out`` of cka, report and
grid replaces only files supkd wrote there itself (``.supkd-written.json``) and a refused
command leaves no empty folder chain behind; a run folder is held by one process at a time
(a kernel lock, so a killed holder leaves nothing stale).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from catalogue import TINY, refused, run_cli, write_cfg

from supkd.models import create_model
from supkd.train.checkpoint import save_model
from supkd.utils.manifest import MANIFEST_NAME
from supkd.utils.runlock import LOCK_NAME


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(teacher, student) model.pt files of untrained digits ResNets (no run folders)."""
    root = tmp_path_factory.mktemp("models")
    paths = []
    for name, seed in (("teacher", 0), ("student", 1)):
        net = create_model("resnet18", num_classes=10, width=4, in_channels=1)
        path = root / name / "model.pt"
        save_model(path, net, {"task": "ce", "seed": seed})
        paths.append(path)
    return paths


def _cka(models, out: Path, *extra: str) -> list[str]:
    return ["cka", "--teacher", str(models[0]), "--student", str(models[1]), "--data",
            "digits", "--batches", "1", "--batch-size", "16", "--out", str(out), *extra]


# ================================================================ 9: only supkd's own files
@pytest.mark.parametrize("name", ["cka_per_stage.png", "heatmap_model.png", "cka.json"])
def test_cka_leaves_a_users_file_of_the_same_name_alone(tmp_path, capsys, models, name):
    out = tmp_path / "figs"
    out.mkdir()
    (out / name).write_text("the user's own\n")
    refused(capsys, _cka(models, out), "cka --out", name, "is not a file supkd wrote",
            "move it away", watch=[tmp_path])


def test_cka_replaces_its_own_files_but_not_ones_edited_since(tmp_path, capsys, models):
    out = tmp_path / "figs"
    assert run_cli(capsys, _cka(models, out))[0] == 0
    written = json.loads((out / MANIFEST_NAME).read_text())["files"]
    assert set(written) == {"cka.json", "cka_per_stage.png", "heatmap_model.png"}
    assert run_cli(capsys, _cka(models, out))[0] == 0  # its own: replaced
    (out / "cka.json").write_text("{}\n")  # the user edits supkd's output
    refused(capsys, _cka(models, out), "cka.json", "was changed since supkd wrote it",
            watch=[tmp_path])


@pytest.mark.parametrize("extra, needle", [
    (["--stages", "layer9"], "the teacher"),
    (["--data", "nosuchset"], "nosuchset"),
])
def test_a_refused_cka_leaves_no_out_folder_chain(tmp_path, capsys, models, extra, needle):
    out = tmp_path / "a" / "b" / "c"
    refused(capsys, _cka(models, out, *extra), needle, watch=[tmp_path])
    assert not (tmp_path / "a").exists()


def _runs(tmp_path: Path, capsys) -> Path:
    runs = tmp_path / "runs"
    cfg = write_cfg(tmp_path / "c.yaml", meta={"table": "table1", "role": "teacher",
                                               "kind": "ce"})
    assert run_cli(capsys, ["train", str(cfg), "--out", str(runs / "t"), "--quiet"])[0] == 0
    return runs


@pytest.mark.parametrize("name", ["runs.csv", "report.md"])
def test_report_leaves_a_users_file_of_the_same_name_alone(tmp_path, capsys, name):
    runs = _runs(tmp_path, capsys)
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("notes\n")
    refused(capsys, ["report", str(runs), "--out", str(out)], "report: folder", name,
            "is not a file supkd wrote", watch=[tmp_path])
    # Its own earlier report is simply rewritten.
    assert run_cli(capsys, ["report", str(runs), "--quiet"])[0] == 0
    assert run_cli(capsys, ["report", str(runs), "--quiet"])[0] == 0
    assert (runs / "report" / MANIFEST_NAME).is_file()


def _grid(tmp_path: Path, resources: dict | None = None) -> Path:
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({
        "grid": "g", "base": {k: v for k, v in TINY.items() if k != "name"},
        "runs": {"a": {"config": {"task": {"name": "ce"}}, "resources": resources or {}}}}))
    return spec


def test_grid_refuses_a_users_report_before_any_run(tmp_path, capsys):
    out = tmp_path / "runs"
    (out / "report").mkdir(parents=True)
    (out / "report" / "report.md").write_text("# my notes\n")
    refused(capsys, ["grid", str(_grid(tmp_path)), "--out", str(out)], "report.md",
            "is not a file supkd wrote", watch=[tmp_path])
    assert sorted(p.name for p in out.iterdir()) == ["report"]  # no run started


@pytest.mark.parametrize("argv, needle", [
    (["--launcher", "slrum"], "did you mean 'slurm'"),
    (["--launcher", "local", "--jobs", "0"], "--jobs"),
    (["--only", "nothing-like-it"], "matches no run"),
    (["--sbatch", "novalue"], "--sbatch"),
])
def test_a_refused_grid_leaves_no_out_folder_chain(tmp_path, capsys, argv, needle):
    refused(capsys, ["grid", str(_grid(tmp_path)), "--out", str(tmp_path / "x" / "y"), *argv],
            needle, watch=[tmp_path])
    assert not (tmp_path / "x").exists()


def test_a_resource_refusal_leaves_no_out_folder_chain(tmp_path, capsys):
    refused(capsys, ["grid", str(_grid(tmp_path, {"tasks_per_node": 2})), "--out",
                     str(tmp_path / "x" / "y")], "resources.tasks_per_node", watch=[tmp_path])
    assert not (tmp_path / "x").exists()


# ============================================================ 10: one process per run folder
HOLDER = ("import sys\nfrom supkd.utils.runlock import acquire\nacquire(sys.argv[1])\n"
          "print('held', flush=True)\nsys.stdin.read()\n")


@pytest.fixture
def holder(tmp_path):
    """A live process (not this one) holding ``tmp_path/run``; killed with SIGKILL at the
    end. Waits for its "held" line, not for a time."""
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "held"
    yield run, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_second_train_into_a_held_folder_is_refused_naming_the_holder(tmp_path, capsys,
                                                                        holder):
    run, proc = holder
    cfg = write_cfg(tmp_path / "c.yaml")
    for flags in ([], ["--resume"]):
        refused(capsys, ["train", str(cfg), "--out", str(run), "--quiet", *flags],
                f"run directory {run}", "is in use by", f"pid {proc.pid}",
                f"host {socket.gethostname()}", watch=[tmp_path])


def test_a_killed_holder_leaves_no_stale_lock(tmp_path, capsys, holder):
    run, proc = holder
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    cfg = write_cfg(tmp_path / "c.yaml")
    code, lines, _ = run_cli(capsys, ["train", str(cfg), "--out", str(run), "--quiet"])
    assert code == 0, lines
    assert (run / LOCK_NAME).is_file()  # kept (never unlinked), released
    assert json.loads((run / "result.json").read_text())["status"] == "completed"
    # One run, one metrics line per epoch.
    assert len((run / "metrics.jsonl").read_text().splitlines()) == TINY["train"]["epochs"]


def test_a_grid_skips_a_run_another_process_holds_and_says_so(tmp_path, capsys):
    runs = tmp_path / "runs"
    run = runs / "a-s0"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert proc.stdout.readline().strip() == "held"
        code, _, out = run_cli(capsys, ["grid", str(_grid(tmp_path)), "--out", str(runs),
                                        "--no-report"])
        assert code == 0  # the other process is training it: nothing failed
        assert f"is in use by pid {proc.pid}" in out and "skipped" in out
        assert sorted(p.name for p in run.iterdir()) == [LOCK_NAME]  # not touched
    finally:
        proc.kill()
        proc.wait()

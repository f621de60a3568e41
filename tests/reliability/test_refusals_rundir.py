"""Refusal catalogue (issue 16), run folders and output folders: nothing a user owns is
overwritten, nothing lands outside the folder the user named, files get the user's umask.

Each case runs ``supkd`` in process and checks the exit code, the one stderr line naming the
field or file, and (with a snapshot of the test's folder) that nothing was written where it
must not be. The working directory is the test's own folder, so a default ``runs/`` would
show up in the snapshot too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
import yaml
from catalogue import (
    TINY,
    read_only,
    refused,
    run_cli,
    snapshot,
    unprivileged,
    warned,
    write_cfg,
)

from supkd.utils import atomic

pytestmark = pytest.mark.usefixtures("in_tmp")


# ============================================================= a user's folder as --out
USER_FOLDERS = {
    "notes": {"notes.txt": "my notes\n"},
    "own-config": {"config.yaml": "keep: 1\n"},  # today: overwritten with the resolved config
    "own-metrics": {"metrics.jsonl": '{"mine": 1}\n'},  # today: rows appended to it
    "own-model": {"model.pt": "not supkd's"},
    "a-subfolder": {"data/x.csv": "1,2\n"},
    "hidden-file": {".keep": ""},
}


def _user_folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("kind", list(USER_FOLDERS))
def test_train_never_takes_over_a_users_folder(tmp_path, capsys, kind):
    cfg = write_cfg(tmp_path / "c.yaml")
    mine = _user_folder(tmp_path / "mine", USER_FOLDERS[kind])
    refused(capsys, ["train", str(cfg), "--out", str(mine)], str(mine), "not a supkd run",
            "--out", watch=[tmp_path])


def test_train_refuses_the_folder_that_holds_the_config_it_reads(tmp_path, capsys):
    """``supkd train exp/config.yaml --out exp``: the user's file, not a run's."""
    exp = tmp_path / "exp"
    exp.mkdir()
    cfg = write_cfg(exp / "config.yaml")
    refused(capsys, ["train", str(cfg), "--out", str(exp)], str(exp), "config.yaml",
            watch=[tmp_path])


def test_train_out_is_a_file(tmp_path, capsys):
    cfg = write_cfg(tmp_path / "c.yaml")
    (tmp_path / "afile").write_text("x")
    refused(capsys, ["train", str(cfg), "--out", str(tmp_path / "afile")], "afile",
            "not a folder", watch=[tmp_path])


def test_a_folder_holding_only_leftover_temporary_files_is_used(tmp_path, capsys):
    """The temporary files of a killed write are supkd's own: the folder is not foreign."""
    cfg = write_cfg(tmp_path / "c.yaml")
    out = tmp_path / "r"
    out.mkdir()
    (out / ".result.json.abcd1234.tmp").write_text("{")
    code, lines, _ = run_cli(capsys, ["train", str(cfg), "--out", str(out), "--quiet"])
    assert code == 0, lines
    assert not (out / ".result.json.abcd1234.tmp").exists()  # swept when the run started


def test_import_teacher_never_takes_over_a_users_folder(tmp_path, capsys):
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    mine = _user_folder(tmp_path / "mine", {"notes.txt": "mine"})
    refused(capsys, ["import-teacher", str(tmp_path / "r18.pth"), "--out", str(mine)],
            str(mine), "not a supkd run", watch=[tmp_path])


def test_grid_leaves_a_users_folder_in_the_runs_folder_alone(tmp_path):
    """A run whose folder in the runs folder is the user's: that run fails with the reason
    (the grid goes on, exit 1 from the CLI); the folder is neither written to nor removed
    for a retry (today: rmtree'd as a failed run's leftovers)."""
    import io

    from supkd.experiments.grid import parse_grid, run_grid

    spec = parse_grid({"grid": "g", "seeds": [0], "base": TINY, "runs": {"a": {}, "b": {}}})
    runs = tmp_path / "runs_g"
    mine = _user_folder(runs / "a-s0", {"notes.txt": "mine"})
    before = snapshot(mine)
    log = io.StringIO()
    res = run_grid(spec, runs, stream=log)
    assert not res.ok and res.statuses == {"a-s0": "failed", "b-s0": "completed"}, log.getvalue()
    assert f"run directory {mine}: is not a supkd run" in log.getvalue()
    assert snapshot(mine) == before


# ====================================================== names that become paths: one rule
BAD_NAMES = {
    "empty": "",
    "blank": "   ",
    "dot": ".",
    "dotdot": "..",
    "parent": "../escape",
    "absolute": "/tmp/supkd-escape",
    "nested": "a/b",
    "backslash": "a\\b",
    "tab": "a\tb",
    "newline": "a\nb",
    "too-long": "n" * 256,
}


@pytest.mark.parametrize("case", list(BAD_NAMES))
def test_run_name_that_would_become_a_path_is_refused(tmp_path, capsys, case):
    cfg = write_cfg(tmp_path / "c.yaml", name=BAD_NAMES[case])
    refused(capsys, ["train", str(cfg)], "config field 'name'", watch=[tmp_path])
    assert not Path("/tmp/supkd-escape").exists()


@pytest.mark.parametrize("name", ["", "../x", "/tmp/supkd-escape", "a/b", ".."])
def test_grid_name_that_would_become_a_path_is_refused(tmp_path, capsys, name):
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({"grid": name, "runs": {"a": {"config": {}}}}))
    refused(capsys, ["grid", str(spec), "--dry-run"], "grid field 'grid'", watch=[tmp_path])


@pytest.mark.parametrize("cell", [".", "..", "a/b"])
def test_grid_cell_name_that_would_become_a_path_is_refused(tmp_path, capsys, cell):
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({"grid": "g", "runs": {cell: {"config": {}}}}))
    refused(capsys, ["grid", str(spec), "--dry-run"], "run name", watch=[tmp_path])


# ============================================================================ file modes
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664),
                                         (0o077, 0o600)])
def test_atomic_files_get_the_mode_the_umask_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        written = [atomic.atomic_write_json(tmp_path / "a.json", {"a": 1}),
                   atomic.atomic_write_yaml(tmp_path / "b.yaml", {"b": 1}),
                   atomic.atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "c.pt")]
        atomic.append_jsonl(tmp_path / "d.jsonl", {"d": 1})
    finally:
        os.umask(old)
    for p in [*written, tmp_path / "d.jsonl"]:
        assert stat.S_IMODE(p.stat().st_mode) == mode, (p.name, oct(p.stat().st_mode))


def test_every_file_of_a_run_is_readable_by_the_group(tmp_path, capsys):
    """Teammates on shared storage can load a teacher: no 0600 file in a run directory."""
    old = os.umask(0o027)
    try:
        cfg = write_cfg(tmp_path / "c.yaml")
        code, lines, _ = run_cli(capsys, ["train", str(cfg), "--out", str(tmp_path / "r"),
                                          "--quiet"])
    finally:
        os.umask(old)
    assert code == 0, lines
    files = [p for p in (tmp_path / "r").rglob("*") if p.is_file()]
    assert {"config.yaml", "result.json", "model.pt", "last.pt"} <= {p.name for p in files}
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o640}


# ===================================================================== output folders
def _teacher_and_student(tmp_path: Path, capsys) -> tuple[Path, Path]:
    cfg = write_cfg(tmp_path / "c.yaml")
    teacher, student = tmp_path / "T", tmp_path / "S"
    assert run_cli(capsys, ["train", str(cfg), "--out", str(teacher), "--quiet"])[0] == 0
    assert run_cli(capsys, ["train", str(cfg), "task.name=distill", f"task.teacher={teacher}",
                            "task.loss=cosine", "--out", str(student), "--quiet"])[0] == 0
    return teacher, student


@pytest.fixture(scope="module")
def kd_pair(tmp_path_factory):
    """A teacher run and a student distilled from it, made once for the module (through the
    engine, so that their configs and model files are real)."""
    from supkd.train import run

    root = tmp_path_factory.mktemp("kd_pair")
    run(TINY, root / "T", quiet=True)
    run({**TINY, "task": {"name": "distill", "teacher": str(root / "T"), "loss": "cosine"}},
        root / "S", quiet=True)
    return root / "T", root / "S"


def test_cka_out_an_existing_file(tmp_path, capsys, kd_pair):
    teacher, student = kd_pair
    (tmp_path / "afile").write_text("x")
    refused(capsys, ["cka", "--teacher", str(teacher), "--student", str(student), "--out",
                     str(tmp_path / "afile")], "cka --out", "afile", "not a folder",
            watch=[tmp_path, teacher, student])


def test_cka_out_under_a_file(tmp_path, capsys, kd_pair):
    teacher, student = kd_pair
    (tmp_path / "afile").write_text("x")
    refused(capsys, ["cka", "--teacher", str(teacher), "--student", str(student), "--out",
                     str(tmp_path / "afile" / "sub")], "cka --out", "under the file",
            watch=[tmp_path, teacher, student])


def test_cka_out_on_a_read_only_file_system(capsys, kd_pair):
    teacher, student = kd_pair
    refused(capsys, ["cka", "--teacher", str(teacher), "--student", str(student), "--out",
                     "/proc/supkd-cka"], "cka --out", "/proc/supkd-cka", "cannot be created",
            watch=[teacher, student])


def test_cka_out_read_only_folder(tmp_path, capsys, kd_pair):
    teacher, student = kd_pair
    out = read_only(_user_folder(tmp_path / "ro", {}))
    with unprivileged():
        refused(capsys, ["cka", "--teacher", str(teacher), "--student", str(student),
                         "--out", str(out)], "cka --out", "cannot be written",
                watch=[tmp_path])


def test_cka_default_folder_of_a_read_only_teacher_is_refused_before_the_work(tmp_path, capsys,
                                                                              kd_pair):
    import shutil

    _, student = kd_pair
    teacher = read_only(shutil.copytree(kd_pair[0], tmp_path / "T"))
    with unprivileged():
        refused(capsys, ["cka", "--teacher", str(teacher), "--student", str(student)],
                "default output folder", str(teacher / "cka"), "--out", watch=[tmp_path])


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_report_out_not_a_folder(tmp_path, capsys, kd_pair, where):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "rep"
    refused(capsys, ["report", str(kd_pair[0].parent), "--out", str(out)], "report", "afile",
            watch=[tmp_path])


def test_report_out_read_only(tmp_path, capsys, kd_pair):
    out = read_only(_user_folder(tmp_path / "ro", {}))
    with unprivileged():
        refused(capsys, ["report", str(kd_pair[0].parent), "--out", str(out)], "report",
                str(out), "cannot be written", watch=[tmp_path])


@pytest.mark.parametrize("where", ["file", "under-file"])
def test_import_teacher_out_not_a_folder(tmp_path, capsys, where):
    import torchvision

    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), tmp_path / "r18.pth")
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" if where == "file" else tmp_path / "afile" / "t"
    refused(capsys, ["import-teacher", str(tmp_path / "r18.pth"), "--out", str(out)], "afile",
            watch=[tmp_path])


def test_grid_out_under_a_file(tmp_path, capsys):
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({"grid": "g", "base": TINY, "runs": {"a": {"config": {}}}}))
    (tmp_path / "afile").write_text("x")
    refused(capsys, ["grid", str(spec), "--out", str(tmp_path / "afile" / "runs")], "afile",
            watch=[tmp_path])


def test_teacher_cache_of_a_read_only_teacher_is_built_in_memory_and_said(tmp_path, capsys,
                                                                         kd_pair):
    """``task.teacher_cache: on`` with a teacher on read-only storage: checked before the
    build, one warning, the table is built in memory, the run completes, the teacher's folder
    is untouched (today: the table is built, then the write fails with a traceback)."""
    import shutil

    teacher = read_only(shutil.copytree(kd_pair[0], tmp_path / "T"))
    cfg = write_cfg(tmp_path / "c.yaml", task={"name": "distill", "teacher": str(teacher),
                                               "teacher_cache": "on"})
    before = snapshot(teacher)
    with unprivileged():
        line = warned(capsys, ["train", str(cfg), "--out", str(tmp_path / "S"), "--quiet"],
                      "teacher cache", str(teacher / "teacher_cache"), "in memory")
    assert snapshot(teacher) == before
    assert "cannot be written" in line
    assert (tmp_path / "S" / "result.json").is_file()

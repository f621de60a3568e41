"""store: reads run directories alone and tolerates missing, partial and corrupt ones."""

from __future__ import annotations

import pytest

from supkd.errors import DataError
from supkd.experiments.store import CORRUPT, UNFINISHED, load_run, scan_runs

from .fakeruns import write_run


def test_completed_run_fields(tmp_path):
    write_run(tmp_path, "a", {"table": "table1", "seed": 3}, test_acc=91.5, val_acc=90.0)
    (rec,) = scan_runs(tmp_path)
    assert rec.status == "completed"
    assert rec.test_acc == 91.5 and rec.val_acc == 90.0
    assert rec.meta == {"table": "table1", "seed": 3}
    assert rec.name == "a"
    assert rec.config["model"]["width"] == 8


def test_diverged_run_keeps_step(tmp_path):
    write_run(tmp_path, "d", {}, status="diverged", diverged_step=17)
    rec = load_run(tmp_path / "d")
    assert rec.status == "diverged" and rec.diverged_step == 17 and rec.test_acc is None


def test_partial_and_corrupt_runs_do_not_stop_the_scan(tmp_path):
    write_run(tmp_path, "ok", {}, test_acc=50.0)
    write_run(tmp_path, "unfinished", {"seed": 1}, status=None)
    write_run(tmp_path, "truncated", {}, test_acc=1.0)
    (tmp_path / "truncated" / "result.json").write_text('{"status": "compl')
    write_run(tmp_path, "weird", {}, status="exploded", test_acc=1.0)
    write_run(tmp_path, "noacc", {}, status="completed")
    # result.json alone (config lost): meta comes from the result's copy
    write_run(tmp_path, "noconfig", {"table": "table5"}, test_acc=60.0)
    (tmp_path / "noconfig" / "config.yaml").unlink()
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "notes.txt").write_text("hello")
    by = {r.name: r for r in scan_runs(tmp_path)}
    assert set(by) == {"ok", "unfinished", "truncated", "weird", "noacc", "noconfig"}
    assert by["ok"].status == "completed"
    assert by["unfinished"].status == UNFINISHED and by["unfinished"].meta == {"seed": 1}
    assert by["truncated"].status == CORRUPT and "result.json" in by["truncated"].problem
    assert by["weird"].status == CORRUPT and "exploded" in by["weird"].problem
    assert by["noacc"].status == "completed" and by["noacc"].test_acc is None  # SupCon encoder
    assert by["noconfig"].status == "completed" and by["noconfig"].meta == {"table": "table5"}


def test_nested_folders_and_checkpoints_are_not_runs(tmp_path):
    d = write_run(tmp_path / "group", "r", {}, test_acc=1.0)
    (d / "checkpoints").mkdir()
    (d / "checkpoints" / "last.pt").write_bytes(b"x")
    (rec,) = scan_runs(tmp_path)
    assert rec.path == d and rec.has_checkpoint


def test_missing_folder_is_a_user_error(tmp_path):
    with pytest.raises(DataError, match="not found"):
        scan_runs(tmp_path / "nope")
    assert load_run(tmp_path / "nope") is None

"""A teacher brought in with ``supkd import-teacher`` can stand in for a grid's teacher run.

Users who already have a teacher (issue 8: "bring your own teacher") import it into the
run directory the grid would train it in (``RUNS/<entry>-s<seed>``); the grid must then use
it as a finished run (not delete and retrain it), run the students that depend on it, and the
report must not call it corrupt.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).parent))
import grid_standin_jobs

from supkd.cli import main
from supkd.experiments.grid import parse_grid, run_grid
from supkd.experiments.store import load_run


def test_grid_uses_an_imported_teacher(tmp_path, capsys):
    runs = tmp_path / "runs"
    tv = torchvision.models.resnet18(num_classes=10)
    torch.save(tv.state_dict(), tmp_path / "r18.pth")
    assert (
        main(["import-teacher", str(tmp_path / "r18.pth"), "--out", str(runs / "teacher-s0")]) == 0
    )
    capsys.readouterr()

    rec = load_run(runs / "teacher-s0")
    assert rec is not None and rec.status == "imported", (rec.status, rec.problem)

    spec = parse_grid(
        {
            "grid": "byot",
            "seeds": [0],
            "runs": {
                "teacher": {"config": {"task": {"name": "ce"}}},
                "student": {"config": {"task": {"name": "distill", "teacher": "${run:teacher}"}}},
            },
        }
    )
    res = run_grid(spec, runs, run_fn=grid_standin_jobs.job, stream=None)
    assert (runs / "teacher-s0" / "model.pt").is_file(), "the imported teacher was deleted"
    assert res.statuses["student-s0"] == "completed", res.statuses

"""A grid worker process that dies (OOM kill, segfault) must cost only its own run.

``supkd grid --jobs N`` runs each run in a pooled worker process. When one worker is killed,
``concurrent.futures`` marks the whole pool broken: the runs that shared it fail with
BrokenProcessPool and the next submit raises. The grid must record the dead run as failed
("worker died"), get a working pool again for the others, and return normally.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import grid_standin_jobs

from supkd.experiments.grid import parse_grid, run_grid


def test_one_dead_worker_fails_only_its_run(tmp_path):
    spec = parse_grid(
        {
            "grid": "deaths",
            "seeds": [0, 1, 2],
            "runs": {"a": {}, "victim": {"seeds": [0]}, "b": {}, "c": {}},
        }
    )
    res = run_grid(spec, tmp_path / "runs", jobs=2, run_fn=grid_standin_jobs.job, stream=None)
    assert res.statuses["victim-s0"] == "failed"
    assert any("victim-s0" in p and "worker died" in p for p in res.problems), res.problems
    others = {k: v for k, v in res.statuses.items() if k != "victim-s0"}
    assert len(others) == 9 and set(others.values()) == {"completed"}, others


def test_a_neighbour_terminated_with_the_broken_pool_is_run_again_not_failed(tmp_path,
                                                                             monkeypatch):
    """The pool SIGTERMs every other worker when one dies: the run that worker held only
    shared the pool, so it is handed out again and completes; the victim alone fails."""
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("SUPKD_TEST_MARKERS", str(marks))
    spec = parse_grid({"grid": "neighbours", "seeds": [0],
                       "runs": {"busy": {}, "victim": {}}})
    res = run_grid(spec, tmp_path / "runs", jobs=2, run_fn=grid_standin_jobs.busy_neighbour_job,
                   stream=None)
    assert (marks / "busy-started").is_file()  # the victim died while busy-s0 was running
    assert res.statuses == {"busy-s0": "completed", "victim-s0": "failed"}, res.problems
    assert any("victim-s0" in p and "SIGKILL" in p for p in res.problems), res.problems

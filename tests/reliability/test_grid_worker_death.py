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

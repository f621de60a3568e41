"""Stand-in grid jobs for tests/reliability/test_grid_worker_death.py.

Module-level (picklable by reference) so that ``run_grid(..., jobs=2)`` can send them to its
spawned worker processes.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from tests.helpers import write_fake_result


def job(config: dict[str, Any], run_dir: Path, resume: bool) -> dict[str, Any]:
    """Write a completed result, except for runs named ``victim*``: those kill their own
    worker process (what the kernel's OOM killer or a segfault in a native library does)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if str(config["name"]).startswith("victim"):
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(0.05)  # long enough for runs to overlap in the pool
    (run_dir / "config.yaml").write_text(json.dumps({"name": config["name"]}))
    return write_fake_result(run_dir, status="completed", test_acc=50.0, name=config["name"],
                             meta=config.get("meta", {}))


def busy_neighbour_job(config: dict[str, Any], run_dir: Path, resume: bool) -> dict[str, Any]:
    """``busy-*`` runs: the first attempt marks that it started and then waits to be killed
    with its pool; a later attempt completes. ``victim-*`` runs wait for that mark (an event,
    not a sleep), so the victim always dies while its neighbour is mid-run, then SIGKILL
    their own worker. Markers live in ``$SUPKD_TEST_MARKERS``."""
    marks = Path(os.environ["SUPKD_TEST_MARKERS"])
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = str(config["name"])
    if name.startswith("victim"):
        deadline = time.monotonic() + 60
        while not (marks / "busy-started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)
    if name.startswith("busy") and not (marks / "busy-started").exists():
        (marks / "busy-started").write_text(str(os.getpid()))
        time.sleep(120)  # the pool SIGTERMs this worker when the victim's death breaks it
    return write_fake_result(run_dir, status="completed", test_acc=50.0, name=name,
                             meta=config.get("meta", {}))

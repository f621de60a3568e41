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

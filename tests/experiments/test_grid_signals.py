"""`supkd grid --jobs 2` stopped by SIGTERM (a scheduler, `kill`): it must exit promptly
(130), keep the runs that completed, leave the running ones resumable, and a second
`supkd grid` must finish only what is left.

The grid runs in a real subprocess through the CLI; only the training job is the stand-in of
fakeengine.py (no torch), swapped in for ``supkd.experiments.grid.jobs.train_job`` before the CLI
starts. Worker processes get it by reference, as they would get the real engine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]

LAUNCH = (
    "import sys\n"
    "import supkd.experiments.grid.jobs as g\n"
    "from tests.experiments import fakeengine\n"
    "g.train_job = fakeengine.fake_run\n"
    "from supkd.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _start(spec: Path, runs: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "SUPKD_FAKE_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("SUPKD_FAKE_KILL_AT", None)
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH, "grid", str(spec), "--out", str(runs), "--jobs", "2",
         "--no-report"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _calls(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def test_sigterm_stops_the_grid_promptly_and_a_rerun_finishes_the_rest(tmp_path):
    spec = tmp_path / "g.yaml"
    spec.write_text(yaml.safe_dump({
        "grid": "sig", "seeds": [0, 1],
        "base": {"data": {"name": "digits"}, "task": {"name": "ce"}},
        "runs": {
            "quick": {},
            # Hours long unless stopped: the test fails on its timeout if SIGTERM is ignored.
            "slow": {"config": {"task": {"sleep": 3600, "after": "${run:quick}"}}},
        },
    }))
    runs, log = tmp_path / "runs", tmp_path / "calls.jsonl"
    proc = _start(spec, runs, log)
    try:
        deadline = time.monotonic() + 60  # spawned workers start slowly on a busy machine
        while not {"slow-s0", "slow-s1"} <= {c["name"] for c in _calls(log)}:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the slow runs never started"
            time.sleep(0.1)
        time.sleep(0.3)  # both slow runs are inside their loops
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert took < 20
    assert "Traceback" not in err, err
    for s in (0, 1):
        done = json.loads((runs / f"quick-s{s}" / "result.json").read_text())
        assert done["status"] == "completed"
        slow = runs / f"slow-s{s}"
        assert not (slow / "result.json").exists()  # interrupted: no (failed) result
        assert (slow / "checkpoints" / "last.pt").is_file()

    log.write_text("")
    proc = _start(spec, runs, log)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    # Only the interrupted runs ran again, each resumed from its checkpoint.
    assert sorted((c["name"], c["resume"]) for c in _calls(log)) == [
        ("slow-s0", True), ("slow-s1", True)]
    assert "2 cached" in out and "2 completed" in out

"""Pool workers of ``supkd grid --jobs N`` and SIGINT: a worker still starting (importing
torch takes seconds) or idle ignores it, a worker inside a job is stopped by the first one
(the job saves its checkpoint) and not by a second one during that save.

Real spawned workers of :class:`LocalPoolExecutor`; the job is the stand-in of fakeengine.py.
The kernel's own record of each worker's ignored signals (``/proc/PID/status``, SigIgn) is
read, so nothing here trusts the code under test to report on itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from tests.experiments import fakeengine

from supkd.experiments.grid.executor import Job
from supkd.experiments.grid.local import LocalPoolExecutor

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _ignores_sigint(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    raise AssertionError(f"no SigIgn line for {pid}")


def _job(tmp: Path, name: str, **task) -> Job:
    config = {"name": name, "seed": 0, "meta": {}, "task": task}
    return Job(name, fakeengine.fake_run, config, tmp / name, False)


def _workers(ex: LocalPoolExecutor) -> list[int]:
    return list(ex._pool._processes)  # the pool's own table of its worker processes


@pytest.fixture
def fake_log(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("SUPKD_FAKE_LOG", str(log))
    monkeypatch.delenv("SUPKD_FAKE_KILL_AT", raising=False)
    return log


def test_a_starting_worker_survives_sigint_and_runs_its_job(tmp_path, fake_log):
    ex = LocalPoolExecutor(2)
    try:
        ex.submit(_job(tmp_path, "quick"))
        (pid,) = _workers(ex)
        # Right after the spawn the worker is still unpickling its start-up (imports torch).
        assert _ignores_sigint(pid)
        os.kill(pid, signal.SIGINT)  # without the fix: a traceback and a broken pool
        (outcome,) = ex.wait()
        assert outcome.name == "quick"
        assert outcome.result["status"] == "completed", outcome
        assert _ignores_sigint(pid)  # idle again: ignored again
        assert _workers(ex) == [pid]  # the same worker, never replaced
    finally:
        ex.shutdown()


def test_interrupt_stops_only_running_jobs_at_a_checkpoint(tmp_path, fake_log):
    ex = LocalPoolExecutor(2)
    try:
        ex.submit(_job(tmp_path, "slow", sleep=3600))
        deadline = time.monotonic() + 60
        while not fake_log.exists() or "slow" not in fake_log.read_text():
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        (pid,) = _workers(ex)
        assert not _ignores_sigint(pid)  # inside the job: SIGINT stops it
        t0 = time.monotonic()
        ex.interrupt()
        assert time.monotonic() - t0 < 20
        assert (tmp_path / "slow" / "checkpoints" / "last.pt").is_file()
        assert not (tmp_path / "slow" / "result.json").exists()
        assert [json.loads(x)["name"] for x in fake_log.read_text().splitlines()] == ["slow"]
    finally:
        ex.shutdown()

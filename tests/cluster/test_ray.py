"""``--launcher ray`` against a real Ray head started by this session (2 CPUs): same results
as the local launcher; a worker killed in the middle of a run is retried and resumes to
the same weights; a 2-rank DDP run inside one task equals torchrun."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from supkd.experiments.grid import run_grid

from .grids import (
    ddp_raw,
    launcher_of,
    long_raw,
    outcome,
    small_raw,
    spec,
    supkd,
    unique,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.slow


def test_a_small_grid_on_ray_equals_the_local_launcher(tmp_path, ray_address, local_small):
    out = tmp_path / "runs"
    res = run_grid(spec(small_raw(unique("rs"))), out, launcher="ray", stream=None,
                   launcher_options={"ray_address": ray_address})
    assert outcome(out) == local_small  # weights, accuracies, α, CKA, errors: bit for bit
    assert res.statuses["broken-s0"] == "failed" and res.count("completed") == 5
    rec = launcher_of(out, "teacher-s0")
    assert rec["name"] == "ray" and rec["threads"] == 1 and rec["resumed"] is False
    assert len(rec["task_id"]) > 8 and rec["ray_job"]
    entry = json.loads((out / "teacher-s0" / "launcher.json").read_text())["teacher-s0"]
    assert entry["launcher"] == "ray" and entry["ray_job"] == rec["ray_job"]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _task_worker(head_pid: int, run: str) -> int | None:
    """The pid of the worker running ``run``'s task under this session's raylet (Ray titles
    a busy worker ``ray::<task name>``, supkd names a task ``supkd:<run>``); other Ray
    clusters of this machine are not looked at."""
    raylets = [p for p in _children(head_pid) if "raylet" in _cmdline(p)]
    for raylet in raylets:
        for w in _children(raylet):
            if _cmdline(w).startswith(f"ray::supkd:{run}"):
                return w
    return None


def test_a_killed_ray_worker_is_retried_and_resumes_to_the_same_weights(
        tmp_path, ray_head, local_long):
    address, head_pid = ray_head
    raw = long_raw(unique("rl"), runs=("long_a",), student=False)
    out = tmp_path / "runs"
    driver = supkd("grid", str(write_spec(raw, tmp_path)), "--launcher", "ray",
                   "--ray-address", address, "--out", str(out), "--no-report")
    try:
        wait_for(lambda: (out / "long_a-s0" / "checkpoints" / "last.pt").is_file(), 120,
                 "a checkpoint of long_a")
        worker = wait_for(lambda: _task_worker(head_pid, "long_a-s0"), 30, "the task's Ray worker")
        os.kill(worker, signal.SIGKILL)  # as the out-of-memory killer would
        text, _ = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, text
    assert outcome(out)["long_a-s0"] == local_long["long_a-s0"]
    rec = launcher_of(out, "long_a-s0")
    assert rec["resumed"] is True and rec["pid"] != worker  # the retry, in a new worker


def test_a_two_rank_ddp_run_in_one_ray_task_equals_torchrun(tmp_path, ray_address,
                                                           torchrun_ddp):
    out = tmp_path / "runs"
    res = run_grid(spec(ddp_raw(unique("rd"))), out, launcher="ray", stream=None,
                   launcher_options={"ray_address": ray_address})
    assert res.count("completed") == 1, res.problems
    got = json.loads((out / "ddp-s3" / "result.json").read_text())
    assert got["world_size"] == 2 and got["launcher"]["ranks"] == 2
    ref = torchrun_ddp
    assert got["replica_fingerprints"] == ref["replica_fingerprints"]
    assert (got["test_acc"], got["steps"]) == (ref["test_acc"], ref["steps"])

"""``--launcher ray`` against a real Ray head started by this session (4 CPUs and 1 GPU
declared): same results as the local launcher; ``gpus: 0.25`` packs four runs on the one
"GPU"; a worker killed in the middle of a run is retried and resumes to the same weights;
a 2-rank DDP run inside one task equals torchrun."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import pytest

from supkd.errors import UserError
from supkd.experiments.grid import run_grid
from supkd.train.checkpoint import load_checkpoint

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


def _checkpoint_step(run_dir: Path) -> int:
    """The step of the run's last checkpoint (it is rewritten every 4 steps), 0 when none."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file():
        return 0
    try:
        return int(load_checkpoint(path)["step"])
    except (UserError, OSError, KeyError):  # being replaced right now: look again
        return 0


def test_a_killed_worker_is_retried_and_ctrl_c_stops_its_task_at_a_checkpoint(
        tmp_path, ray_head, local_long):
    address, head_pid = ray_head
    raw = long_raw(unique("rl"), runs=("long_a",), student=False)
    path, out = str(write_spec(raw, tmp_path)), tmp_path / "runs"
    run_dir = out / "long_a-s0"
    driver = supkd("grid", path, "--launcher", "ray", "--ray-address", address, "--out",
                   str(out), "--no-report")
    try:
        wait_for(lambda: _checkpoint_step(run_dir) > 0, 120, "a checkpoint of long_a")
        worker = wait_for(lambda: _task_worker(head_pid, "long_a-s0"), 30, "its Ray worker")
        os.kill(worker, signal.SIGKILL)  # as the out-of-memory killer would
        # Ray retries the task in a new worker, which resumes from that checkpoint ...
        retry = wait_for(lambda: (w := _task_worker(head_pid, "long_a-s0")) != worker and w,
                         60, "the retried task")
        step = _checkpoint_step(run_dir)
        wait_for(lambda: _checkpoint_step(run_dir) > step, 60, "a checkpoint of the retry")
        driver.send_signal(signal.SIGINT)  # ... and Ctrl-C on the driver stops it
        text, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, text
    assert "stopped 1 Ray task(s)" in text
    assert not (run_dir / "result.json").exists() and _checkpoint_step(run_dir) > step
    assert not Path(f"/proc/{retry}").exists() or not _cmdline(retry).startswith(
        "ray::supkd:long_a")

    # The same command again: resumes the run, which ends as an uninterrupted one.
    res = run_grid(spec(raw), out, launcher="ray", stream=None,
                   launcher_options={"ray_address": address})
    assert res.count("completed") == 1
    assert outcome(out)["long_a-s0"] == local_long["long_a-s0"]  # bit for bit
    assert launcher_of(out, "long_a-s0")["resumed"] is True


def test_a_second_driver_follows_the_first_ones_runs_and_submits_nothing(tmp_path,
                                                                        ray_address,
                                                                        local_long):
    raw = long_raw(unique("r2"), runs=("long_a",), student=False)
    path, out = str(write_spec(raw, tmp_path)), tmp_path / "runs"
    first = supkd("grid", path, "--launcher", "ray", "--ray-address", ray_address, "--out",
                  str(out), "--no-report")
    try:
        wait_for(lambda: (out / "long_a-s0" / "checkpoints" / "last.pt").is_file(), 120,
                 "a checkpoint of long_a")
        entry = json.loads((out / "long_a-s0" / "launcher.json").read_text())["long_a-s0"]
        buf = io.StringIO()
        res = run_grid(spec(raw), out, launcher="ray", stream=buf,
                       launcher_options={"ray_address": ray_address})
        text, _ = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, text
    assert "attached  long_a-s0  (run by another supkd grid (Ray job " in buf.getvalue()
    assert res.count("completed") == 1 and "start " not in buf.getvalue()
    # One submission, the first driver's: the record is unchanged.
    assert json.loads((out / "long_a-s0" / "launcher.json").read_text()) == {
        "long_a-s0": entry}
    assert outcome(out)["long_a-s0"] == local_long["long_a-s0"]


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


def test_quarter_gpus_run_four_at_once_on_the_one_declared_gpu(tmp_path, ray_address):
    raw = long_raw(unique("rq"), runs=("q1", "q2", "q3", "q4"), student=False, epochs=2)
    raw["resources"] = {**raw["resources"], "gpus": 0.25}
    out = tmp_path / "runs"
    res = run_grid(spec(raw), out, launcher="ray", stream=None,
                   launcher_options={"ray_address": ray_address})
    assert res.count("completed") == 4, res.problems
    spans = []
    for run in ("q1-s0", "q2-s0", "q3-s0", "q4-s0"):
        rec = launcher_of(out, run)
        # Ray gave every task a quarter of GPU 0 (and set CUDA_VISIBLE_DEVICES to it).
        assert rec["gpu_share"] == 0.25 and rec["gpu_ids"] == ["0"] and rec["gpus"] == "0"
        spans.append((rec["started_at"], (out / run / "result.json").stat().st_mtime))
    # Four to a GPU: each started before any of them had ended.
    assert max(s for s, _ in spans) < min(e for _, e in spans)

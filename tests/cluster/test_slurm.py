"""``--launcher slurm`` against the real Slurm cluster of this machine (one node; CI starts
it with .ci/slurm-up.sh): same results as the local launcher, a requeued and a preempted
job resume to the same weights, --detach/--status/re-attach never submit a run twice, a
2-rank DDP job equals torchrun, a failing run is recorded failed once."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import time
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from supkd.cli import main
from supkd.experiments.grid import plan_grid, run_grid, spec_hash
from supkd.experiments.grid.executor import Job
from supkd.experiments.grid.jobs import train_job
from supkd.experiments.grid.launchers import LauncherOptions, build_launcher
from supkd.experiments.grid.launchers.slurm_queue import job_states

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

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm")]


def _job_ids(runs_dir: Path) -> dict[str, str]:
    """Every job submitted for the grid: launcher.json entry -> Slurm job id."""
    ids = {}
    for f in Path(runs_dir).glob("*/launcher.json"):
        for name, entry in json.loads(f.read_text()).items():
            ids[name] = entry["job_id"]
    return ids


def _scripts(runs_dir: Path) -> int:
    return len(list((Path(runs_dir) / ".slurm").glob("*_submission.sh")))


def _status(spec_path: Path, out: Path) -> str:
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["grid", str(spec_path), "--out", str(out), "--status"]) == 0
    return buf.getvalue()


def test_a_small_grid_on_slurm_equals_the_local_launcher(tmp_path, local_small):
    raw = small_raw(unique("ts"))
    out = tmp_path / "runs"
    res = run_grid(spec(raw), out, launcher="slurm", stream=None)
    got = outcome(out)
    assert got == local_small  # weights, accuracies, α, CKA, errors: bit for bit
    assert got["kd_cosine-s0"]["status"] == "completed" and got["kd_cosine-s0"]["weights"]
    assert res.statuses["kd_from_broken-s0"] == "skipped"
    # The run that fails for its own reasons: recorded failed, its job submitted once.
    assert "larger than the training split" in got["broken-s0"]["error"]
    ids = _job_ids(out)
    assert sorted(ids) == ["broken-s0", "kd_cosine-s0", "kd_cosine-s0/cka",
                           "kd_cosine-tune-a0.5-s0", "kd_cosine-tune-a2-s0", "teacher-s0"]
    assert _scripts(out) == len(ids) == len(set(ids.values()))
    assert job_states([ids["broken-s0"]])[ids["broken-s0"]].state == "FAILED"
    rec = launcher_of(out, "teacher-s0")
    assert rec["name"] == "slurm" and rec["job_id"] == ids["teacher-s0"]
    assert rec["threads"] == 1 and rec["ranks"] == 1 and rec["host"] == socket.gethostname()
    assert json.loads((out / "teacher-s0" / "result.json").read_text())["device"].endswith(
        "1 threads)")
    script = (out / ".slurm" / f"{ids['teacher-s0']}_submission.sh").read_text()
    assert "--cpus-per-task=1" in script and "--mem=1GB" in script
    assert f"--job-name=supkd-{raw['grid']}-teacher-s0" in script

    text = _status(write_spec(raw, tmp_path), out)
    assert "teacher-s0" in text and "larger than the training split" in text
    assert "5 done, 1 failed, 1 not started" in text


def _read_until(proc, text: str) -> str:
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return "".join(seen)
    raise AssertionError(f"{text!r} never printed:\n{''.join(seen)}")


def _requeued(job_id: str) -> bool:
    st = job_states([job_id]).get(job_id)
    return st is not None and st.state == "PENDING"


def test_requeue_preemption_detach_and_reattach(tmp_path, local_long):
    raw = long_raw(unique("tl"))
    path, out = write_spec(raw, tmp_path), tmp_path / "runs"
    # --detach: both long runs start, the student is held on long_a (afterok).
    res = run_grid(spec(raw), out, launcher="slurm", detach=True, stream=None)
    assert res.statuses == {"long_a-s0": "submitted", "long_b-s0": "submitted",
                            "after_long-s0": "submitted"}
    ids = _job_ids(out)
    student = (out / ".slurm" / f"{ids['after_long-s0']}_submission.sh").read_text()
    assert f"--dependency=afterok:{ids['long_a-s0']}" in student
    assert "--kill-on-invalid-dep=yes" in student

    # In the middle of each long run: `scontrol requeue` (SIGTERM) one, and send the
    # other the preemption signal submitit asks Slurm for before a time limit (USR2).
    # Each one at its own first checkpoint: waiting for both first lets the earlier one
    # finish on a busy machine, and then there is nothing left to requeue.
    signals = {"long_a-s0": ["scontrol", "requeue", ids["long_a-s0"]],
               "long_b-s0": ["scancel", "--signal=USR2", ids["long_b-s0"]]}
    deadline = time.monotonic() + 120
    while signals:
        for run in [r for r in signals if (out / r / "checkpoints" / "last.pt").is_file()]:
            subprocess.run(signals.pop(run), check=True)
            assert not (out / run / "result.json").exists(), f"{run} ended before its signal"
        assert time.monotonic() < deadline, f"no checkpoint of {sorted(signals)}"
        time.sleep(0.05)
    for run in ("long_a-s0", "long_b-s0"):
        # Slurm holds a requeued job ~2 minutes before it may start again.
        wait_for(lambda r=run: _requeued(ids[r]), 60, f"{run} requeued", every=0.2)
    text = _status(path, out)
    assert "after_long-s0" in text and "queued" in text and "Dependency" in text

    # A driver attaches to the two held jobs (the student waits for long_a in the plan);
    # Ctrl-C leaves them to Slurm (the default).
    driver = supkd("grid", str(path), "--launcher", "slurm", "--out", str(out), "--no-report")
    _read_until(driver, "attached  long_b-s0")
    driver.send_signal(signal.SIGINT)
    text, _ = driver.communicate(timeout=60)
    assert driver.returncode == 130, text
    assert f"left 2 Slurm job(s) queued or running ({ids['long_a-s0']}, {ids['long_b-s0']})" \
        in text
    for run in ("long_a-s0", "long_b-s0"):
        subprocess.run(["scontrol", "update", f"JobId={ids[run]}", "StartTime=now"],
                       check=True)

    # The same command again: attaches to all three, submits nothing, waits for them.
    buf = io.StringIO()
    res = run_grid(spec(raw), out, launcher="slurm", stream=buf)
    assert res.count("completed") == 3, buf.getvalue()
    assert buf.getvalue().count("attached") == 3 and "start " not in buf.getvalue()
    assert _job_ids(out) == ids and _scripts(out) == 3
    assert outcome(out) == local_long  # an uninterrupted run's weights, bit for bit
    for run in ("long_a-s0", "long_b-s0"):
        rec = launcher_of(out, run)
        assert rec["restarts"] == 1 and rec["resumed"] is True, rec
    assert launcher_of(out, "after_long-s0")["resumed"] is False


def test_a_two_rank_ddp_job_equals_torchrun(tmp_path, torchrun_ddp):
    raw = ddp_raw(unique("td"))
    out = tmp_path / "runs"
    res = run_grid(spec(raw), out, launcher="slurm", stream=None)
    assert res.count("completed") == 1, res.problems
    run_dir = out / "ddp-s3"
    slurm = json.loads((run_dir / "result.json").read_text())
    assert slurm["world_size"] == 2 and slurm["launcher"]["ranks"] == 2
    script = next((out / ".slurm").glob("*_submission.sh")).read_text()
    assert "--ntasks-per-node=2" in script

    ref = torchrun_ddp
    assert slurm["replica_fingerprints"] == ref["replica_fingerprints"]
    assert len(set(ref["replica_fingerprints"])) == 1
    assert (slurm["test_acc"], slurm["steps"]) == (ref["test_acc"], ref["steps"])


def test_on_interrupt_cancel_stops_the_jobs_at_a_checkpoint(tmp_path):
    raw = long_raw(unique("tc"), runs=("long_a",), student=False, epochs=8)
    out = tmp_path / "runs"
    (run,) = plan_grid(spec(raw), out)
    config = {**run.config, "meta": {**run.config["meta"], "spec_hash": spec_hash(run.config)}}
    executor = build_launcher("slurm", LauncherOptions(runs_dir=out, grid=raw["grid"],
                                                       on_interrupt="cancel", stream=None),
                              [run])
    executor.submit(Job(run.name, train_job, config, out / run.dir_name, False, run.resources))
    job = _job_ids(out)["long_a-s0"]
    wait_for(lambda: (out / "long_a-s0" / "checkpoints" / "last.pt").is_file(), 120,
             "a checkpoint of long_a")
    executor.interrupt()  # what Ctrl-C on the driver does, with --on-interrupt cancel
    assert not job_states([job])[job].active
    # Stopped at a checkpoint, with no result: the next `supkd grid` resumes it.
    assert not (out / "long_a-s0" / "result.json").exists()
    assert "interrupted" in _status(write_spec(raw, tmp_path), out)

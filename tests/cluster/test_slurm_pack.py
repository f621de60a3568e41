"""Packed Slurm jobs (``resources.slurm.pack``) against the real one-node Slurm: N runs in
M < N jobs equal the local launcher; a requeued packed job resumes each of its runs to the
uninterrupted weights; a killed worker's runs are handed out again once; ``--detach``,
``--status`` and re-attaching after Ctrl-C submit nothing twice; arrays keep their
throttle."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from supkd.experiments.grid import run_grid
from supkd.experiments.grid.launchers.slurm_pack_files import PackDirs

from .grids import (
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
from .test_slurm import _read_until, _requeued, _scripts, _status

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("slurm")]


def _packed(raw: dict, **slurm) -> dict:
    raw["resources"] = {**raw["resources"], "slurm": slurm}
    return raw


def _in_thread(fn, *args, **kw):
    """``fn(*args, **kw)`` in a thread; returns (thread, box) where box['res'] is its result."""
    box: dict = {}

    def go():
        try:
            box["res"] = fn(*args, **kw)
        except BaseException as exc:  # re-raised by the test
            box["exc"] = exc
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, box


def _joined(t, box, timeout=300):
    t.join(timeout)
    assert not t.is_alive(), "the grid did not end"
    if "exc" in box:
        raise box["exc"]
    return box["res"]


def _checkpointed(out: Path, *runs: str) -> bool:
    return all((out / r / "checkpoints" / "last.pt").is_file() for r in runs)


def test_n_runs_in_fewer_packed_jobs_equal_the_local_launcher(tmp_path, local_small):
    raw = _packed(small_raw(unique("pk")), pack=10, concurrent=2)
    out = tmp_path / "runs"
    buf = io.StringIO()
    res = run_grid(spec(raw), out, launcher="slurm", stream=buf)
    assert outcome(out) == local_small, buf.getvalue()  # bit for bit
    assert res.statuses["kd_from_broken-s0"] == "skipped"
    recs = {d.name: launcher_of(out, d.name) for d in out.iterdir()
            if (d / "result.json").is_file()}
    jobs = {r["job_id"] for r in recs.values()}
    assert len(jobs) < len(recs) and _scripts(out) == len(jobs) == 1, recs
    for r in recs.values():
        assert r["packed"] is True and r["pack"] == 10 and r["concurrent"] == 2
        assert r["worker"] == r["job_id"] and r["neighbours"] in (0, 1) and r["threads"] == 1
    assert any(r["neighbours"] == 1 for r in recs.values())  # two ran at once
    # The failing run did not stop its worker: the student and the CKA ran after it.
    assert "larger than the training split" in outcome(out)["broken-s0"]["error"]
    text = _status(write_spec(raw, tmp_path), out)
    assert "5 done, 1 failed, 1 not started" in text


def launcher_of_task(out: Path, run: str) -> str:
    """The worker job id a packed run's launcher.json names (once a worker took it)."""
    task = json.loads((out / run / "launcher.json").read_text())[run]["packed"]
    return wait_for(lambda: PackDirs.of(out / ".slurm").holder(task), 60,
                    f"the worker holding {run}")


def test_a_requeued_then_killed_packed_job_hands_each_run_out_once_to_resume(
        tmp_path, local_long):
    raw = _packed(long_raw(unique("pq")), pack=3, concurrent=2)
    out = tmp_path / "runs"
    long_runs = ("long_a-s0", "long_b-s0")
    buf = io.StringIO()
    t, box = _in_thread(run_grid, spec(raw), out, launcher="slurm", stream=buf)
    wait_for(lambda: _checkpointed(out, *long_runs), 180, "checkpoints of both packed runs")
    worker = launcher_of_task(out, "long_a-s0")
    assert worker == launcher_of_task(out, "long_b-s0")  # one job holds both

    # 1. `scontrol requeue`: every run checkpoints and stops; the job waits to start again
    # (Slurm holds a requeued job ~2 minutes), its claims kept: nothing is handed back.
    subprocess.run(["scontrol", "requeue", worker], check=True)
    wait_for(lambda: _requeued(worker), 60, "the packed job requeued", every=0.2)
    assert "requeued  long" not in buf.getvalue()
    assert not any((out / r / "result.json").exists() for r in long_runs)
    # 2. Killed for good while it waits: the driver hands each of its runs back once, and a
    # new worker resumes them from the checkpoints the requeue left.
    subprocess.run(["scancel", worker], check=True)
    res = _joined(t, box)
    assert res.count("completed") == 3, buf.getvalue()
    assert outcome(out) == local_long  # an uninterrupted run's weights, bit for bit
    text = buf.getvalue()
    for run in long_runs:
        # Handed out again once, after the kill.
        assert text.count(f"requeued  {run}  (its packed Slurm job {worker} ended") == 1, text
        rec = launcher_of(out, run)
        assert rec["job_id"] != worker and rec["resumed"] is True, rec
    assert text.count(f"its packed Slurm job {worker} ended") == 2, text
    assert _scripts(out) == 2  # the killed worker and the one new worker


def test_detach_status_and_reattach_after_ctrl_c_submit_nothing_twice(tmp_path,
                                                                      local_long):
    raw = _packed(long_raw(unique("pd")), pack=3, concurrent=2)
    path, out = write_spec(raw, tmp_path), tmp_path / "runs"
    res = run_grid(spec(raw), out, launcher="slurm", detach=True, stream=None)
    assert set(res.statuses.values()) == {"submitted"}  # the student too: held in the pack
    tasks = {r: json.loads((out / r / "launcher.json").read_text())[r]["packed"]
             for r in res.statuses}
    wait_for(lambda: _checkpointed(out, "long_a-s0"), 180, "a checkpoint of long_a")
    text = _status(path, out)
    assert "packed in Slurm job" in text and "running" in text, text

    driver = supkd("grid", str(path), "--launcher", "slurm", "--out", str(out), "--no-report")
    _read_until(driver, "attached  long_b-s0")
    driver.send_signal(signal.SIGINT)
    said, _ = driver.communicate(timeout=60)
    assert driver.returncode == 130, said

    buf = io.StringIO()
    res = run_grid(spec(raw), out, launcher="slurm", stream=buf)
    assert res.count("completed") == 3, buf.getvalue()
    assert "start " not in buf.getvalue()  # every run followed, none handed out again
    assert {r: json.loads((out / r / "launcher.json").read_text())[r]["packed"]
            for r in res.statuses} == tasks
    assert outcome(out) == local_long
    assert launcher_of(out, "after_long-s0")["resumed"] is False


def test_a_job_array_keeps_its_throttle(tmp_path):
    raw = long_raw(unique("pa"), runs=("a", "b", "c"), student=False, epochs=1)
    raw["base"]["train"].update(steps_per_epoch=4, checkpoint_every_steps=0)
    raw = _packed(raw, pack=2, concurrent=1, array_parallelism=1)
    out = tmp_path / "runs"
    res = run_grid(spec(raw), out, launcher="slurm", stream=None)
    assert res.count("completed") == 3, res.problems
    scripts = list((out / ".slurm").glob("*_submission.sh"))
    assert len(scripts) == 1 and "#SBATCH --array=0-1%1" in scripts[0].read_text()
    spans: dict[str, list[tuple[float, float]]] = {}
    for run in ("a-s0", "b-s0", "c-s0"):
        rec = launcher_of(out, run)
        assert "_" in rec["job_id"]  # an array element: <array id>_<index>
        end = (out / run / "result.json").stat().st_mtime
        spans.setdefault(rec["job_id"], []).append((rec["started_at"], end))
    assert len(spans) == 2 and sorted(len(v) for v in spans.values()) == [1, 2]
    (first, second) = sorted(spans.values())
    # At most one worker of the array at a time: the second starts after the first ended.
    assert max(e for _, e in first) <= min(s for s, _ in second)

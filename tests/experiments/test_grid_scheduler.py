"""The scheduler and its executor seam: any executor that honours the contract of
``supkd.experiments.grid.executor`` (jobs ending in any order, jobs handed back to be
submitted again) runs a grid in dependency order; α, stage and seed come from the plan,
never from run names."""

from __future__ import annotations

import io
import json

import pytest
import torch

from supkd.analysis.layerwise import LayerwiseCKA
from supkd.experiments.grid import (
    GridScheduler,
    InProcessExecutor,
    Job,
    Outcome,
    parse_grid,
    plan_grid,
    run_grid,
)
from supkd.experiments.grid.jobs import _call
from supkd.experiments.grid.progress import Progress
from supkd.experiments.grid.records import cka_state
from supkd.train.cka_record import CkaRecord, CkaSide
from supkd.train.run_dir import RunDir

from .fakeengine import fake_cka, fake_run


@pytest.fixture()
def log(tmp_path, monkeypatch):
    path = tmp_path / "calls.jsonl"
    path.write_text("")
    monkeypatch.setenv("SUPKD_FAKE_LOG", str(path))
    monkeypatch.delenv("SUPKD_FAKE_KILL_AT", raising=False)
    return path


def _calls(log):
    return [json.loads(x) for x in log.read_text().splitlines() if x]


def _spec(alphas=(0.1, 1.0, 10.0)):
    return parse_grid({
        "grid": "s", "seeds": [0, 1],
        "base": {"data": {"name": "digits"}, "task": {"acc": 80}},
        "tune": {"seeds": [0]},
        "runs": {
            "teacher": {"config": {"task": {"name": "ce"}}},
            "kd": {"alphas": list(alphas),
                   "config": {"task": {"name": "distill", "teacher": "${run:teacher}",
                                       "alpha": "${alpha}"}}},
            "student": {"config": {"task": {"teacher": "${run:kd}"}}},
        },
        "cka": {"teacher": "teacher", "students": ["kd"]},
    })


class LastInFirstOut:
    """An executor with 3 slots whose jobs end in the reverse order of submission (a
    cluster does not finish jobs in the order they were queued)."""

    slots = 3
    after_ok = False

    def __init__(self):
        self.queued: list[Job] = []
        self.order: list[str] = []

    def attach(self, name, run_dir, *, analysis=False):
        return None  # nothing outlives a driver here

    def submit(self, job):
        self.queued.append(job)

    def wait(self):
        job = self.queued.pop()
        self.order.append(job.name)
        return [Outcome(job.name, _call(job.fn, job.config, job.run_dir, job.resume))]

    def interrupt(self):
        raise AssertionError("not interrupted")

    def shutdown(self):
        self.shut = True


class PreemptsEveryJobOnce(InProcessExecutor):
    """Hands every job back unrun the first time (a preempted node), then runs it."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def submit(self, job):
        if job.name not in self.seen:
            self.seen.add(job.name)
            self._ended.append(Outcome(job.name, None, "its node was preempted"))
        else:
            super().submit(job)


def test_an_executor_that_ends_jobs_out_of_order_keeps_dependency_order(tmp_path, log):
    ex = LastInFirstOut()
    sched = GridScheduler(_spec(), tmp_path / "runs", run_fn=fake_run, analysis_fn=fake_cka,
                          stream=None)
    res = sched.run(ex)
    assert ex.shut and res.ok and res.count("completed") == len(sched.plan) == 11
    plan = {r.name: r for r in plan_grid(_spec(), tmp_path / "runs")}
    for name in ex.order:  # every job ended after the jobs it depends on
        for d in plan[name].deps + plan[name].soft_deps:
            assert ex.order.index(d) < ex.order.index(name), (d, name)
    # fake_run asserts that a run's teacher has completed before it starts; it never failed
    assert res.alphas["kd"][0] == 1.0
    assert ex.order.index("kd-tune-a10-s0") < ex.order.index("kd-tune-a0.1-s0")  # LIFO


def test_a_job_handed_back_is_submitted_again_and_runs_once(tmp_path, log):
    out = io.StringIO()
    sched = GridScheduler(_spec(), tmp_path / "runs", run_fn=fake_run, analysis_fn=fake_cka,
                          stream=out)
    res = sched.run(PreemptsEveryJobOnce())
    assert res.ok and res.count("completed") == 11
    names = [c["name"] for c in _calls(log)]
    assert sorted(names) == sorted(r.name for r in sched.plan)  # each ran exactly once
    text = out.getvalue()
    assert text.count("requeued") == 11
    assert "requeued  teacher-s0  (its node was preempted; it will start again)" in text
    assert "[11/11]" in text


def test_alpha_comes_from_the_plan_not_from_the_run_name(tmp_path, log):
    # 1.0000001 prints as "1" in its tuning run's name (kd-tune-a1-s0): a grid that read α
    # back from the name would train the test-set runs with 1.0.
    res = run_grid(_spec(alphas=(1.0000001, 3.0)), tmp_path / "runs", run_fn=fake_run,
                   analysis_fn=fake_cka, stream=None)
    assert (tmp_path / "runs" / "kd-tune-a1-s0").is_dir()
    assert res.alphas["kd"][0] == 1.0000001
    for s in (0, 1):
        meta = json.loads((tmp_path / "runs" / f"kd-s{s}" / "result.json").read_text())["meta"]
        assert meta["alpha"] == 1.0000001 and meta["stage"] == "final" and meta["seed"] == s


def test_progress_judges_a_run_by_its_stage_not_its_name():
    out = io.StringIO()
    p = Progress(3, out)
    res = {"status": "completed", "test_acc": 91.0, "val_acc": 88.5, "wall_time_s": 1.25}
    p.end("plain-name", "tune", res)
    p.end("x-tune-a1-s0", "final", res)
    p.end("d", "final", {"status": "diverged", "diverged_step": 7, "val_acc": 1.0})
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/3] completed plain-name  val 88.50%  1.2s  | ")
    assert lines[1].startswith("[2/3] completed x-tune-a1-s0  test 91.00%  1.2s  | ")
    assert lines[2].startswith("[3/3] diverged  d  (diverged at step 7)  | ")


def test_cka_state_reads_cka_json_through_the_run_dir(tmp_path):
    rd = RunDir(tmp_path / "kd-s0")
    assert rd.cka_path == tmp_path / "kd-s0" / "cka.json"
    assert cka_state(rd, "/t") == "new"
    rd.path.mkdir()
    rd.cka_path.write_text("{broken")
    assert cka_state(rd, "/t") == "retry"
    assert rd.read_cka()[0] is None and "unreadable" in rd.read_cka()[1]
    rd.cka_path.write_text("[1, 2]")  # valid JSON, not an object
    assert cka_state(rd, "/t") == "retry"
    rd.cka_path.write_text(json.dumps({"teacher_dir": "/t"}))  # an object, not a record
    assert cka_state(rd, "/t") == "retry"
    # The flat layout grids wrote before the one record still reads (and is not redone).
    flat = {"teacher_dir": "/t", "stages_a": ["layer1"], "diagonal": {"layer1": 0.5}}
    rd.cka_path.write_text(json.dumps(flat))
    assert cka_state(rd, "/t") == "done"
    rd.cka_path.write_text(json.dumps({**flat, "teacher_dir": "/other"}))
    assert cka_state(rd, "/t") == "retry"
    # The record both `supkd cka` and the grid write (supkd.train.cka_record).
    res = LayerwiseCKA(["layer1"], ["layer1"], torch.tensor([[0.25]]), torch.tensor([[1.0]]),
                       {"layer1": 0.25}, num_samples=8, num_batches=2)
    for teacher, want in (("/t", "done"), ("/other", "retry")):
        rd.write_cka(CkaRecord.build(CkaSide("t", teacher), {"s": (CkaSide("kd-s0", "/s"), res)},
                                     {"name": "digits", "split": "test"}))
        assert cka_state(rd, "/t") == want
    assert rd.read_cka_record()[0].diagonal() == {"layer1": 0.25}

"""``supkd grid SPEC --status``: where each planned run stands, submitting nothing.

Read from the run directories (result.json, checkpoints, cka.json) and, for runs with a
cluster job recorded in ``launcher.json``, from the launcher that recorded it
(``Executor.live``: Slurm asks ``squeue`` and names the job or packed worker holding the
run, Ray looks for its driver's process). States: ``done``, ``running``, ``queued``,
``failed`` (with its reason), ``diverged`` (with its step), ``interrupted`` (a checkpoint,
no result: the next ``supkd grid`` resumes it) and ``not started``.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from supkd.experiments.grid.launchers import live_jobs
from supkd.experiments.grid.launchers.records import read_launches
from supkd.experiments.grid.plan import PlannedRun
from supkd.train.run_dir import RunDir
from supkd.vocab import GridState, RunKind, Stage
from supkd.vocab import RunStatus as Status

ORDER = tuple(s.value for s in GridState)


@dataclass(frozen=True)
class RunStatus:
    name: str
    state: str  # one of ORDER
    detail: str = ""


def _from_dir(run: PlannedRun, rd: RunDir) -> RunStatus:
    """A run's state from its directory alone."""
    if run.kind == RunKind.CKA:
        data, problem = rd.read_cka_record()
        if data is not None:
            teacher = Path(data.teacher["path"]).name if data.teacher.get("path") else None
            return RunStatus(run.name, GridState.DONE, f"CKA against {teacher}" if teacher else "")
        return RunStatus(run.name, GridState.FAILED, problem) if problem else \
            RunStatus(run.name, GridState.NOT_STARTED)
    res, problem = rd.read_result()
    if problem:
        return RunStatus(run.name, GridState.FAILED, problem)
    if res is not None:
        status = res.get("status")
        if status in (Status.COMPLETED, Status.IMPORTED):
            key, label = ("val_acc", "val") if run.stage == Stage.TUNE else ("test_acc", "test")
            acc = res.get(key)
            return RunStatus(run.name, GridState.DONE, f"{label} {acc:.2f}%" if isinstance(
                acc, int | float) else str(status))
        if status == Status.DIVERGED:
            return RunStatus(run.name, GridState.DIVERGED, f"at step {res.get('diverged_step')}")
        return RunStatus(run.name, GridState.FAILED, str(res.get("error") or "")
                         .splitlines()[0][:160] if res.get("error") else "")
    if rd.has_checkpoint():
        return RunStatus(run.name, GridState.INTERRUPTED, "resumes from checkpoints/last.pt")
    return RunStatus(run.name, GridState.NOT_STARTED)


def grid_status(plan: list[PlannedRun], runs_dir: str | Path) -> list[RunStatus]:
    """Each planned run's :class:`RunStatus`, in plan order."""
    runs_dir = Path(runs_dir)
    entries = {}
    for run in plan:
        entry = read_launches(runs_dir / run.dir_name).get(run.name)
        if entry is not None:
            entries[run.name] = entry
    live = live_jobs(entries)  # each launcher answers for its own entries
    rows = []
    for run in plan:
        row = _from_dir(run, RunDir(runs_dir / run.dir_name))
        if run.name in live and row.state != GridState.DONE:
            state, text = live[run.name]
            row = RunStatus(run.name, state, text)
        rows.append(row)
    return rows


def print_status(rows: list[RunStatus], title: str, stream: TextIO | None = None) -> None:
    """One line per run, then the count of each state (on ``stream``, default stdout)."""
    stream = stream or sys.stdout
    print(title, file=stream)
    width = max((len(r.name) for r in rows), default=10)
    for r in rows:
        print(f"  {r.name:<{width}}  {r.state:<11}  {r.detail}".rstrip(), file=stream)
    counts = Counter(r.state for r in rows)
    print(", ".join(f"{counts[s]} {s}" for s in ORDER if counts[s]), file=stream)

"""The seam between the grid's scheduler and whatever runs its jobs.

The scheduler (:mod:`supkd.experiments.grid.scheduler`) keeps the dependency order and
decides what each run needs (nothing, a resume, a fresh start); an :class:`Executor` only
runs the jobs it is given and reports how each ended. A new launcher (Slurm, Ray, ...) is a
new executor class; the scheduler does not change.

Contract:

- ``slots``: how many jobs may run at once; the scheduler never has more submitted and
  unreported.
- ``after_ok``: True when the launcher can hold a job until others have completed
  (Slurm's ``afterok``): ``supkd grid --detach`` then submits a run whose dependencies are
  still running, with ``job.after`` naming them.
- ``attach(name, run_dir, analysis=...)``: called before the scheduler decides what a
  ready run needs (``analysis``: a CKA job, whose result is the student's cka.json); a
  description ("Slurm job 12, running on node3") when a job of that run is still queued or
  running on the launcher (found through the run directory's ``launcher.json`` and checked
  with the cluster's own scheduler), else None. The executor then follows that job as if
  it had been submitted now, so a run is never submitted twice. Launchers whose jobs end
  with their driver answer None.
- ``submit(job)``: start ``job`` (or queue it with the launcher) and return at once. A job
  runs ``jobs._call(job.fn, job.config, job.run_dir, job.resume, threads=...,
  launcher=...)`` somewhere, each rank with ``job.resources.threads(...)`` torch threads;
  the run directory is the only state it shares with the driver.
- ``wait()``: block until at least one submitted job has ended; return an
  :class:`Outcome` for every job that ended since the last call. An outcome with ``result
  None`` is a job that did not end through a fault of its own (its worker pool broke, its
  node was preempted): the scheduler submits it again, and it resumes from its checkpoint.
- ``interrupt()``: the grid was stopped (Ctrl-C, SIGTERM): ask every running job to save
  its checkpoint and stop, and wait for them, so that the next ``supkd grid`` resumes them
  (a cluster launcher may instead leave its jobs running, when the user chose so, for the
  next ``supkd grid`` to attach to).
- ``shutdown()``: release the workers (called once, also after ``interrupt``).
- ``live(entries)`` (a static method: ``--status`` asks it without building an executor or
  joining a cluster): for the ``launcher.json`` entries this launcher recorded, key ->
  (``running`` or ``queued``, a description naming the job or worker that holds the run)
  for each one whose job is still queued or running. Launchers whose jobs end with their
  driver answer ``{}``. It is registered with the launcher
  (``register_launcher(name, live=TheExecutor.live)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from supkd.experiments.grid.jobs import RunFn, _call, launcher_info
from supkd.experiments.grid.resources import Resources


@dataclass(frozen=True)
class Job:
    """One job handed to an executor: ``fn(config, run_dir, resume)``."""

    name: str  # the planned run's name (outcomes are matched by it)
    fn: RunFn
    config: dict[str, Any]
    run_dir: Path
    resume: bool
    resources: Resources = field(default_factory=Resources)
    # --detach: runs this one depends on that are still queued or running on the launcher
    after: tuple[str, ...] = ()
    # more of the run's launcher record (result.json's ``launcher``): e.g. the packed Slurm
    # job that runs it and its neighbours there; over the executor's own keys
    launcher: dict[str, Any] | None = None


@dataclass(frozen=True)
class Outcome:
    """How one submitted job ended: ``result`` (the dict of :func:`jobs._call`), or None for
    a job to submit again, with ``why`` it did not end (shown in the progress line)."""

    name: str
    result: dict[str, Any] | None
    why: str = ""


class Executor(Protocol):
    slots: int
    after_ok: bool

    def attach(self, name: str, run_dir: Path, *, analysis: bool = False) -> str | None: ...

    def submit(self, job: Job) -> None: ...

    def wait(self) -> list[Outcome]: ...

    def interrupt(self) -> None: ...

    def shutdown(self) -> None: ...

    @staticmethod
    def live(entries: Mapping[Any, dict[str, Any]]) -> dict[Any, tuple[str, str]]: ...


def record(job: Job, base: dict[str, Any]) -> dict[str, Any]:
    """``job``'s launcher record: the executor's ``base`` with the job's own keys over it."""
    return {**base, **(job.launcher or {})}


class InProcessExecutor:
    """Runs each job in this process, when it is submitted (``--jobs 1``): a Ctrl-C reaches
    the job directly, which saves its checkpoint before the interrupt reaches the grid."""

    slots = 1
    after_ok = False

    def __init__(self) -> None:
        self._ended: list[Outcome] = []

    def attach(self, name: str, run_dir: Path, *, analysis: bool = False) -> str | None:
        return None  # a job run in this process ended with the process that ran it

    def submit(self, job: Job) -> None:
        # Without resources.cpus the process keeps its thread count (torch's default).
        threads = job.resources.cpus
        self._ended.append(Outcome(job.name, _call(
            job.fn, job.config, job.run_dir, job.resume, threads=threads,
            launcher=record(job, launcher_info("local", threads)))))

    def wait(self) -> list[Outcome]:
        ended, self._ended = self._ended, []
        return ended

    def interrupt(self) -> None:
        pass  # the interrupted job has already stopped: it ran in this process

    def shutdown(self) -> None:
        pass

    @staticmethod
    def live(entries: Mapping[Any, dict[str, Any]]) -> dict[Any, tuple[str, str]]:
        return {}  # its jobs ended with the process that ran them

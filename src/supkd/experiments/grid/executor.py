"""The seam between the grid's scheduler and whatever runs its jobs.

The scheduler (:mod:`supkd.experiments.grid.scheduler`) keeps the dependency order and
decides what each run needs (nothing, a resume, a fresh start); an :class:`Executor` only
runs the jobs it is given and reports how each ended. A new launcher (Slurm, Ray, ...) is a
new executor class; the scheduler does not change.

Contract:

- ``slots``: how many jobs may run at once; the scheduler never has more submitted and
  unreported.
- ``submit(job)``: start ``job`` (or queue it with the launcher) and return at once. A job
  runs ``jobs._call(job.fn, job.config, job.run_dir, job.resume)`` somewhere; the run
  directory is the only state it shares with the driver.
- ``wait()``: block until at least one submitted job has ended; return an
  :class:`Outcome` for every job that ended since the last call. An outcome with ``result
  None`` is a job that did not end through a fault of its own (its worker pool broke, its
  node was preempted): the scheduler submits it again, and it resumes from its checkpoint.
- ``interrupt()``: the grid was stopped (Ctrl-C, SIGTERM): ask every running job to save
  its checkpoint and stop, and wait for them, so that the next ``supkd grid`` resumes them.
- ``shutdown()``: release the workers (called once, also after ``interrupt``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from supkd.experiments.grid.jobs import RunFn, _call


@dataclass(frozen=True)
class Job:
    """One job handed to an executor: ``fn(config, run_dir, resume)``."""

    name: str  # the planned run's name (outcomes are matched by it)
    fn: RunFn
    config: dict[str, Any]
    run_dir: Path
    resume: bool


@dataclass(frozen=True)
class Outcome:
    """How one submitted job ended: ``result`` (the dict of :func:`jobs._call`), or None for
    a job to submit again, with ``why`` it did not end (shown in the progress line)."""

    name: str
    result: dict[str, Any] | None
    why: str = ""


class Executor(Protocol):
    slots: int

    def submit(self, job: Job) -> None: ...

    def wait(self) -> list[Outcome]: ...

    def interrupt(self) -> None: ...

    def shutdown(self) -> None: ...


class InProcessExecutor:
    """Runs each job in this process, when it is submitted (``--jobs 1``): a Ctrl-C reaches
    the job directly, which saves its checkpoint before the interrupt reaches the grid."""

    slots = 1

    def __init__(self) -> None:
        self._ended: list[Outcome] = []

    def submit(self, job: Job) -> None:
        self._ended.append(Outcome(job.name, _call(job.fn, job.config, job.run_dir,
                                                   job.resume)))

    def wait(self) -> list[Outcome]:
        ended, self._ended = self._ended, []
        return ended

    def interrupt(self) -> None:
        pass  # the interrupted job has already stopped: it ran in this process

    def shutdown(self) -> None:
        pass

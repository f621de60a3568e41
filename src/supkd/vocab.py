"""The project's words for how runs end and where they stand, as ``enum.StrEnum`` s.

Each member is its string (``RunStatus.COMPLETED == "completed"``), so files written before
these types existed (``result.json``, ``launcher.json``, grid specs) read and compare as
they always did, and a member written to JSON or YAML is the plain word.

- :class:`RunStatus`: how a run ended, the ``status`` of its ``result.json``.
- :class:`JobStatus`: how a grid job ended in one ``supkd grid`` invocation (a run status,
  or one of the grid's own outcomes: cached, skipped, submitted, waiting, missing).
- :class:`RunState`: what a run directory tells the grid before it runs the run.
- :class:`GridState`: a planned run's line in ``supkd grid --status``; a launcher answers
  "what is live" with :attr:`GridState.RUNNING` or :attr:`GridState.QUEUED`.
- :class:`Stage`: which stage of the grid protocol a run belongs to (``meta.stage``).
- :class:`RunKind`: what a planned grid run does (trains, or computes a CKA record).
"""

from __future__ import annotations

import enum

__all__ = ["GridState", "JobStatus", "RunKind", "RunState", "RunStatus", "Stage"]


class RunStatus(enum.StrEnum):
    """The ``status`` of a ``result.json`` (:class:`supkd.train.run_dir.RunResult`)."""

    COMPLETED = "completed"
    DIVERGED = "diverged"  # a non-finite loss stopped it (never raised)
    FAILED = "failed"  # a user error or a bug; the error is recorded
    IMPORTED = "imported"  # a teacher brought in by ``supkd import-teacher``; never retrained

    @property
    def finished(self) -> bool:
        """A run that ended for good with this config (the grid never redoes it)."""
        return self in (RunStatus.COMPLETED, RunStatus.DIVERGED, RunStatus.IMPORTED)

    @property
    def usable(self) -> bool:
        """A run whose model others may use (a teacher, an encoder, a CKA side)."""
        return self in (RunStatus.COMPLETED, RunStatus.IMPORTED)


class JobStatus(enum.StrEnum):
    """How one grid job ended in this invocation (the scheduler's summary line)."""

    COMPLETED = "completed"
    CACHED = "cached"  # already done in its run directory: kept, not rerun
    DIVERGED = "diverged"
    FAILED = "failed"
    IMPORTED = "imported"
    SKIPPED = "skipped"  # a run it needs did not complete
    SUBMITTED = "submitted"  # detached: left running on the launcher
    WAITING = "waiting"  # a detached grid's run still waiting for its dependencies
    MISSING = "missing"  # a dependency left out by ``only`` with no usable run on disk


class RunState(enum.StrEnum):
    """What a run directory holds, as the grid sees it before running the run."""

    NEW = "new"  # nothing yet
    RESUME = "resume"  # a checkpoint of this config and no final result
    RETRY = "retry"  # failed, partial, or interrupted with another config
    STALE = "stale"  # finished with another config
    DONE = "done"  # finished with this config (or imported)


class GridState(enum.StrEnum):
    """A planned run's state in ``supkd grid --status`` (in display order)."""

    DONE = "done"
    RUNNING = "running"
    QUEUED = "queued"
    FAILED = "failed"
    DIVERGED = "diverged"
    INTERRUPTED = "interrupted"  # a checkpoint, no result: the next grid resumes it
    NOT_STARTED = "not started"


class Stage(enum.StrEnum):
    """The protocol stage of a grid run (``meta.stage``): α tuning on the validation split,
    or the final runs reported on the test split."""

    FINAL = "final"
    TUNE = "tune"


class RunKind(enum.StrEnum):
    """What a planned grid run does: train a model, or compute a ``cka.json`` record."""

    TRAIN = "train"
    CKA = "cka"

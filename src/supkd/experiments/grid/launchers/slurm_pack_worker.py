"""What a packed Slurm job runs (``resources.slurm.pack``): :class:`PackWorker`, a worker
that takes runs out of the pack queue (:mod:`.slurm_pack_files`) and runs up to ``pack``
of them, ``concurrent`` at a time, in this job.

- ``concurrent: 1``: each run in this process, one after the other; ``concurrent: K``: a
  pool of K spawned processes that lives as long as the job (torch is imported once per
  process, not once per run), each run with its own ``resources.cpus`` threads.
- A run that fails records its failure and the worker goes on with the others.
- SIGTERM (``scontrol requeue``, ``scancel``, the end of a time limit) reaches every
  process of the job: each running run saves its checkpoint and stops; its claim stays
  with this job. A requeued job takes its own claims first, so each of them resumes from
  its checkpoint exactly once; a job that ended for good has its claims handed back by
  the driver. Submitit's preemption signal (USR2) is passed on as SIGTERM to the runs.
- The worker exits when it has run ``pack`` runs, or when nothing is left to take (its
  queue is empty and the driver is done, or has handed out nothing for a few seconds).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from supkd.experiments.grid.executor import Job
from supkd.experiments.grid.jobs import launcher_info
from supkd.experiments.grid.launchers.slurm_job import outcome_path
from supkd.experiments.grid.launchers.slurm_pack_files import (
    IDLE_S,
    PackDirs,
    read_task,
    write_done,
)
from supkd.experiments.grid.launchers.worker import resume_here
from supkd.experiments.grid.local import local_executor
from supkd.utils.atomic import atomic_write_json
from supkd.vocab import JobStatus, RunStatus

try:  # the launcher checks that submitit is installed before it submits anything
    from submitit import JobEnvironment
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - only without the cluster extra
    Checkpointable = object  # type: ignore[assignment,misc]

_POLL_S = 0.2


def _dep_state(dirs: PackDirs, folder: Path, dep: tuple[str, str]) -> str | None:
    """A ``--detach`` dependency's status (``completed``, ``failed``...), None while it
    runs: ``("task", id)`` of the pack, or ``("job", id)``, a Slurm job of its own."""
    kind, ident = dep
    if kind == "task":
        done = dirs.read_done(ident)
        return None if done is None else str((done.get("result") or {}).get("status"))
    with contextlib.suppress(OSError, ValueError):
        import json

        data = json.loads(outcome_path(folder, ident).read_text(encoding="utf-8"))
        return str((data.get("result") or {}).get("status"))
    return None


class PackWorker(Checkpointable):
    """``PackWorker()(folder, shape, pack, concurrent)`` as one Slurm job."""

    def __call__(self, folder: str, shape: str, pack: int, concurrent: int) -> dict[str, Any]:
        env = JobEnvironment()
        job_id = str(env.job_id)
        self.dirs, self.folder, self.shape = PackDirs.of(folder), Path(folder), shape
        self.mine = self.dirs.claimed(job_id)
        self.mine.mkdir(parents=True, exist_ok=True)
        self.job_id, self.pack, self.concurrent = job_id, pack, concurrent
        self.taken = self.dirs.taken(job_id)
        self.running: dict[str, str] = {}  # run name -> task
        self.stopped = False
        restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        self.base = {"job_id": job_id, "worker": job_id, "packed": True, "pack": pack,
                     "concurrent": concurrent, "restarts": restarts,
                     "nodes": os.environ.get("SLURM_JOB_NODELIST")}
        self.executor: Any = local_executor(concurrent)  # a pool's wait takes a timeout
        old_usr = signal.signal(JobEnvironment._usr_sig(), self._preempted)
        ran = 0
        try:
            ran = self._loop()
        finally:
            self.executor.shutdown()
            if self.stopped and callable(old_usr):
                old_usr(JobEnvironment._usr_sig(), None)  # submitit: requeue this job
        return {"worker": job_id, "ran": ran}

    # --- the loop -----------------------------------------------------------------------------

    def _loop(self) -> int:
        idle_since, ran = time.monotonic(), 0
        while not self.stopped:
            while len(self.running) < self.concurrent and not self.stopped:
                if not self._start_next():
                    break
            if not self.running:
                queue_empty = not any(self.dirs.queue(self.shape).glob("*.pkl"))
                full = self.taken >= self.pack
                quiet = time.monotonic() - idle_since
                if full or (queue_empty and (self.dirs.closed.exists() or quiet > IDLE_S)):
                    break
                time.sleep(_POLL_S)
                continue
            # A pool is waited on for a moment only, so that a run handed out meanwhile
            # goes into a free slot at once (not when a running one ends).
            pool = self.concurrent > 1
            ended = self.executor.wait(timeout=_POLL_S) if pool else self.executor.wait()
            ran += self._settle(ended)
            idle_since = time.monotonic()
        return ran

    def _candidates(self) -> list[Path]:
        own = sorted(self.mine.glob("*.pkl"))  # a requeued job's own runs first
        own = [p for p in own if p.stem not in self.running.values()]
        if own or self.taken >= self.pack:
            return own
        return sorted(self.dirs.queue(self.shape).glob("*.pkl"))

    def _start_next(self) -> bool:
        """Take the next run whose dependencies have completed and start it; False when
        there is none to take now."""
        for path in self._candidates():
            payload = read_task(path)
            if payload is None:
                continue
            deps = [_dep_state(self.dirs, self.folder, d) for d in payload.get("after", ())]
            if any(s is None for s in deps):
                continue  # --detach: still running elsewhere
            task, job = path.stem, payload["job"]
            if path.parent != self.mine:
                try:
                    os.rename(path, self.mine / path.name)  # exactly one worker gets it
                except OSError:
                    continue  # another worker took it first
                self.taken += 1
                atomic_write_json(self.dirs.worker(self.job_id),
                                  {"taken": self.taken, "shape": self.shape})
            bad = [s for s in deps if s != RunStatus.COMPLETED]
            if bad:
                self._finish(task, job.name, {"status": JobStatus.SKIPPED, "error": (
                    f"a run it needs ended {bad[0]}")})
                continue
            self._start(task, job)
            return True
        return False

    def _start(self, task: str, job: Job) -> None:
        threads = job.resources.threads(1)
        resume = resume_here(job)
        rec = {**launcher_info("slurm", threads), **self.base, "task": task,
               "neighbours": len(self.running), "resumed": resume,
               "started_at": round(time.time(), 3)}
        self.running[job.name] = task
        job = dataclasses.replace(job, resume=resume, launcher=rec)
        # Pool processes start with the preemption signal ignored (we pass it on as
        # SIGTERM); a run in this process keeps it.
        with _usr_ignored() if self.concurrent > 1 else contextlib.nullcontext():
            self.executor.submit(job)

    def _settle(self, outcomes: list[Any]) -> int:
        ran = 0
        for o in outcomes:
            task = self.running.pop(o.name)
            if o.result is None:  # interrupted: the checkpoint is saved, the claim stays
                self.stopped = True
                continue
            self._finish(task, o.name, o.result)
            ran += 1
        return ran

    def _finish(self, task: str, name: str, result: dict[str, Any]) -> None:
        write_done(self.dirs, task, name, result)
        (self.mine / f"{task}.pkl").unlink(missing_ok=True)

    # --- signals ------------------------------------------------------------------------------

    def _preempted(self, signum: int, frame: FrameType | None) -> None:
        """USR2 (the time limit is near, or preemption): every run checkpoints and stops."""
        self.stopped = True
        pool = getattr(self.executor, "_pool", None)
        for pid in list(getattr(pool, "_processes", None) or {}):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        if pool is None:
            signal.raise_signal(signal.SIGTERM)  # this process's run (the engine's handler)


@contextlib.contextmanager
def _usr_ignored() -> Iterator[None]:
    sig = signal.SIGUSR2
    old = signal.signal(sig, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(sig, old)


"""What one Slurm job runs, on each of its tasks (one task per DDP rank): :class:`SlurmRun`.

Submitit pickles a ``SlurmRun()`` call with the grid's :class:`~..executor.Job`; on the
node, ``python -m submitit.core._submit`` unpickles and calls it on every task that
``srun`` started. The call:

- maps Slurm's environment to torchrun's when the job has several tasks
  (``submitit.helpers.TorchDistributedEnvironment``: RANK = SLURM_PROCID, WORLD_SIZE =
  SLURM_NTASKS, LOCAL_RANK = SLURM_LOCALID, MASTER_ADDR = the job's first node, MASTER_PORT
  drawn from the job id), so the engine joins its DDP group as under torchrun;
- resumes from ``checkpoints/last.pt`` when it is a requeued job's second start;
- writes its result for the driver (``<submitit folder>/<job id>_outcome.json``, rank 0)
  and raises when the run did not complete, so that Slurm records the job as FAILED and
  the jobs held on it with ``afterok`` (``--detach``) are cancelled, not run on a missing
  teacher.

Preemption and time limits: submitit has Slurm send ``USR2`` 90 s before the end; its
handler calls :meth:`SlurmRun.checkpoint` (the ``Checkpointable`` hook: submit this same
call again) and requeues the job. The handler runs at once, in the middle of a training
step; ours first asks the engine to stop after the current step with a checkpoint (the
engine stops so on SIGTERM), then hands over to submitit's. ``scontrol requeue`` and
``scancel`` send SIGTERM: the engine checkpoints and stops, and the job either starts again
(requeue) or stays stopped, to be resumed by the next ``supkd grid``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

from supkd.experiments.grid.executor import Job
from supkd.experiments.grid.jobs import launcher_info
from supkd.experiments.grid.launchers.worker import run_job
from supkd.utils.atomic import atomic_write_json
from supkd.vocab import RunStatus

try:  # the launcher checks that submitit is installed before it submits anything
    from submitit import JobEnvironment
    from submitit.core.job_environment import SignalHandler
    from submitit.helpers import Checkpointable, TorchDistributedEnvironment
except ImportError:  # pragma: no cover - only without the cluster extra
    Checkpointable = object  # type: ignore[assignment,misc]


class RunNotCompletedError(RuntimeError):
    """The job's run ended failed, diverged or skipped (its result is in the outcome file);
    raised so that Slurm marks the job FAILED."""


def outcome_path(folder: str | Path, job_id: str) -> Path:
    """Where job ``job_id`` leaves its result for the driver (beside submitit's files)."""
    return Path(folder) / f"{job_id}_outcome.json"


class _Preemption:
    """Our handler of submitit's preemption signal (USR2): the engine checkpoints first."""

    def __init__(self) -> None:
        self.signum = JobEnvironment._usr_sig()
        self.submitit_handler = signal.getsignal(self.signum)
        self.caught: tuple[int, FrameType | None] | None = None
        signal.signal(self.signum, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.caught = (signum, frame)
        current = signal.getsignal(signal.SIGTERM)
        if isinstance(getattr(current, "__self__", None), SignalHandler):
            # Not training (submitit's own SIGTERM handler is in place, the engine's is not):
            # nothing to save beyond the last checkpoint; requeue now.
            self.requeue()
        else:
            signal.raise_signal(signal.SIGTERM)  # the engine: checkpoint after this step

    def requeue(self) -> None:
        """After the engine stopped: submitit's handler (``checkpoint``, ``scontrol
        requeue``, exit); nothing when no preemption signal came."""
        if self.caught is not None and callable(self.submitit_handler):
            self.submitit_handler(*self.caught)


class SlurmRun(Checkpointable):
    """``SlurmRun()(job, threads, folder)`` on every task of a Slurm job."""

    def __call__(self, job: Job, threads: int, folder: str) -> dict[str, Any]:
        env = JobEnvironment()
        if env.num_tasks > 1:
            # One GPU per rank is the engine's choice (cuda:LOCAL_RANK), so every task keeps
            # the GPUs Slurm gave the job.
            TorchDistributedEnvironment().export(set_cuda_visible_devices=False,
                                                 overwrite=True)
        preemption = _Preemption()
        # A job of its own: no neighbours (packed jobs record theirs: slurm_pack_worker.py).
        launcher = launcher_info("slurm", threads, job_id=env.job_id, worker=env.job_id,
                                 packed=False, neighbours=0, ranks=env.num_tasks,
                                 nodes=os.environ.get("SLURM_JOB_NODELIST"),
                                 restarts=int(os.environ.get("SLURM_RESTART_COUNT") or 0))
        try:
            res = run_job(job, threads, launcher)
        except KeyboardInterrupt:  # SIGTERM/USR2: the engine saved a checkpoint and stopped
            preemption.requeue()
            raise
        if env.global_rank == 0:
            atomic_write_json(outcome_path(folder, env.job_id), {"job": job.name, "result": res})
        if res.get("status") != RunStatus.COMPLETED:
            raise RunNotCompletedError(f"run {job.name}: {res.get('status')}"
                                  + (f" ({res['error']})" if res.get("error") else ""))
        return res

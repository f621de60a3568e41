"""What the cluster launchers' jobs share on the worker side: the resume rule of a job its
launcher started again, and running one job as a DDP group of processes on one node.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supkd.experiments.grid.executor import Job
from supkd.experiments.grid.jobs import _call
from supkd.train.run_dir import RunDir
from supkd.utils.ports import free_port


def resume_here(job: Job) -> bool:
    """Whether ``job`` resumes: as the scheduler decided when it submitted it, or because it
    is a second attempt of the same job (a requeued Slurm job, a retried Ray task) and finds
    the checkpoint its first attempt saved. The scheduler gave the job a clean directory (or
    one holding its own checkpoint), so a checkpoint there is always this job's."""
    return job.resume or RunDir(job.run_dir).has_checkpoint()


def run_job(job: Job, threads: int, launcher: dict[str, Any]) -> dict[str, Any]:
    """One job (one rank of it, under DDP) in this process: ``jobs._call`` with the job's
    threads and launcher record (which says whether this attempt resumed)."""
    resume = resume_here(job)
    return _call(job.fn, job.config, Path(job.run_dir), resume, threads=threads,
                 launcher={**launcher, "resumed": resume})


def run_ddp_job(job: Job, threads: int, launcher: dict[str, Any]) -> dict[str, Any]:
    """``job`` as ``job.resources.ranks`` DDP processes on this node, started by torchrun's
    own agent (``torch.distributed.launcher.elastic_launch``, what ``torchrun
    --nproc_per_node N`` runs), so each rank gets torchrun's environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and the engine joins the group as under torchrun.
    Returns rank 0's result."""
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=job.resources.ranks, run_id=job.name,
        rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{free_port()}", max_restarts=0,
        monitor_interval=1, start_method="spawn")
    results = elastic_launch(config, run_job)(job, threads, launcher)
    return results[0]

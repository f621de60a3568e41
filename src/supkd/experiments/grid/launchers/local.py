"""``--launcher local`` (the default): the runs on this machine, ``--jobs N`` at once."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

from supkd.errors import SupkdWarning, UserError
from supkd.experiments.grid.executor import Executor
from supkd.experiments.grid.launchers.registry import (
    LauncherOptions,
    register_launcher,
    resource_error,
)
from supkd.experiments.grid.local import local_executor
from supkd.experiments.grid.plan import PlannedRun


@register_launcher("local")
def local_launcher(options: LauncherOptions,
                   plan: Sequence[PlannedRun]) -> Executor:
    """A process pool of ``--jobs`` workers (this process for 1). A run's ``gpus``,
    ``nodes`` and DDP ranks are not placed by it: one process per run, on what the run's
    config says (``device``)."""
    for run in plan:
        res = run.resources
        if res.ranks > 1:
            # The key the user wrote: ranks = nodes x tasks_per_node (default one per GPU).
            key = ("nodes" if res.nodes > 1 else
                   "tasks_per_node" if res.tasks_per_node is not None else "gpus")
            raise resource_error(
                "local", run, key,
                f"a DDP run of {run.resources.ranks} ranks needs --launcher slurm or ray "
                "(or torchrun -m supkd train)")
    _warn_threads(plan)
    jobs = options.jobs or 1
    if jobs < 1:
        raise UserError(f"--jobs: expected a number >= 1, got {jobs}")
    return local_executor(jobs)


def _warn_threads(plan: Sequence[PlannedRun]) -> None:
    """SupkdWarning (once per value) for ``cpus`` above this machine's cores: each run's
    torch threads then compete for cores, which is slower, not faster."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    for run in plan:
        cpus = run.resources.cpus
        if cores and cpus is not None and cpus > cores:
            warnings.warn(f"grid field 'runs.{run.cell}.resources.cpus': {cpus} threads per "
                          f"run on a machine with {cores} cores (launcher local): the threads "
                          "compete for the cores", SupkdWarning, stacklevel=3)

"""What Slurm's own commands say about jobs: ``sinfo`` (is there a cluster), ``squeue``
(each job's state), ``scancel``.

Why not submitit's ``job.state``: submitit asks ``sacct``, which needs Slurm's accounting
database; clusters (and the one-node test cluster of ``.ci/slurm-up.sh``) without it make
submitit print "Bypassing sacct error" and report UNKNOWN. ``squeue --states=all`` answers
from the controller itself, for queued and running jobs and for ended ones until
``MinJobAge`` (5 minutes by default) has passed.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from supkd.errors import UserError

#: Job states in which a job is still Slurm's to run (queued, running, being requeued or
#: held): the grid waits for it and never submits its run again.
ACTIVE = frozenset({
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
    "REQUEUE_FED", "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT",
    "SPECIAL_EXIT", "RESV_DEL_HOLD",
})
#: Ended states that are no fault of the run (its node died or it was preempted and not
#: requeued): the grid submits it again, and it resumes from its checkpoint.
NOT_ITS_FAULT = frozenset({"NODE_FAIL", "BOOT_FAIL", "PREEMPTED"})

_TIMEOUT_S = 30


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # e.g. PENDING, RUNNING, COMPLETED, TIMEOUT
    reason: str  # why it is pending (Dependency, Resources, BeginTime, ...) or None
    nodes: str

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def describe(self) -> str:
        """``Slurm job 12, running on node3`` / ``Slurm job 13, pending (Dependency)``."""
        text = f"Slurm job {self.job_id}, {self.state.lower()}"
        if self.state == "RUNNING" and self.nodes:
            return f"{text} on {self.nodes}"
        if self.reason and self.reason != "None":
            return f"{text} ({self.reason})"
        return text


def _run(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)


def check_cluster() -> None:
    """A one-line ``UserError`` unless a Slurm controller answers ``sinfo`` here."""
    hint = ("run supkd on a Slurm login node, start a cluster (this repository's "
            ".ci/slurm-up.sh starts a one-node one), or use --launcher local")
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        raise UserError(f"launcher slurm: no Slurm commands here (sinfo/sbatch not found); "
                        f"{hint}")
    try:
        proc = _run(["sinfo", "--noheader", "--format=%a"])
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UserError(f"launcher slurm: sinfo did not answer ({type(exc).__name__}); "
                        f"{hint}") from None
    if proc.returncode != 0 or "up" not in proc.stdout.split():
        why = (proc.stderr.strip().splitlines() or ["no partition is up"])[-1]
        raise UserError(f"launcher slurm: no Slurm cluster answers ({why}); {hint}")


@dataclass(frozen=True)
class Partition:
    """What ``sinfo`` says one partition has: its nodes and the largest node's CPUs, memory
    (MB) and generic resources (``gpu:4``, or ``(null)``)."""

    name: str
    default: bool
    nodes: int
    cpus: int
    mem_mb: int
    gres: str

    @property
    def gpus(self) -> int:
        """GPUs of its largest node (0: none)."""
        best = 0
        for item in self.gres.split(","):
            parts = item.split("(")[0].split(":")
            if parts[0] == "gpu":
                with contextlib.suppress(ValueError):
                    best = max(best, int(parts[-1]))
        return best


def partitions() -> dict[str, Partition] | None:
    """Every partition of the cluster (``sinfo``), or None when sinfo does not answer."""
    try:
        proc = _run(["sinfo", "--noheader", "--format=%P|%D|%c|%m|%G"])
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    out: dict[str, Partition] = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5:
            continue
        name, default = parts[0].rstrip("*"), parts[0].endswith("*")
        with contextlib.suppress(ValueError):
            cpus = int(parts[2].rstrip("+"))
            mem = int(parts[3].rstrip("+"))
            old = out.get(name)
            out[name] = Partition(name, default or bool(old and old.default),
                                  int(parts[1]) + (old.nodes if old else 0),
                                  max(cpus, old.cpus if old else 0),
                                  max(mem, old.mem_mb if old else 0),
                                  parts[4] if not old or parts[4] != "(null)" else old.gres)
    return out


def job_states(job_ids: Iterable[str]) -> dict[str, JobState] | None:
    """The state of each of ``job_ids`` that the controller still knows (a job missing from
    the answer ended more than ``MinJobAge`` ago, or never existed); None when ``squeue``
    itself failed (the controller is busy or down: ask again later)."""
    ids = sorted(set(job_ids))
    if not ids:
        return {}
    try:
        proc = _run(["squeue", "--noheader", "--states=all", f"--jobs={','.join(ids)}",
                     "--array", "--format=%i|%T|%r|%N"])
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # Every id unknown to the controller: squeue says so and exits 1.
        return {} if "Invalid job id" in proc.stderr else None
    out = {}
    for line in proc.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and (parts[0] in ids or parts[0].split("_")[0] in ids):
            out[parts[0]] = JobState(parts[0], parts[1], parts[2], parts[3])
    return out


def cancel(job_ids: Iterable[str]) -> None:
    """``scancel`` (SIGTERM, then SIGKILL after the cluster's KillWait): a running run saves
    a checkpoint on the SIGTERM and stops."""
    ids = sorted(set(job_ids))
    if ids:
        _run(["scancel", *ids])

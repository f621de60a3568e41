"""What the Slurm launcher checks before it submits, and how it reports a refusal.

- :func:`check_feasible`: every planned run's request against what ``sinfo`` says the
  cluster has (the partition exists; its nodes, the largest node's CPUs, memory and GPUs),
  so that a request no node can satisfy is refused at once, naming the field and what the
  cluster has, instead of pending forever.
- :func:`refusal`: sbatch refused a job (an unknown partition or account, a flag sbatch
  does not know, a gres the cluster lacks): one line naming the spec field or the
  command-line option it came from, quoting Slurm's own reason.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from supkd.errors import UserError
from supkd.experiments.grid.launchers.registry import resource_error
from supkd.experiments.grid.launchers.slurm_queue import Partition, partitions
from supkd.experiments.grid.launchers.slurm_resources import packing, slurm_options
from supkd.experiments.grid.plan import PlannedRun

#: sbatch's reasons -> the resources field (spec) or option (command line) they concern
_REASONS = (
    (re.compile(r"partition", re.I), "partition"),
    (re.compile(r"account", re.I), "account"),
    (re.compile(r"qos", re.I), "qos"),
    (re.compile(r"constraint|feature", re.I), "constraint"),
    (re.compile(r"gres|generic resource|gpu", re.I), "gpus"),
    (re.compile(r"memory", re.I), "mem_gb"),
    (re.compile(r"time limit", re.I), "time_min"),
    (re.compile(r"node count|nodes", re.I), "nodes"),
    (re.compile(r"cpu|processor", re.I), "cpus"),
    (re.compile(r"unrecognized option|invalid option|unknown option", re.I), "sbatch"),
)


def _field(key: str, cli: Mapping[str, Any]) -> str:
    if key in cli:
        return f"--{key}"
    if key == "sbatch":
        return "--sbatch" if cli.get("sbatch") else "resources.slurm.sbatch"
    if key in ("partition", "account", "qos", "constraint"):
        return f"resources.slurm.{key}"
    return f"resources.{key}"


@contextlib.contextmanager
def sbatch_stderr() -> Iterator[None]:
    """What submitit prints of sbatch's stderr (on a refusal it prints it, then raises)
    held back for the block: a refusal becomes our one line, which quotes it; what sbatch
    says on a submission that worked (a warning) is passed on afterwards."""
    held = io.StringIO()
    with contextlib.redirect_stderr(held):
        yield
    if held.getvalue():
        sys.stderr.write(held.getvalue())


def sbatch_reason(text: str) -> str:
    """Slurm's own line out of submitit's error (sbatch's stderr), else the first line."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for ln in lines:
        if "sbatch:" in ln or "error:" in ln.lower():
            return ln[ln.find("sbatch:"):] if "sbatch:" in ln else ln
    return lines[0] if lines else "no reason given"


def refusal(exc: BaseException, run: str, cli: Mapping[str, Any],
            spec_flags: Mapping[str, Any] | None = None) -> UserError:
    """The one-line error for a submission of ``run`` that sbatch refused (``spec_flags``:
    the run's ``resources.slurm.sbatch``)."""
    reason = sbatch_reason(str(exc))[:300]
    low = reason.lower()
    flag = next((f for f in cli.get("sbatch", {}) if f.lower() in low), None)
    spec_flag = next((f for f in spec_flags or {} if f.lower() in low), None)
    if flag is not None:
        where = f"--sbatch {flag}"
    elif spec_flag is not None:
        where = f"resources.slurm.sbatch.{spec_flag}"
    else:
        key = next((k for pat, k in _REASONS if pat.search(reason)), None)
        where = _field(key, cli) if key else "resources.slurm or --sbatch"
    return UserError(f"launcher slurm: sbatch refused run {run} ({where}): {reason}; "
                     "nothing more was submitted")


def _partition_of(run: PlannedRun, cli: Mapping[str, Any],
                  parts: dict[str, Partition]) -> Partition:
    name = slurm_options(run.resources, cli).get("partition")
    if name is None:
        default = [p for p in parts.values() if p.default] or list(parts.values())[:1]
        if not default:
            raise UserError("launcher slurm: sinfo lists no partition on this cluster")
        return default[0]
    if name not in parts:
        where = "--partition" if "partition" in cli else \
            f"runs.{run.cell}.resources.slurm.partition"
        raise UserError(f"grid field '{where}': no partition {name!r} on this cluster "
                        f"(it has {', '.join(sorted(parts))}) (launcher slurm, run "
                        f"{run.name})")
    return parts[name]


def check_feasible(plan: Sequence[PlannedRun], cli: Mapping[str, Any]) -> None:
    """Refuse (``UserError``) the first run whose request no node of its partition can give
    (nothing when sinfo does not answer: then sbatch and the pending reason tell)."""
    parts = partitions()
    if not parts:
        return
    for run in plan:
        p = _partition_of(run, cli, parts)
        r = run.resources
        pack, concurrent, _ = packing(r, cli)
        at_once = concurrent if pack > 1 else 1
        has = f"partition {p.name} has"
        if r.nodes > p.nodes:
            raise resource_error("slurm", run, "nodes", f"{r.nodes} nodes asked, {has} "
                                 f"{p.nodes} node{'s' * (p.nodes != 1)}")
        cpus = r.threads(1) * r.ranks_per_node * at_once
        if cpus > p.cpus:
            raise resource_error("slurm", run, "cpus", f"{cpus} CPUs per node asked"
                                 + (f" ({at_once} runs at once)" if at_once > 1 else "")
                                 + f", {has} at most {p.cpus} per node")
        gpus = math.ceil(r.gpus * at_once - 1e-9) if r.gpus < 1 else int(r.gpus)
        if gpus > p.gpus:
            raise resource_error("slurm", run, "gpus", f"{gpus} GPUs per node asked, {has} "
                                 + (f"at most {p.gpus} per node" if p.gpus else
                                    f"no GPUs (sinfo gres: {p.gres})"))
        if r.mem_gb is not None and r.mem_gb * at_once * 1024 > p.mem_mb:
            raise resource_error("slurm", run, "mem_gb", f"{r.mem_gb * at_once:g} GB per "
                                 f"node asked, {has} at most {p.mem_mb / 1024:.1f} GB per "
                                 "node")

"""What one grid run asks of the machine it runs on: the ``resources:`` section of a spec.

A top-level ``resources:`` is every run's default; an entry (``runs.NAME.resources``) or
one matrix value (``runs.NAME.matrix.VAR.VALUE.resources``) overrides it key by key::

    resources: {cpus: 4, gpus: 1, mem_gb: 16, time_min: 240,
                slurm: {partition: gpu, account: lab, qos: normal, constraint: a100,
                        sbatch: {exclusive: true}},
                ray: {max_retries: 3, resources: {a100: 1}}}
    runs:
      teacher: {resources: {gpus: 8, nodes: 1}}        # one DDP job: 8 ranks, one per GPU
      kd_{method}: {resources: {gpus: 0.25}}            # four runs share a GPU (Ray only)

Keys (none changes what a run computes; they are not part of its ``spec_hash``):

- ``cpus``: CPU cores per rank; also each rank's torch intra-op thread count, on every
  launcher, so that two launchers give bit-identical results at the same ``cpus``. Unset:
  the local launcher keeps its own rule (cores / ``--jobs``), Slurm and Ray use 1.
- ``gpus``: GPUs per node. A fraction below 1 is a share of one GPU (Ray's fractional GPUs;
  Slurm only gives whole GPUs); from 1 up a whole number, one DDP rank per GPU.
- ``nodes``: nodes of one DDP job (Slurm; Ray runs a run on one node).
- ``tasks_per_node``: DDP ranks per node (default: one per GPU, else 1); a CPU run with
  ``tasks_per_node: 2`` is a 2-rank gloo DDP run.
- ``mem_gb``: memory per node; ``time_min``: the job's time limit (Slurm).
- ``slurm``: ``partition``, ``account``, ``qos``, ``constraint``, ``exclude``, ``setup``
  (shell lines run before the job, e.g. ``module load``) and ``sbatch`` (any other sbatch
  flag, ``{flag: value}``, ``true`` for a bare flag).
- ``ray``: ``max_retries`` (times a task whose worker died is retried, default 3) and
  ``resources`` (Ray custom resources, ``{name: amount}``).

Every problem is a ``ConfigError`` naming the field (``runs.kd_gram.resources.gpus``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from supkd.config import merge
from supkd.errors import ConfigError

_KEYS = ("cpus", "gpus", "nodes", "tasks_per_node", "mem_gb", "time_min", "slurm", "ray")
SLURM_KEYS = ("partition", "account", "qos", "constraint", "exclude", "setup", "sbatch")
RAY_KEYS = ("max_retries", "resources")


@dataclass(frozen=True)
class Resources:
    """One run's resources (see the module docstring); ``None``: the launcher's default."""

    cpus: int | None = None
    gpus: float = 0.0
    nodes: int = 1
    tasks_per_node: int | None = None
    mem_gb: float | None = None
    time_min: int | None = None
    slurm: dict[str, Any] = field(default_factory=dict)
    ray: dict[str, Any] = field(default_factory=dict)

    @property
    def ranks_per_node(self) -> int:
        if self.tasks_per_node is not None:
            return self.tasks_per_node
        return int(self.gpus) if self.gpus >= 1 else 1

    @property
    def ranks(self) -> int:
        """Processes of the run's DDP job (1: not distributed)."""
        return self.nodes * self.ranks_per_node

    def threads(self, default: int) -> int:
        """Each rank's torch thread count: ``cpus``, else the launcher's ``default``."""
        return self.cpus if self.cpus is not None else max(1, default)


def _int(value: Any, where: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"grid field '{where}': expected a whole number >= {low}, "
                          f"got {value!r}")
    return value


def _number(value: Any, where: str, positive: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(f"grid field '{where}': expected a number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"grid field '{where}': expected a number "
                          f"{'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def _section(value: Any, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"grid field '{where}': expected a mapping, got {value!r}")
    bad = sorted(set(value) - set(allowed))
    if bad:
        raise ConfigError(f"grid field '{where}': unknown key '{bad[0]}' "
                          f"(expected {', '.join(allowed)})")
    return dict(value)


def _slurm(raw: Any, where: str) -> dict[str, Any]:
    sec = _section(raw, SLURM_KEYS, where)
    for key in ("partition", "account", "qos", "constraint", "exclude"):
        if key in sec and not (isinstance(sec[key], str) and sec[key]):
            raise ConfigError(f"grid field '{where}.{key}': expected a non-empty string, "
                              f"got {sec[key]!r}")
    if "setup" in sec and not (isinstance(sec["setup"], list)
                               and all(isinstance(s, str) for s in sec["setup"])):
        raise ConfigError(f"grid field '{where}.setup': expected a list of shell lines, "
                          f"got {sec['setup']!r}")
    if "sbatch" in sec:
        flags = sec["sbatch"]
        if not isinstance(flags, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str | int | float | bool)
                for k, v in flags.items()):
            raise ConfigError(f"grid field '{where}.sbatch': expected a mapping of sbatch "
                              f"flags to values, e.g. {{exclusive: true}}, got {flags!r}")
        sec["sbatch"] = {k.lstrip("-"): v for k, v in flags.items()}
    return sec


def _ray(raw: Any, where: str) -> dict[str, Any]:
    sec = _section(raw, RAY_KEYS, where)
    if "max_retries" in sec:
        _int(sec["max_retries"], f"{where}.max_retries", 0)
    if "resources" in sec:
        res = _section(sec["resources"], tuple(sec["resources"] or ()), f"{where}.resources")
        for k, v in res.items():
            _number(v, f"{where}.resources.{k}", positive=True)
        sec["resources"] = res
    return sec


def parse_resources(raw: Any, where: str) -> Resources:
    """Validate one run's merged ``resources`` mapping (``where`` names it in errors)."""
    sec = _section(raw, _KEYS, where)
    cpus = _int(sec["cpus"], f"{where}.cpus", 1) if sec.get("cpus") is not None else None
    gpus = _number(sec.get("gpus", 0), f"{where}.gpus", positive=False)
    if gpus > 1 and gpus != int(gpus):
        raise ConfigError(f"grid field '{where}.gpus': expected a share of one GPU (< 1) or "
                          f"a whole number of GPUs, got {gpus:g}")
    nodes = _int(sec.get("nodes", 1), f"{where}.nodes", 1)
    tasks = sec.get("tasks_per_node")
    if tasks is not None:
        tasks = _int(tasks, f"{where}.tasks_per_node", 1)
        if gpus >= 1 and tasks != int(gpus):
            raise ConfigError(f"grid field '{where}.tasks_per_node': a DDP run has one rank "
                              f"per GPU ({int(gpus)}), got {tasks}")
        if 0 < gpus < 1 and tasks > 1:
            raise ConfigError(f"grid field '{where}.tasks_per_node': a run on a share of one "
                              f"GPU (gpus {gpus:g}) has one rank, got {tasks}")
    mem = sec.get("mem_gb")
    mem = _number(mem, f"{where}.mem_gb", positive=True) if mem is not None else None
    time_min = sec.get("time_min")
    time_min = _int(time_min, f"{where}.time_min", 1) if time_min is not None else None
    return Resources(cpus, gpus, nodes, tasks, mem, time_min,
                     _slurm(sec.get("slurm"), f"{where}.slurm"),
                     _ray(sec.get("ray"), f"{where}.ray"))


def merge_resources(*layers: Any) -> dict[str, Any]:
    """The spec's layers of ``resources`` (top level, entry, matrix value) merged key by key
    (the ``slurm`` and ``ray`` sections too); ``None`` layers are skipped."""
    out: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            out = merge(out, layer)
    return out

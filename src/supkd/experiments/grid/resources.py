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
- ``<launcher>``: a section of the launcher's own (``slurm``, ``ray``, or a plugin's), which
  that launcher validates (:func:`register_section`); see each launcher's module.

Every problem is a ``ConfigError`` naming the field (``runs.kd_gram.resources.gpus``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from supkd.config import merge
from supkd.errors import ConfigError

_KEYS = ("cpus", "gpus", "nodes", "tasks_per_node", "mem_gb", "time_min")

#: ``resources.<name>`` validator of each launcher: ``(raw, where) -> section`` (a
#: ``ConfigError`` naming ``where`` on a bad value); filled by ``register_launcher``.
SectionParser = Callable[[Any, str], dict[str, Any]]
SECTIONS: dict[str, SectionParser] = {}


def register_section(name: str, parser: SectionParser) -> None:
    """Make ``resources.<name>`` a known section, validated by ``parser``."""
    if name in _KEYS:
        raise ValueError(f"resources.{name} is a core field, not a launcher section")
    SECTIONS[name] = parser


@dataclass(frozen=True)
class Resources:
    """One run's resources (see the module docstring); ``None``: the launcher's default."""

    cpus: int | None = None
    gpus: float = 0.0
    nodes: int = 1
    tasks_per_node: int | None = None
    mem_gb: float | None = None
    time_min: int | None = None
    #: launcher name -> its validated ``resources.<name>`` section
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def section(self, launcher: str) -> dict[str, Any]:
        """The run's ``resources.<launcher>`` section ({} when the spec has none)."""
        return self.sections.get(launcher, {})

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


def whole(value: Any, where: str, low: int) -> int:
    """``value`` as a whole number >= ``low`` (``ConfigError`` naming ``where``)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"grid field '{where}': expected a whole number >= {low}, "
                          f"got {value!r}")
    return value


def number(value: Any, where: str, positive: bool) -> float:
    """``value`` as a finite number >= 0 (> 0 when ``positive``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"grid field '{where}': expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"grid field '{where}': expected a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"grid field '{where}': expected a number "
                          f"{'> 0' if positive else '>= 0'}, got {value!r}")
    return float(value)


def section(value: Any, allowed: tuple[str, ...] | None, where: str) -> dict[str, Any]:
    """``value`` as a mapping whose keys are among ``allowed`` (None: any string key)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"grid field '{where}': expected a mapping, got {value!r}")
    if allowed is None:
        bad = sorted(str(k) for k in value if not isinstance(k, str))
        if bad:
            raise ConfigError(f"grid field '{where}': expected names as keys, got {bad[0]!r}")
        return dict(value)
    bad = sorted(str(k) for k in set(value) - set(allowed))
    if bad:
        raise ConfigError(f"grid field '{where}': unknown key '{bad[0]}' "
                          f"(expected {', '.join(allowed)})")
    return dict(value)


def _gpus(sec: dict[str, Any], where: str) -> float:
    gpus = number(sec.get("gpus", 0), f"{where}.gpus", positive=False)
    if gpus > 1 and gpus != int(gpus):
        raise ConfigError(f"grid field '{where}.gpus': expected a share of one GPU (< 1) or "
                          f"a whole number of GPUs, got {gpus:g}")
    return gpus


def _tasks(sec: dict[str, Any], gpus: float, where: str) -> int | None:
    tasks = sec.get("tasks_per_node")
    if tasks is None:
        return None
    tasks = whole(tasks, f"{where}.tasks_per_node", 1)
    if gpus >= 1 and tasks != int(gpus):
        raise ConfigError(f"grid field '{where}.tasks_per_node': a DDP run has one rank "
                          f"per GPU ({int(gpus)}), got {tasks}")
    if 0 < gpus < 1 and tasks > 1:
        raise ConfigError(f"grid field '{where}.tasks_per_node': a run on a share of one "
                          f"GPU (gpus {gpus:g}) has one rank, got {tasks}")
    return tasks


def parse_resources(raw: Any, where: str) -> Resources:
    """Validate one run's merged ``resources`` mapping (``where`` names it in errors): every
    field's type, finiteness and range, and each launcher section through its launcher."""
    sec = section(raw, (*_KEYS, *sorted(SECTIONS)), where)
    cpus = whole(sec["cpus"], f"{where}.cpus", 1) if sec.get("cpus") is not None else None
    gpus = _gpus(sec, where)
    nodes = whole(sec.get("nodes", 1), f"{where}.nodes", 1)
    tasks = _tasks(sec, gpus, where)
    mem = sec.get("mem_gb")
    mem = number(mem, f"{where}.mem_gb", positive=True) if mem is not None else None
    time_min = sec.get("time_min")
    time_min = whole(time_min, f"{where}.time_min", 1) if time_min is not None else None
    sections = {name: SECTIONS[name](sec[name], f"{where}.{name}")
                for name in sorted(SECTIONS) if sec.get(name) is not None}
    return Resources(cpus, gpus, nodes, tasks, mem, time_min, sections)


def merge_resources(*layers: Any) -> dict[str, Any]:
    """The spec's layers of ``resources`` (top level, entry, matrix value) merged key by key
    (the ``slurm`` and ``ray`` sections too); ``None`` layers are skipped."""
    out: dict[str, Any] = {}
    for layer in layers:
        if layer is not None:
            out = merge(out, layer)
    return out

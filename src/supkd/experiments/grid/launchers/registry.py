"""The launcher registry: ``@register_launcher(name)`` on a factory ``(LauncherOptions,
plan) -> Executor``, and what every launcher is told (:class:`LauncherOptions`)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from supkd.errors import UserError
from supkd.experiments.grid.executor import Executor
from supkd.experiments.grid.plan import PlannedRun
from supkd.utils.registry import Registry

#: When the driver is interrupted (Ctrl-C, SIGTERM): ``cancel`` its cluster jobs (each saves
#: a checkpoint and stops) or ``leave`` them running for the next ``supkd grid`` to attach to.
ON_INTERRUPT = ("leave", "cancel")


@dataclass
class LauncherOptions:
    """What ``supkd grid`` tells a launcher (beyond each run's ``resources``)."""

    runs_dir: Path
    grid: str = "grid"  # the grid's name (job names)
    jobs: int | None = None  # at most this many at once (None: local 1, clusters no limit)
    stream: TextIO | None = field(default=sys.stdout, repr=False)
    ray_address: str | None = None
    on_interrupt: str = "leave"
    slurm: dict[str, Any] = field(default_factory=dict)  # CLI overrides of resources.slurm


LauncherFactory = Callable[[LauncherOptions, Sequence[PlannedRun]], Executor]

LAUNCHERS: Registry[LauncherFactory] = Registry("launcher")


def register_launcher(name: str) -> Callable[[LauncherFactory], LauncherFactory]:
    """``@register_launcher("name")`` on a factory ``(options, plan) -> Executor``."""
    return LAUNCHERS.register(name)


def resource_error(launcher: str, run: PlannedRun, key: str, problem: str) -> UserError:
    """The one-line error for a run whose ``resources`` a launcher cannot give."""
    return UserError(f"grid field 'runs.{run.cell}.resources.{key}': {problem} "
                     f"(launcher {launcher}, run {run.name})")

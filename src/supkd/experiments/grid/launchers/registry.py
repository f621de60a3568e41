"""The launcher registry: ``@register_launcher(name, section=..., live=...)`` on a factory
``(LauncherOptions, plan) -> Executor``, and what every launcher is told
(:class:`LauncherOptions`).

A launcher is one module (a user's can come through ``supkd --plugin FILE``) that
registers three things under its name:

- its factory, which checks the plan against what it can give and returns the executor;
- ``section``: the validator of its own ``resources.<name>`` section (none: the launcher
  takes no section, and the spec may not have one);
- ``live``: what the executor class answers for ``--status`` (``Executor.live``): which
  of the given ``launcher.json`` entries still have a job queued or running.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from supkd.errors import UserError
from supkd.experiments.grid.executor import Executor
from supkd.experiments.grid.plan import PlannedRun
from supkd.experiments.grid.resources import SectionParser, register_section
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
    #: command-line overrides of a launcher's ``resources.<name>`` section, by launcher
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def slurm(self) -> dict[str, Any]:
        """The command line's ``resources.slurm`` overrides (``--partition``, ``--pack``...)."""
        return self.overrides.get("slurm", {})


LauncherFactory = Callable[[LauncherOptions, Sequence[PlannedRun]], Executor]
#: ``launcher.json`` entries (by any key) -> (``running``/``queued``, description)
LiveFn = Callable[[Mapping[Any, dict[str, Any]]], dict[Any, tuple[str, str]]]


def nothing_live(entries: Mapping[Any, dict[str, Any]]) -> dict[Any, tuple[str, str]]:
    """``live`` of a launcher whose jobs end with the driver that started them."""
    return {}


@dataclass(frozen=True)
class Launcher:
    """One registered launcher."""

    name: str
    build: LauncherFactory
    live: LiveFn = nothing_live


LAUNCHERS: Registry[Launcher] = Registry("launcher")


def register_launcher(name: str, *, section: SectionParser | None = None,
                      live: LiveFn | None = None
                      ) -> Callable[[LauncherFactory], LauncherFactory]:
    """``@register_launcher("name", section=parse, live=Executor.live)`` on a factory
    ``(options, plan) -> Executor``: ``section`` validates ``resources.<name>`` when the
    spec is read; ``live`` answers ``--status`` for the entries this launcher recorded."""
    def deco(factory: LauncherFactory) -> LauncherFactory:
        LAUNCHERS.add(name, Launcher(name, factory, live or nothing_live))
        if section is not None:
            register_section(name, section)
        return factory
    return deco


def resource_error(launcher: str, run: PlannedRun, key: str, problem: str) -> UserError:
    """The one-line error for a run whose ``resources`` a launcher cannot give."""
    return UserError(f"grid field 'runs.{run.cell}.resources.{key}': {problem} "
                     f"(launcher {launcher}, run {run.name})")

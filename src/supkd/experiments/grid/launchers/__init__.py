"""Launchers: where a grid's jobs run, chosen by name with ``supkd grid --launcher NAME``.

- ``local`` (the default): this machine, ``--jobs N`` runs at once in a process pool (or
  this process for N = 1); :mod:`supkd.experiments.grid.local`.
- ``slurm``: one Slurm job per run through submitit; :mod:`.slurm`.
- ``ray``: one Ray core task per run; :mod:`.ray`.

Each is a factory ``(LauncherOptions, plan) -> Executor`` registered with
``@register_launcher(name)`` (a user's module can add its own, loaded with ``supkd --plugin``);
the factory checks that its package and cluster are there and that every planned run's
``resources`` fit it, before anything is submitted, and raises a one-line ``UserError``
otherwise. The :class:`~supkd.experiments.grid.executor.Executor` it returns is the only
thing the scheduler sees.
"""

from __future__ import annotations

from collections.abc import Sequence

from supkd.errors import UserError
from supkd.experiments.grid.executor import Executor

# Each module registers its factory on import (the cluster packages themselves are imported
# only when their launcher is built).
from supkd.experiments.grid.launchers import local, ray, slurm  # noqa: F401
from supkd.experiments.grid.launchers.registry import (
    LAUNCHERS,
    ON_INTERRUPT,
    LauncherOptions,
    register_launcher,
)
from supkd.experiments.grid.plan import PlannedRun

__all__ = ["LAUNCHERS", "ON_INTERRUPT", "LauncherOptions", "build_launcher",
           "register_launcher"]


def build_launcher(name: str, options: LauncherOptions,
                   plan: Sequence[PlannedRun]) -> Executor:
    """The executor of launcher ``name`` for ``plan`` (``UserError`` for an unknown name, a
    missing package or cluster, or resources the launcher cannot give)."""
    try:
        factory = LAUNCHERS.get(name)
    except ValueError as exc:
        raise UserError(f"--launcher: {exc}") from None
    if options.on_interrupt not in ON_INTERRUPT:
        raise UserError(f"--on-interrupt: expected one of {', '.join(ON_INTERRUPT)}, "
                        f"got {options.on_interrupt!r}")
    return factory(options, plan)

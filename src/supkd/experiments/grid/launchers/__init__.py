"""Launchers: where a grid's jobs run, chosen by name with ``supkd grid --launcher NAME``.

- ``local`` (the default): this machine, ``--jobs N`` runs at once in a process pool (or
  this process for N = 1); :mod:`supkd.experiments.grid.local`.
- ``slurm``: one Slurm job per run through submitit; :mod:`.slurm`.
- ``ray``: one Ray core task per run; :mod:`.ray`.

Each is a factory ``(LauncherOptions, plan) -> Executor`` registered with
``@register_launcher(name, section=..., live=...)`` (:mod:`.registry`; a user's module can
add its own, loaded with ``supkd --plugin FILE``: one file, nothing else to edit);
the factory checks that its package and cluster are there and that every planned run's
``resources`` fit it, before anything is submitted, and raises a one-line ``UserError``
otherwise. The :class:`~supkd.experiments.grid.executor.Executor` it returns is the only
thing the scheduler sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from supkd.errors import UserError
from supkd.experiments.grid.executor import Executor

# Each module registers its factory on import (the cluster packages themselves are imported
# only when their launcher is built).
from supkd.experiments.grid.launchers import local, ray, slurm  # noqa: F401
from supkd.experiments.grid.launchers.registry import (
    LAUNCHERS,
    ON_INTERRUPT,
    Launcher,
    LauncherOptions,
    register_launcher,
)
from supkd.experiments.grid.plan import PlannedRun

__all__ = ["LAUNCHERS", "ON_INTERRUPT", "Launcher", "LauncherOptions", "build_launcher",
           "live_jobs", "register_launcher"]


def build_launcher(name: str, options: LauncherOptions,
                   plan: Sequence[PlannedRun]) -> Executor:
    """The executor of launcher ``name`` for ``plan`` (``UserError`` for an unknown name, a
    missing package or cluster, or resources the launcher cannot give)."""
    try:
        factory = LAUNCHERS.get(name).build
    except ValueError as exc:
        raise UserError(f"--launcher: {exc}") from None
    if options.on_interrupt not in ON_INTERRUPT:
        raise UserError(f"--on-interrupt: expected one of {', '.join(ON_INTERRUPT)}, "
                        f"got {options.on_interrupt!r}")
    return factory(options, plan)


def live_jobs(entries: Mapping[Any, dict[str, Any]]) -> dict[Any, tuple[str, str]]:
    """For ``--status``: key -> (``running``/``queued``, description) for each
    ``launcher.json`` entry whose job is still queued or running, each asked of the
    launcher that recorded it (an entry of a launcher not loaded now is not looked at)."""
    by_launcher: dict[str, dict[Any, dict[str, Any]]] = {}
    for key, entry in entries.items():
        by_launcher.setdefault(str(entry.get("launcher")), {})[key] = entry
    out: dict[Any, tuple[str, str]] = {}
    for name, mine in by_launcher.items():
        if name in LAUNCHERS:
            out.update(LAUNCHERS[name].live(mine))
    return out

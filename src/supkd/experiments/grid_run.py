"""One run of a grid, resolved: what ``supkd train GRID.yaml --run NAME`` trains.

A grid spec states each recipe once; a run's config is its resolution (the spec's ``base``,
the entry's ``config``, the ``final``/``tune`` layer, the substitutions), exactly as
``supkd grid`` plans it (:func:`supkd.experiments.grid.plan_grid`). The run's folder sits
among the grid's other runs (``${run:NAME}`` points at a sibling folder), and its config
gets the ``spec_hash`` the grid gives it, so that a later ``supkd grid`` over the same folder
counts the run as done instead of redoing it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from supkd.config import apply_overrides
from supkd.errors import ConfigError
from supkd.experiments.grid import GridSpec, PlannedRun, plan_grid, spec_hash
from supkd.experiments.grid.plan import _refs, _substitute
from supkd.experiments.protocols import choose_alpha
from supkd.experiments.store import load_run
from supkd.train.run_dir import FINAL_STATUSES
from supkd.utils.registry import did_you_mean
from supkd.vocab import RunKind, RunStatus


def _trains(run: PlannedRun) -> bool:
    """A training run (a test-set or tuning run), not an analysis such as CKA."""
    return run.kind is RunKind.TRAIN


def _find(plan: dict[str, PlannedRun], name: str, source: str) -> PlannedRun:
    """The planned run ``name``; ConfigError (exit 2) naming the closest run when the grid
    has none of that name, or when it is a CKA analysis."""
    run = plan.get(name)
    if run is None:
        names = [n for n, r in plan.items() if _trains(r)]
        raise ConfigError(f"--run {name!r}: grid {source} has no run of that name"
                          f"{did_you_mean(name, names)}; `supkd grid {source} --dry-run` "
                          "lists them")
    if not _trains(run):
        raise ConfigError(f"--run {name!r}: is a CKA analysis, not a training run; run it "
                          f"with: supkd grid {source} --only {name}")
    return run


def _tuned_alpha(run: PlannedRun, plan: dict[str, PlannedRun], runs_dir: Path,
                 source: str) -> float:
    """α of a test-set run from its tuning runs' folders, by the grid's own rule
    (:func:`supkd.experiments.protocols.choose_alpha`)."""
    scores: dict[float, list[float | None]] = {}
    missing = []
    for dep in run.soft_deps:
        rec = load_run(runs_dir / dep)
        if rec is None or rec.status not in FINAL_STATUSES:
            missing.append(dep)
            continue
        alpha = plan[dep].alpha
        assert alpha is not None, dep  # a tuning run's α is in the plan
        ok = rec.status == RunStatus.COMPLETED
        scores.setdefault(alpha, []).append(rec.val_acc if ok else None)
    if missing:
        raise ConfigError(
            f"--run {run.name!r}: takes α from its tuning runs, and {missing[0]} has not "
            f"ended in {runs_dir} ({len(missing)} of {len(run.soft_deps)}); train them first "
            f"(supkd train {source} --run {missing[0]}) or set the weight: task.alpha=VALUE")
    return choose_alpha(scores)[0]


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def resolve_run(spec: GridSpec, name: str, runs_dir: str | Path, source: str,
                overrides: list[str] | None = None) -> dict[str, Any]:
    """The config ``supkd grid`` would train run ``name`` of ``spec`` with, its siblings in
    ``runs_dir``: α chosen (from its tuning runs' folders, unless an override sets
    ``task.alpha``), ``meta.spec_hash`` set; ``overrides`` (dotted ``key=value``) applied
    first. ConfigError for an unknown name, or when a run it needs has not completed."""
    runs_dir = Path(runs_dir).resolve()
    plan = {r.name: r for r in plan_grid(spec, runs_dir)}
    run = _find(plan, name, source)
    cfg = apply_overrides(copy.deepcopy(run.config), overrides or [])
    strings = list(_strings(cfg))
    for dep in run.deps:
        if not any(str(runs_dir / dep) in v for v in strings):
            continue  # an override points elsewhere (task.teacher=runs/my_teacher)
        rec = load_run(runs_dir / dep)
        if rec is None or rec.status not in (RunStatus.COMPLETED, RunStatus.IMPORTED):
            raise ConfigError(f"--run {name!r}: needs run {dep}, which has not completed "
                              f"in {runs_dir}; train it first: supkd train {source} --run {dep}")
    if "alpha" in _refs(cfg):
        if not run.soft_deps:
            raise ConfigError(f"grid entry '{run.cell}': uses ${{alpha}} but has no alphas")
        alpha = _tuned_alpha(run, plan, runs_dir, source)
        cfg = _substitute(cfg, {"alpha": alpha}, set(), f"runs.{run.cell}.config")
        cfg["meta"]["alpha"] = alpha
    elif run.soft_deps and isinstance(cfg.get("task"), dict) and "alpha" in cfg["task"]:
        cfg["meta"]["alpha"] = cfg["task"]["alpha"]  # set on the command line
    cfg["meta"]["spec_hash"] = spec_hash(cfg)
    return cfg


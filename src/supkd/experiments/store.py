"""Read run directories, and nothing else (DESIGN.md §1: a report can be rebuilt from run
directories alone).

A run directory (docs/architecture.md) holds ``config.yaml`` (the resolved config, with the
``meta`` dict the grid wrote), ``result.json`` once the run has ended (``status`` completed,
diverged or failed, accuracies in %), ``metrics.jsonl`` and checkpoints. This module is
tolerant: a folder with a config but no result is an unfinished run, an unreadable or
truncated file makes the run ``corrupt`` instead of stopping the report, and folders that
are not runs are ignored.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from supkd.errors import DataError
from supkd.train.run_dir import FINAL_STATUSES, RunDir

# Final states (supkd.train.run_dir.FINAL_STATUSES), plus the states this module infers.
UNFINISHED = "unfinished"  # config.yaml (or a checkpoint) but no result.json yet
CORRUPT = "corrupt"  # result.json or config.yaml present but unreadable


@dataclass
class RunRecord:
    """What one run directory says about its run."""

    path: Path
    name: str
    status: str
    meta: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None

    @property
    def test_acc(self) -> float | None:
        return _finite(self.result.get("test_acc"))

    @functools.cached_property
    def best_test_acc(self) -> float | None:
        """The best epoch's test accuracy: the highest per-epoch ``test_acc`` the engine
        wrote to ``metrics.jsonl`` (epochs it did not evaluate have none), else None. What
        mdistiller reports; :attr:`test_acc` (the last epoch) is what RepDistiller does."""
        try:
            records = self.run_dir.read_metrics()
        except (OSError, ValueError):  # unreadable: the run's other numbers still count
            return None
        accs = [a for rec in records if isinstance(rec, dict)
                and (a := _finite(rec.get("test_acc"))) is not None]
        return max(accs) if accs else None

    @property
    def val_acc(self) -> float | None:
        return _finite(self.result.get("val_acc"))

    @property
    def diverged_step(self) -> int | None:
        step = self.result.get("diverged_step")
        return int(step) if isinstance(step, int | float) and math.isfinite(step) else None

    @property
    def run_dir(self) -> RunDir:
        return RunDir(self.path)

    @property
    def has_checkpoint(self) -> bool:
        return self.run_dir.has_checkpoint()


def _finite(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(x) else None


def is_run_dir(path: Path) -> bool:
    """A folder is a run directory when it has a config.yaml or a result.json."""
    return RunDir(path).is_run()


def load_run(path: str | os.PathLike[str]) -> RunRecord | None:
    """Read one run directory (a path or a :class:`RunDir`); None when ``path`` is not a run
    directory.

    ``meta`` comes from ``config.yaml`` (what the grid asked for), completed by the copy in
    ``result.json`` when the config is missing or unreadable.
    """
    rd = RunDir(path)
    if not rd.path.is_dir() or not rd.is_run():
        return None
    path = rd.path
    config, cfg_problem = rd.read_config()
    result, res_problem = rd.read_result()
    meta: dict[str, Any] = {}
    if result and isinstance(result.get("meta"), dict):
        meta.update(result["meta"])
    if config and isinstance(config.get("meta"), dict):
        meta.update(config["meta"])
    name = str((config or {}).get("name") or (result or {}).get("name") or path.name)
    problem = res_problem or cfg_problem
    if res_problem or (cfg_problem and result is None):
        status = CORRUPT
    elif result is None:
        status = UNFINISHED
    else:
        status = str(result.get("status", ""))
        # A completed run may have no accuracy at all (a SupCon encoder run trains no
        # classifier): it is still complete, it just fills no table cell.
        if status not in FINAL_STATUSES:
            problem = f"result.json: unknown status {status!r}"
            status = CORRUPT
    return RunRecord(path, name, status, meta, config or {}, result or {}, problem)


def iter_run_dirs(root: Path) -> Iterator[Path]:
    """Run directories under ``root`` (itself included), in sorted order; a run directory's
    own sub-folders (checkpoints, ...) are not searched."""
    if is_run_dir(root):
        yield root
        return
    try:
        children = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return
    for child in children:
        yield from iter_run_dirs(child)


def scan_runs(root: str | Path) -> list[RunRecord]:
    """Every run under ``root`` (sorted by path). Raises ``DataError`` when ``root`` is not a
    folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"runs folder {root}: not found (expected a folder of run directories)")
    out = []
    for d in iter_run_dirs(root):
        rec = load_run(d)
        if rec is not None:
            out.append(rec)
    return out

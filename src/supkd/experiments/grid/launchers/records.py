"""``RUN/launcher.json``: which cluster job runs (or ran) each job of a run directory.

The driver writes one entry per grid job when it submits it (keyed by the planned run's
name: a run directory holds its training run and, for a KD student, its CKA analysis), so
that a later ``supkd grid`` or ``supkd grid --status`` can ask the cluster about that job
instead of submitting it again. Only the driver writes this file; the job itself writes
its results through the engine. An entry::

    {"launcher": "slurm", "job_id": "1234", "folder": ".../.slurm", "submitted_at": ...}
    {"launcher": "ray", "ray_job": "01000000", "address": "10.0.0.1:6379", ...}
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from supkd.train.run_dir import RunDir
from supkd.utils.atomic import atomic_write_json


def read_launches(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every entry of ``run_dir``'s launcher.json (empty when there is none or it is
    unreadable: then the jobs are looked for as not submitted, and resume from their
    checkpoints)."""
    rd = RunDir(run_dir)
    try:
        data = json.loads(rd.launcher_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) \
        else {}


def read_launch(run_dir: str | Path, name: str) -> dict[str, Any] | None:
    """The entry of the job ``name`` in ``run_dir``'s launcher.json, or None."""
    return read_launches(run_dir).get(name)


def write_launch(run_dir: str | Path, name: str, entry: dict[str, Any]) -> None:
    """Record (atomically) that job ``name`` of ``run_dir`` was submitted as ``entry``."""
    rd = RunDir(run_dir)
    rd.path.mkdir(parents=True, exist_ok=True)
    data = read_launches(rd.path)
    data[name] = {**entry, "submitted_at": round(time.time(), 3)}
    atomic_write_json(rd.launcher_path, data)

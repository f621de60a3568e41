"""The files through which the driver feeds packed Slurm workers (``resources.slurm.pack``):
``RUNS/.slurm/pack/``, on the cluster's shared filesystem, written atomically.

- ``queue/<shape>/<task>.pkl``: a run handed out and not taken yet (the pickled grid job,
  and the tasks or Slurm jobs it waits for under ``--detach``). ``<shape>`` names one
  worker request (CPUs, GPUs, memory, pack, concurrent...); ``<task>`` starts with the time
  it was queued, so that workers take runs in the order the driver released them (the
  grid's dependency order).
- ``claimed/<job id>/<task>.pkl``: taken by that worker job, by renaming it out of the
  queue (one rename: exactly one worker gets each run). A worker that is requeued takes
  its own claims first; a claim of a job that ended is handed back by the driver.
- ``done/<task>.json``: how the run ended, ``{"job": NAME, "result": {...}}``.
- ``workers/<job id>.json``: how many runs the worker took (the driver counts the room left
  in live workers before it submits more); ``shapes/<shape>.json``: the worker request.
- ``closed``: the driver has nothing more to hand out now (workers with nothing left exit
  at once, instead of waiting a few seconds for runs to come).
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supkd.utils.atomic import atomic_write_json

#: a worker with nothing to run waits this long for the driver to hand out more
IDLE_S = 15.0


@dataclass(frozen=True)
class PackDirs:
    root: Path

    @classmethod
    def of(cls, slurm_folder: str | Path) -> PackDirs:
        return cls(Path(slurm_folder) / "pack")

    def queue(self, shape: str) -> Path:
        return self.root / "queue" / shape

    def claimed(self, job_id: str) -> Path:
        return self.root / "claimed" / job_id

    def done(self, task: str) -> Path:
        return self.root / "done" / f"{task}.json"

    def worker(self, job_id: str) -> Path:
        return self.root / "workers" / f"{job_id}.json"

    @property
    def closed(self) -> Path:
        return self.root / "closed"

    def make(self) -> None:
        for sub in ("queue", "claimed", "done", "workers", "shapes"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def holder(self, task: str) -> str | None:
        """The worker job id holding ``task`` (claimed), else None."""
        for path in (self.root / "claimed").glob(f"*/{task}.pkl"):
            return path.parent.name
        return None

    def queued(self, task: str) -> Path | None:
        for path in (self.root / "queue").glob(f"*/{task}.pkl"):
            return path
        return None

    def read_done(self, task: str) -> dict[str, Any] | None:
        try:
            data = json.loads(self.done(task).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def taken(self, job_id: str) -> int:
        try:
            return int(json.loads(self.worker(job_id).read_text(encoding="utf-8"))["taken"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0


def task_id(name: str) -> str:
    """A queue file name for run ``name``: the time (the order of release), then the name."""
    return f"{time.time_ns():020d}-{name.replace('/', '~')}"


def write_task(path: Path, payload: dict[str, Any]) -> None:
    """``payload`` pickled into ``path`` atomically (a worker never reads half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(payload))
    os.replace(tmp, path)


def read_task(path: Path) -> dict[str, Any] | None:
    with contextlib.suppress(OSError, pickle.UnpicklingError, EOFError, AttributeError,
                             ImportError):
        return pickle.loads(path.read_bytes())
    return None


def write_done(dirs: PackDirs, task: str, name: str, result: dict[str, Any]) -> None:
    atomic_write_json(dirs.done(task), {"job": name, "result": result})

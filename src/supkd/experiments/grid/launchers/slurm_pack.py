"""The driver's side of packed Slurm jobs (``resources.slurm.pack``): :class:`PackDriver`
puts each released run in the pack queue (:mod:`.slurm_pack_files`), keeps enough worker
jobs (:class:`~.slurm_pack_worker.PackWorker`) queued or running to take them (as job
arrays with ``array_parallelism``), and reads back how each run ended.

Runs of one worker request (the same CPUs, GPUs, memory, time, partition... and the same
``pack``/``concurrent``) share a queue: its ``shape``. The driver counts the room left in
the live workers of a shape (``pack`` less what each took) and submits new workers only for
the runs that room cannot take. A run whose worker job ended (cancelled, timed out and not
requeued, its node lost) without finishing it is handed back once to the scheduler, which
hands it out again; it resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supkd.experiments.grid.executor import Job, Outcome
from supkd.experiments.grid.launchers.records import write_launch
from supkd.experiments.grid.launchers.slurm_pack_files import (
    PackDirs,
    task_id,
    write_task,
)
from supkd.experiments.grid.launchers.slurm_pack_worker import PackWorker
from supkd.experiments.grid.launchers.slurm_queue import JobState
from supkd.experiments.grid.launchers.slurm_resources import packing
from supkd.utils.atomic import atomic_write_json
from supkd.vocab import RunStatus


@dataclass
class _Task:
    name: str
    task: str
    shape: str
    run_dir: Path
    holder: str | None = None


#: submit(params, shape, pack, concurrent, count) -> the new workers' job ids
SubmitWorkers = Callable[[dict[str, Any], str, int, int, int], list[str]]


def worker_parameters(params: dict[str, Any], pack: int, concurrent: int,
                      gpus: float) -> dict[str, Any]:
    """A worker's sbatch request from one of its runs' (``params``): ``concurrent`` times
    its CPUs, memory and GPUs (rounded up), its time limit times the rounds it runs."""
    out = {k: v for k, v in params.items() if k not in ("name", "slurm_dependency")}
    out["cpus_per_task"] = params.get("cpus_per_task", 1) * concurrent
    if params.get("mem_gb") is not None:
        out["mem_gb"] = params["mem_gb"] * concurrent
    if gpus > 0:
        out["gpus_per_node"] = math.ceil(gpus * concurrent - 1e-9) if gpus < 1 else int(gpus)
    out["timeout_min"] = params["timeout_min"] * math.ceil(pack / concurrent)
    return out


def shape_of(params: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[
        :12]


class PackDriver:
    """Packed runs of one :class:`~.slurm.SlurmExecutor`."""

    def __init__(self, folder: Path, submit_workers: SubmitWorkers) -> None:
        self.dirs = PackDirs.of(folder)
        self.dirs.make()
        self.dirs.closed.unlink(missing_ok=True)
        self.folder = folder
        self._submit_workers = submit_workers
        self.tasks: dict[str, _Task] = {}
        self.workers: dict[str, str] = {}  # job id -> shape
        self.shapes: dict[str, tuple[dict[str, Any], int, int]] = {}

    # --- handing out ----------------------------------------------------------------------

    def submit(self, job: Job, params: dict[str, Any], cli: Mapping[str, Any],
               after: list[tuple[str, str]]) -> None:
        pack, concurrent, _ = packing(job.resources, cli)
        wparams = worker_parameters(params, pack, concurrent, job.resources.gpus)
        array = packing(job.resources, cli)[2]
        if array:
            wparams["slurm_array_parallelism"] = int(array)
        shape = shape_of({**wparams, "pack": pack, "concurrent": concurrent})
        self.shapes[shape] = (wparams, pack, concurrent)
        atomic_write_json(self.dirs.root / "shapes" / f"{shape}.json",
                          {"params": wparams, "pack": pack, "concurrent": concurrent})
        task = task_id(job.name)
        self.dirs.queue(shape).mkdir(parents=True, exist_ok=True)
        write_task(self.dirs.queue(shape) / f"{task}.pkl", {"job": job, "after": after})
        write_launch(job.run_dir, job.name, {"launcher": "slurm", "packed": task,
                                             "shape": shape, "folder": str(self.folder)})
        self.tasks[job.name] = _Task(job.name, task, shape, Path(job.run_dir))

    def after_of(self, name: str) -> tuple[str, str] | None:
        t = self.tasks.get(name)
        return ("task", t.task) if t is not None else None

    def follow(self, name: str, entry: dict[str, Any], run_dir: Path,
               states: Callable[[list[str]], dict[str, JobState] | None]) -> str | None:
        """Re-attach (a later ``supkd grid``): follow run ``name``'s packed task when it is
        done, held by a live worker or still queued (this driver keeps workers for it);
        None when its worker ended without it (the claim is dropped: it is handed out
        again) or it is gone."""
        task, shape = str(entry.get("packed")), str(entry.get("shape"))
        t = _Task(name, task, shape, run_dir)
        if self.dirs.read_done(task) is not None:
            self.tasks[name] = t
            return "finished in a packed Slurm job"
        holder = self.dirs.holder(task)
        if holder is not None:
            st = (states([holder]) or {}).get(holder)
            if st is not None and st.active:
                t.holder = holder
                self.tasks[name] = t
                self.workers[holder] = shape
                return f"packed in {st.describe()}"
            (self.dirs.claimed(holder) / f"{task}.pkl").unlink(missing_ok=True)
            return None
        if self.dirs.queued(task) is not None and self._load_shape(shape):
            self.tasks[name] = t
            return "queued for a packed Slurm worker"
        return None

    def _load_shape(self, shape: str) -> bool:
        if shape in self.shapes:
            return True
        try:
            data = json.loads((self.dirs.root / "shapes" / f"{shape}.json").read_text())
            self.shapes[shape] = (data["params"], int(data["pack"]), int(data["concurrent"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        for f in (self.dirs.root / "workers").glob("*.json"):
            try:
                theirs = json.loads(f.read_text(encoding="utf-8")).get("shape")
            except (OSError, ValueError, AttributeError):
                continue
            if theirs == shape:
                self.workers.setdefault(f.stem, shape)  # maybe alive: squeue decides
        return True

    # --- watching -------------------------------------------------------------------------

    def collect(self) -> list[Outcome]:
        """Runs whose done file is there (a stat per run)."""
        out = []
        for name, t in list(self.tasks.items()):
            done = self.dirs.read_done(t.task)
            if done is not None and done.get("job") == name:
                del self.tasks[name]
                self.dirs.done(t.task).unlink(missing_ok=True)
                out.append(Outcome(name, dict(done.get("result") or {"status": RunStatus.FAILED})))
        return out

    def poll(self, states: dict[str, JobState]) -> list[Outcome]:
        """With squeue's answer about ``job_ids()``: note who holds each run; hand back the
        runs of workers that ended; submit workers for the runs no live worker has room
        for."""
        live = {j for j in self.workers if (s := states.get(j)) is not None and s.active}
        back = []
        for name, t in list(self.tasks.items()):
            holder = self.dirs.holder(t.task)
            if holder is not None and holder != t.holder:
                # Not written to launcher.json: the run's engine is setting up its directory
                # right now. The claim itself names the holder (--status, re-attach).
                t.holder = holder
                self.workers.setdefault(holder, t.shape)
            if holder is not None and holder not in live and self.dirs.read_done(
                    t.task) is None:
                del self.tasks[name]
                (self.dirs.claimed(holder) / f"{t.task}.pkl").unlink(missing_ok=True)
                how = states[holder].state if holder in states else "(gone from squeue)"
                back.append(Outcome(name, None, f"its packed Slurm job {holder} ended {how}"))
        for j in [j for j in self.workers if j not in live and j in states]:
            del self.workers[j]
        self._feed(live)
        return back

    def _feed(self, live: set[str]) -> None:
        for shape, (wparams, pack, concurrent) in self.shapes.items():
            waiting = sum(1 for _ in self.dirs.queue(shape).glob("*.pkl"))
            room = sum(max(0, pack - self.dirs.taken(j)) for j in live
                       if self.workers.get(j) == shape)
            need = math.ceil(max(0, waiting - room) / pack)
            if need:
                for j in self._submit_workers(wparams, shape, pack, concurrent, need):
                    self.workers[j] = shape

    def pending(self) -> bool:
        """Whether runs wait in the queue of a shape this driver knows."""
        return any(any(self.dirs.queue(shape).glob("*.pkl")) for shape in self.shapes)

    def job_ids(self) -> list[str]:
        return sorted(self.workers)

    def holders(self) -> dict[str, str | None]:
        return {name: t.holder for name, t in self.tasks.items()}

    def close(self, cancel_queued: bool) -> None:
        """The driver stops handing out: ``cancel_queued`` drops the runs no worker took."""
        if cancel_queued:
            for t in self.tasks.values():
                path = self.dirs.queue(t.shape) / f"{t.task}.pkl"
                path.unlink(missing_ok=True)
        self.dirs.closed.touch()


def worker_call() -> PackWorker:
    return PackWorker()

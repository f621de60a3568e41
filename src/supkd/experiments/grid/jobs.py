"""What one grid job runs: a training run (:func:`train_job`) or a CKA analysis
(:func:`cka_job`), and :func:`call_job`, which turns every way a job can end into a
:class:`~supkd.train.run_dir.RunResult` (:func:`_call`: the same as a plain dict).

A job is ``fn(config_dict, run_dir, resume) -> result dict``. Jobs are module-level
functions so that executors can send them to other processes by reference.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from supkd.errors import RunDiverged
from supkd.train.run_dir import LAUNCHER_ENV, RunDir, RunResult
from supkd.utils.plugins import load_plugins
from supkd.vocab import RunStatus

RunFn = Callable[[dict[str, Any], Path, bool], dict[str, Any]]

_THREADS_ENV = "SUPKD_GRID_THREADS"


def train_job(config: dict[str, Any], run_dir: Path, resume: bool) -> dict[str, Any]:
    """Run one training run in this process with the engine (``supkd.train.run``)."""
    from supkd.train import load_run_config as load_config
    from supkd.train import run as train_run

    _apply_threads()
    cfg = load_config(config)
    return train_run(cfg, run_dir, resume=resume, quiet=True)


def cka_job(config: dict[str, Any], out_dir: Path, resume: bool) -> dict[str, Any]:
    """Layer-wise CKA (Fig. 2) of a student against its teacher on the student's data split
    ``config["split"]``, written to the student's run directory as ``cka.json`` (the one
    record of :mod:`supkd.train.cka_record`, as ``supkd cka`` writes it).

    ``config``: ``student``, ``teacher`` (run directories), ``split``, ``batch_size``,
    ``max_batches``, ``pool``, ``stages`` (see the grid's ``cka`` section).
    """
    from supkd.analysis.layerwise import layerwise_cka
    from supkd.data import build_data, make_loader
    from supkd.models.files import load_model
    from supkd.train import load_run_config as load_config
    from supkd.train.cka_record import CkaRecord, CkaSide

    _apply_threads()
    student, teacher = RunDir(config["student"]), RunDir(config["teacher"])
    cfg = load_config(student.config_path)
    bundle = build_data(cfg.data, cfg.seed)
    split = str(config.get("split", "test"))
    batch_size = int(config.get("batch_size", 256))
    loader = make_loader(bundle, split, batch_size, train=False,
                         augment="none", device="cpu", seed=cfg.seed)
    t0 = time.perf_counter()
    res = layerwise_cka(load_model(teacher.path), load_model(student.path), loader,
                        stages=config.get("stages"), pool=bool(config.get("pool", False)),
                        max_batches=config.get("max_batches"), device="cpu")
    method = cfg.meta.get("method") or getattr(cfg.task, "loss", None) or cfg.task.name
    side = CkaSide(student.path.name, str(student.path), str(method), cfg.seed)
    record = CkaRecord.build(
        CkaSide(teacher.path.name, str(teacher.path)), {student.path.name: (side, res)},
        {"name": bundle.name, "split": split, "batch_size": batch_size, "seed": cfg.seed},
        meta=cfg.meta, wall_time_s=time.perf_counter() - t0,
    )
    RunDir(out_dir).write_cka(record)
    return {"status": RunStatus.COMPLETED, "wall_time_s": record.wall_time_s}


def _worker_init(threads: int) -> None:
    # N processes on C cores: C/N intra-op threads each, or they oversubscribe the cores.
    # Set through the environment (read when torch is first imported, by the job) so that a
    # worker that never trains (or a test's stand-in) does not pay for importing torch.
    os.environ[_THREADS_ENV] = str(max(1, threads))
    os.environ["OMP_NUM_THREADS"] = str(max(1, threads))


def _apply_threads() -> None:
    if os.environ.get(_THREADS_ENV):
        import torch

        torch.set_num_threads(int(os.environ[_THREADS_ENV]))


def launcher_info(name: str, threads: int | None, **ids: Any) -> dict[str, Any]:
    """Where a job runs, for ``result.json``'s ``launcher`` record: the launcher's ``name``,
    its ``ids`` (Slurm job id, Ray task id, ...), this host and process, the torch threads
    it was given (None: the process default) and the GPUs it sees (``CUDA_VISIBLE_DEVICES``
    as the launcher set it; None when unset, i.e. all of the machine's)."""
    return {"name": name, **ids, "host": socket.gethostname(), "pid": os.getpid(),
            "threads": threads, "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}


@contextlib.contextmanager
def _job_env(threads: int | None, launcher: dict[str, Any] | None) -> Iterator[None]:
    """The job's thread count (read by :func:`_apply_threads`) and launcher record (read by
    the engine into ``result.json``; an environment variable so that it also reaches
    every DDP rank), set for the job's duration only."""
    new = {}
    if threads is not None:
        new[_THREADS_ENV] = str(max(1, threads))
    if launcher is not None:
        new[LAUNCHER_ENV] = json.dumps(launcher, default=str)
    old = {k: os.environ.get(k) for k in new}
    os.environ.update(new)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def call_job(fn: RunFn, config: dict[str, Any], run_dir: Path, resume: bool, *,
             threads: int | None = None,
             launcher: dict[str, Any] | None = None) -> RunResult:
    """Run one job and turn every way it can end into its :class:`RunResult` (never raises,
    so one failure never stops the grid). ``threads``: the job's torch threads (None: leave
    the process's); ``launcher``: where it runs (:func:`launcher_info`), recorded in the
    result."""
    t0 = time.perf_counter()
    try:
        # A worker process (spawned pool, Slurm job, Ray task) starts without the user's
        # plugins: import those the CLI exported in SUPKD_PLUGINS before the job builds a
        # registered loss, model or data set. Importing one twice is harmless.
        load_plugins(entry_points=False)
        with _job_env(threads, launcher):
            out = dict(fn(config, run_dir, resume) or {})
        out.setdefault("status", RunStatus.COMPLETED)
        res = RunResult.from_dict(out)
    except RunDiverged as exc:
        res = RunResult(RunStatus.DIVERGED, diverged_step=exc.step, error=str(exc))
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # UserError or a bug: one run must not stop the others
        res = RunResult(RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
    if res.wall_time_s is None:
        res.wall_time_s = time.perf_counter() - t0
    if launcher is not None and res.launcher is None:
        res.launcher = launcher
    return res


def _call(fn: RunFn, config: dict[str, Any], run_dir: Path, resume: bool, *,
          threads: int | None = None, launcher: dict[str, Any] | None = None) -> dict[str, Any]:
    """:func:`call_job`'s result as the plain dict that executors pass between processes
    (and the Slurm launcher writes as JSON)."""
    return call_job(fn, config, run_dir, resume, threads=threads, launcher=launcher).to_dict()

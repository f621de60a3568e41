"""The engine: ``fit()`` trains a task on loaders, ``run()`` trains a config-described run.

``fit()`` is the function form of :class:`supkd.train.loop.TrainLoop`, whose docstring
describes the loop: the CUDA fast path and CUDA graphs, the divergence guard, signals and
DDP stop agreement, exact resume. ``run()`` is a whole run into a run directory: rank 0
prepares the directory (:class:`~supkd.train.run_dir.RunDir`), every rank builds the same
data, task and loaders from the run's seeds, ``fit()`` trains, and rank 0 writes
``model.pt`` and the one ``result.json`` record (:class:`~supkd.train.run_dir.RunResult`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import torch
import torchvision

from supkd import __version__
from supkd.config import (
    Config,
    config_from_dict,
)
from supkd.data import DataBundle, Loader, build_data, make_loader
from supkd.errors import CheckpointError, ConfigError, UserError
from supkd.models.files import save_model
from supkd.train import distributed as dist_utils
from supkd.train.batchnorm_check import check_batchnorm_batch
from supkd.train.checks import load_run_config
from supkd.train.evaluation import evaluate
from supkd.train.loop import (
    COMPILE_AUTO_MIN_STEPS,
    CUDAGRAPH_COMPILE_MODES,
    TrainingInterrupted,
    TrainLoop,
)
from supkd.train.options import FitOptions, TrainState
from supkd.train.run_dir import RunDir, RunResult, launcher_from_env
from supkd.train.seeding import Seeds, expand_seed, seed_everything, set_deterministic
from supkd.train.tasks import Task, build_task
from supkd.vocab import RunStatus

__all__ = [
    "COMPILE_AUTO_MIN_STEPS",
    "CUDAGRAPH_COMPILE_MODES",
    "FitOptions",
    "TrainState",
    "TrainingInterrupted",
    "evaluate",
    "fit",
    "run",
]


# ---------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------


def fit(
    task: Task,
    train_loader: Iterable[Any],
    options: FitOptions | None = None,
    **overrides: Any,
) -> RunResult:
    """Train ``task`` on ``train_loader`` for ``train.epochs`` epochs.

    Args:
        task: a :class:`supkd.train.tasks.Task` (``task(batch) -> {"loss", parts}``,
            ``task.model``, ``task.predict``, ``extra_state``); anything else is a
            TypeError (a plain model goes through :func:`supkd.train.train_classifier`
            or :func:`supkd.train.distill`, which wrap it in a task).
        train_loader: yields ``supkd.data.Batch`` or ``(x, y)`` tuples; needs ``len()``
            unless ``train.steps_per_epoch`` is set; ``set_epoch(epoch)`` is called when
            present. Must be the per-rank loader under DDP.
        options: a :class:`~supkd.train.options.FitOptions` (config sections, device,
            evaluation loaders, run directory, resume, callbacks...; defaults when None).
        overrides: any :class:`FitOptions` field as a keyword (``train=``, ``device=``,
            ``run_dir=``, ...), applied over ``options``; an unknown one is a TypeError.

    Returns:
        A :class:`~supkd.train.run_dir.RunResult` with ``status`` (completed or diverged),
        ``test_acc``, ``val_acc``, ``best_val_acc``, ``diverged_step``, ``error``,
        ``epochs``, ``steps``, ``wall_time_s`` (the run's other fields unset); it also
        reads like the dict it used to be (``res["status"]``).

    Raises:
        TrainingInterrupted: stopped by a signal or a callback (checkpoint saved first).
        TypeError: ``task`` is not a Task, or an unknown keyword.
    """
    return TrainLoop(task, train_loader, options, **overrides).fit()


# ---------------------------------------------------------------------------------------
# run: the run directory
# ---------------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    out = {
        "supkd": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
    }
    # Optional model libraries, when the run's config made them load (a timm/ model name).
    timm = sys.modules.get("timm")
    if timm is not None:
        out["timm"] = getattr(timm, "__version__", None)
    return out


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def _first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            d = _first_difference(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else k)
            if d is not None:
                return d
        return None
    return None if a == b else prefix


# A prior result that --resume returns as recorded (an imported teacher is never retrained).
_FINISHED = (RunStatus.COMPLETED, RunStatus.DIVERGED, RunStatus.IMPORTED)

# Keys that may change between a run and its resumption without changing the result.
_RESUME_FREE_KEYS = ("train.progress", "train.tensorboard", "data.num_workers", "data.root")


def _check_resume_config(rd: RunDir, cfg: Config) -> None:
    saved, problem = rd.read_config()
    if problem is not None:
        raise CheckpointError(f"run directory {rd.path}: config.yaml is unreadable")
    if saved is None:
        return
    # Fields added since the run started are absent from its config.yaml; read them as
    # their defaults (each new field's default keeps the old behaviour) so that such a run
    # can still resume. A saved config that no longer validates is compared as it is.
    with contextlib.suppress(ConfigError):
        saved = config_from_dict(saved).to_dict()
    now = cfg.to_dict()
    for key in _RESUME_FREE_KEYS:
        sec, name = key.split(".")
        for d in (saved, now):
            if isinstance(d.get(sec), dict):
                d[sec].pop(name, None)
    diff = _first_difference(saved, now)
    if diff is not None:
        raise ConfigError(
            f"run directory {rd.path}: was started with a different config (field '{diff}'); "
            "resume with the same config, or start a new run directory"
        )


def _prepare_run_dir(rd: RunDir, cfg: Config, resume: bool) -> tuple[str, Any]:
    """Rank 0's look at the run directory: ``("go", None)`` or ``("done", prior result)``.

    Raises UserError (run() sends it to every rank) for a directory that cannot be used.
    """
    run_dir = rd.path
    rd.claim()  # a folder of the user's own files is never taken over
    if rd.result_path.is_file():
        prior = rd.read_result()[0] or {}
        if resume and prior.get("status") in _FINISHED:
            return ("done", prior)
        # A run that failed before its first checkpoint (a config error found while building
        # its data or task) produced nothing to protect: it starts afresh, with or without
        # --resume and with the corrected config, instead of blocking its directory.
        if prior.get("status") == RunStatus.FAILED and not rd.has_checkpoint():
            prior, resume = {}, False
        if not resume and prior:
            raise UserError(
                f"run directory {run_dir}: already holds a run (result.json); use "
                "--resume to continue or another output directory"
            )
    elif not resume and rd.has_checkpoint():
        raise UserError(
            f"run directory {run_dir}: holds an interrupted run; use --resume to "
            "continue it or another output directory"
        )
    if resume:
        _check_resume_config(rd, cfg)
    # Temporary files of writes a SIGKILL cut short (a checkpoint's can be hundreds of MB).
    # Only this run's own directory: no other process writes there while it starts.
    rd.sweep_temps()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        rd.write_config(cfg.to_dict())
    except OSError as exc:
        msg = f"run directory {run_dir}: cannot be written ({exc.strerror})"
        raise UserError(msg) from None
    rd.remove_result()  # a failed run being retried
    return ("go", None)


def _agree_on_run_dir(rd: RunDir, cfg: Config, resume: bool) -> dict[str, Any] | None:
    """Rank 0 prepares the directory; every rank gets its verdict: the prior result of a
    finished run (returned as is), None to go on, or the same UserError raised."""
    outcome: tuple[str, Any] = ("go", None)
    if dist_utils.is_main():
        try:
            outcome = _prepare_run_dir(rd, cfg, resume)
        except UserError as exc:
            outcome = ("error", exc)
    # Only rank 0 looks at the directory, but every rank must take the same branch: a rank
    # left behind would wait in the next collective for one that has returned or raised.
    outcome = dist_utils.broadcast_object(outcome)
    if outcome[0] == "error":
        # Every rank leaves with the same error at about the same time: without this barrier
        # rank 0 can exit right after sending the broadcast, and torchrun then kills the
        # slower ranks before they print the message.
        dist_utils.barrier()
        raise outcome[1]
    return outcome[1] if outcome[0] == "done" else None


# ---------------------------------------------------------------------------------------
# run: the result record
# ---------------------------------------------------------------------------------------


def _result_base(cfg: Config, seeds: Seeds, dinfo: dist_utils.DistInfo) -> dict[str, Any]:
    """The :class:`RunResult` fields that do not depend on how the run ended."""
    return {
        "name": cfg.name,
        "task": cfg.task.name,
        "seed": cfg.seed,
        "seeds": {"init": seeds.init, "data": seeds.data, "augment": seeds.augment},
        "meta": dict(cfg.meta),
        "device": _device_name(dinfo.device),
        "world_size": dinfo.world_size,
        "versions": _versions(),
        "metric": "top-1 accuracy (%) of the last epoch on the test split",
        "launcher": launcher_from_env(),  # where a grid launcher ran it (None: by hand)
    }


def _write_result(
    rd: RunDir, res: RunResult, base: dict[str, Any], t0: float
) -> dict[str, Any]:
    """``result.json`` from ``fit``'s result (or a failure's) and ``base`` (rank 0 writes;
    every rank returns the record)."""
    wall = res.wall_time_s if res.wall_time_s is not None else round(time.time() - t0, 3)
    record = dataclasses.replace(res, epochs=res.epochs or 0, steps=res.steps or 0,
                                 wall_time_s=wall, **base)
    return rd.write_result(record) if dist_utils.is_main() else record.to_dict()


# ---------------------------------------------------------------------------------------
# run: data, task and loaders
# ---------------------------------------------------------------------------------------


@dataclass
class RunLoaders:
    """The loaders of one run: ``train`` is this rank's shard; ``val`` is None without a
    validation split."""

    train: Loader
    test: Loader
    val: Loader | None


def build_run(
    cfg: Config, seeds: Seeds, dinfo: dist_utils.DistInfo
) -> tuple[Task, DataBundle, RunLoaders]:
    """Data, task and loaders of run ``cfg``, each drawn from its own seed."""
    seed_everything(seeds.init)
    bundle = build_data(cfg.data, seed=seeds.data)
    task = build_task(cfg, bundle, dinfo.device)
    side = bundle.image_size
    hw = tuple(side) if isinstance(side, tuple | list) else (side, side)
    check_batchnorm_batch(task.model, cfg.train.batch_size // dinfo.world_size * task.views,
                          (int(bundle.in_channels), *hw))
    # Training-time randomness (anything a step draws from the global generators) gets
    # its own seed, independent of the initialization.
    seed_everything(seeds.augment)
    return task, bundle, build_loaders(cfg, bundle, task, seeds, dinfo)


def build_loaders(
    cfg: Config, bundle: DataBundle, task: Task, seeds: Seeds, dinfo: dist_utils.DistInfo
) -> RunLoaders:
    """The training loader (this rank's shard of every global batch, the task's views and
    augmentation) and the evaluation loaders (whole splits, no augmentation)."""
    world, batch_size = dinfo.world_size, cfg.train.batch_size
    if batch_size % world:
        raise ConfigError(
            f"config field 'train.batch_size': expected a multiple of the {world} processes, "
            f"got {batch_size}"
        )
    train_loader = make_loader(
        bundle,
        "train",
        batch_size // world,
        train=True,
        views=task.views,
        augment=task.augment,
        device=dinfo.device,
        seed=seeds.data,
        aug_seed=seeds.augment,
        num_workers=cfg.data.num_workers,
        gpu_resident=cfg.data.gpu_resident,
        rank=dinfo.rank,
        world_size=world,
    )
    if len(train_loader) == 0:
        # Training keeps full batches only (equal batch statistics and, under DDP, equal
        # per-rank batches), so a split smaller than one batch gives an empty epoch.
        raise ConfigError(
            f"config field 'train.batch_size': {batch_size} is larger than the "
            f"training split ({len(bundle.train)} images; every step takes a full batch)"
        )
    test = _eval_loader(cfg, bundle, "test", seeds, dinfo)
    val = _eval_loader(cfg, bundle, "val", seeds, dinfo) if bundle.val is not None else None
    return RunLoaders(train_loader, test, val)


def _eval_loader(
    cfg: Config, bundle: DataBundle, split: str, seeds: Seeds, dinfo: dist_utils.DistInfo
) -> Loader:
    # Every rank iterates the whole split (rank 0 alone evaluates; no shard).
    return make_loader(
        bundle,
        split,
        cfg.train.eval_batch_size,
        train=False,
        augment="none",
        device=dinfo.device,
        seed=seeds.data,
        aug_seed=seeds.augment,
        num_workers=cfg.data.num_workers,
        gpu_resident=cfg.data.gpu_resident,
    )


# ---------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------


def run(
    cfg: Config | dict[str, Any] | str | Path,
    run_dir: str | Path,
    resume: bool = False,
    quiet: bool = False,
    *,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
) -> dict[str, Any]:
    """Train one run described by ``cfg`` into ``run_dir``; return the result dict.

    Writes ``config.yaml`` (resolved), ``metrics.jsonl``, ``checkpoints/last.pt``,
    ``model.pt`` (completed runs) and ``result.json`` (see docs/architecture.md).

    - ``resume=True``: a completed or diverged run is returned as recorded; an interrupted
      one continues from ``checkpoints/last.pt``; an empty directory starts fresh.
    - ``resume=False`` on a directory that already holds a run raises UserError.
    - A diverged run returns ``status: "diverged"`` (never raises). User errors (bad data,
      teacher, config) write ``status: "failed"`` and re-raise; so do bugs.
    - Ctrl-C / SIGTERM: checkpoint saved, :class:`TrainingInterrupted` raised, no result.
    """
    cfg = load_run_config(cfg)
    rd = RunDir(run_dir)
    dinfo = dist_utils.init_distributed(cfg.device)
    prior = _agree_on_run_dir(rd, cfg, resume)
    if prior is not None:
        return prior
    seeds = expand_seed(cfg.seed)
    set_deterministic(cfg.deterministic)
    t0 = time.time()
    base = _result_base(cfg, seeds, dinfo)
    try:
        res = _train_run(cfg, rd, seeds, dinfo, base, resume, quiet, callbacks)
        return _write_result(rd, res, base, t0)
    except KeyboardInterrupt:  # TrainingInterrupted included: a resumable run, no result
        raise
    except UserError as exc:
        _write_result(rd, RunResult(RunStatus.FAILED, error=str(exc)), base, t0)
        raise
    except Exception as exc:
        failed = RunResult(RunStatus.FAILED, error=f"{type(exc).__name__}: {exc}")
        _write_result(rd, failed, base, t0)
        raise


def _train_run(
    cfg: Config,
    rd: RunDir,
    seeds: Seeds,
    dinfo: dist_utils.DistInfo,
    base: dict[str, Any],
    resume: bool,
    quiet: bool,
    callbacks: Sequence[Callable[[TrainState], None]],
) -> RunResult:
    """Build, train and save run ``cfg``: ``fit``'s result (``base`` gains the data's
    summary and, under DDP, the replicas' fingerprints)."""
    task, bundle, loaders = build_run(cfg, seeds, dinfo)
    base["data"] = bundle.summary()  # what the run saw: images per split, a fingerprint
    res = fit(task, loaders.train, FitOptions(
        train=cfg.train, optim=cfg.optim, schedule=cfg.schedule, device=dinfo.device,
        test_loader=loaders.test, val_loader=loaders.val, run_dir=rd.path, resume=resume,
        quiet=quiet, callbacks=callbacks, checkpoint_extra={"config": cfg.to_dict()},
    ))
    if dinfo.enabled:
        # Every rank's parameter hash (collective): the record shows that all ranks
        # ended with the weights rank 0 saves (tests/train/test_distributed_cli.py).
        base["replica_fingerprints"] = dist_utils.replica_fingerprints(task.model)
    if res.status is RunStatus.COMPLETED and dist_utils.is_main():
        save_model(rd.model_path, task.model, task.model_info())
    return res

"""The training engine: one loop for every task, and ``run()`` for a config-described run.

``fit()`` knows no task, loss or method names: it calls ``task(batch)`` for
``{"loss": ..., parts...}``, back-propagates the loss, steps the optimizer and scheduler,
logs the mean of every part per epoch and evaluates ``task.predict``.

Fast path (CUDA, the default there): bf16 autocast, channels_last, fused SGD/AdamW, cuDNN
autotuning, ``torch.compile`` for runs long enough to repay the compile time (at least
:data:`COMPILE_AUTO_MIN_STEPS` steps, an unmeasured guess), and no host
synchronization inside the step: the loss parts are summed on the device and read every
``train.log_every`` steps.

Compile modes (``train.compile_mode``, passed to ``torch.compile`` for every network in
``task.networks()``): ``reduce-overhead`` and ``max-autotune`` record CUDA graphs
(:data:`CUDAGRAPH_COMPILE_MODES`). A replay writes its outputs into the same memory pool
every time, so an output still referenced when the next iteration starts would be
overwritten (PyTorch, "CUDAGraph Trees"; ``torch.compiler.cudagraph_mark_step_begin``).
With those modes on CUDA the loop is kept correct by construction:

- each training step starts with ``optimizer.zero_grad(set_to_none=True)`` and then
  ``torch.compiler.cudagraph_mark_step_begin()``: the previous step's gradients (outputs
  of its recorded backward) are dropped before the new iteration, as CUDA graphs require
  when gradients are not accumulated;
- the loss parts are consumed inside their step: ``epoch_sums`` holds new tensors (a
  clone, then ``sum + part``), never a part itself; the last step's ``loss`` is read only
  before any further compiled call;
- each evaluation batch is a new iteration (its logits are reduced to a correct count at
  once), and the last step's gradients are dropped before evaluating.

Everything else (the teacher forward of a KD step, EMA updates, checkpoints) reads
parameters, buffers or eager tensors, never a previous iteration's graph outputs. On CPU the
modes only change inductor's kernel choice (no CUDA graphs). Under DDP the CUDA-graph modes
are untested.

Divergence guard (DESIGN.md §8): on CPU the loss is checked with ``torch.isfinite`` before
every backward (a host read costs nothing there), so a run stops at the first non-finite
loss, before it touches the weights. On CUDA a per-step check would stall the GPU pipeline
on every step, so the step records the first non-finite step in a device-side counter
(a ``torch.where``, no sync) that the host reads every ``log_every`` steps and at each
epoch's end; the run then stops at that read, and ``diverged_step`` is still the first bad
step. Steps are counted from 1. A diverged run ends with ``status: "diverged"``; ``fit``
and ``run`` return that result and never raise for it.

Interruption: SIGINT (Ctrl-C) or SIGTERM during ``fit`` lets the current step finish, writes
``checkpoints/last.pt`` (mid-epoch position included) and raises
:class:`TrainingInterrupted` (a ``KeyboardInterrupt``; the CLI exits 130); ``--resume``
continues from there. A second signal exits at once. Under DDP the ranks combine their stop
flags (an all-reduce max; every step on CPU, every ``log_every`` steps and at epoch ends on
CUDA), so all ranks stop after the same step even when the signal reached only one of them.

Resume is exact: the checkpoint holds model, optimizer, scheduler, scaler, EMA, task state,
every RNG state and the position inside the epoch; loaders draw each epoch's order and
augmentations from ``(seed, epoch)``, so the resumed run replays the same batches (those
already done in the interrupted epoch are drawn and skipped). On CPU with
``deterministic: true`` the final weights are bit-identical to an uninterrupted run
(tests/train/test_resume.py).
"""

from __future__ import annotations

import contextlib
import platform
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from supkd.config import (
    Config,
    OptimConfig,
    ScheduleConfig,
    TrainConfig,
    config_from_dict,
)
from supkd.errors import CheckpointError, ConfigError, RunDiverged, UserError
from supkd.models.files import save_model
from supkd.train import distributed as dist_utils
from supkd.train.checkpoint import load_checkpoint, save_checkpoint
from supkd.train.optim import build_optimizer, build_scheduler
from supkd.train.run_dir import RunDir, RunResult, launcher_from_env
from supkd.train.seeding import (
    expand_seed,
    rng_state,
    seed_everything,
    set_deterministic,
    set_rng_state,
)
from supkd.utils.atomic import (
    append_jsonl,
    read_jsonl,
)

__all__ = [
    "COMPILE_AUTO_MIN_STEPS",
    "CUDAGRAPH_COMPILE_MODES",
    "TrainState",
    "TrainingInterrupted",
    "evaluate",
    "fit",
    "run",
]

#: ``train.compile_mode`` values whose ``torch.compile`` mode records CUDA graphs
#: (``torch._inductor.list_mode_options``: ``triton.cudagraphs``).
CUDAGRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")

#: ``train.compile: auto`` compiles on CUDA only for runs of at least this many optimizer
#: steps: compiling a ResNet takes on the order of a minute, which a short run never earns
#: back. The value is a guess, not a measurement: it awaits a GPU run of
#: benchmarks/kd_throughput.py, whose "compile break-even" line divides the compile
#: overhead by the per-step saving (eager vs compiled student CE step, batch 512). Use
#: ``on``/``off`` to choose explicitly.
COMPILE_AUTO_MIN_STEPS = 5000


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request (Ctrl-C, SIGTERM, or a callback); a checkpoint was saved
    when the run has a directory. A ``KeyboardInterrupt`` so the CLI exits 130."""

    def __init__(self, step: int, checkpoint: Path | None, reason: str = "interrupted") -> None:
        super().__init__(f"{reason} at step {step}")
        self.step = step
        self.checkpoint = checkpoint
        self.reason = reason


@dataclass
class TrainState:
    """What callbacks see after every optimizer step. Set ``stop = True`` to stop the run
    as if interrupted (checkpoint saved, :class:`TrainingInterrupted` raised)."""

    epoch: int = 0  # 0-based epoch in progress
    step: int = 0  # optimizer steps done (global)
    batch_in_epoch: int = 0  # steps done in the current epoch
    stop: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------


class _StopSignals:
    """First SIGINT/SIGTERM: ask the loop to checkpoint and stop. Second: stop at once."""

    def __init__(self, quiet: bool) -> None:
        self.requested: str | None = None
        self.quiet = quiet
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt(f"second {name}")
        self.requested = name
        if not self.quiet:
            print(
                f"\nsupkd: {name} received, saving a checkpoint after this step "
                "(send it again to quit at once)",
                file=sys.stderr,
                flush=True,
            )

    def __enter__(self) -> _StopSignals:
        # Handlers can only be installed from the main thread (e.g. not under a grid's
        # worker thread); elsewhere the default behaviour stays.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def _to_batch(obj: Any, device: torch.device, channels_last: bool) -> Any:
    from supkd.data import Batch

    batch = Batch.from_any(obj, device)
    if channels_last and batch.x.dim() == 4:
        batch.x = batch.x.contiguous(memory_format=torch.channels_last)
    return batch


def _new_cudagraph_step_each_call(
    fn: Callable[[torch.Tensor], torch.Tensor],
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` with a new CUDA-graph iteration marked before each call: each evaluation
    batch's logits are consumed before the next call, so the previous replay's outputs are
    free to be overwritten."""

    def call(x: torch.Tensor) -> torch.Tensor:
        torch.compiler.cudagraph_mark_step_begin()
        return fn(x)

    return call


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def evaluate(
    predict: Callable[[torch.Tensor], torch.Tensor],
    loader: Iterable[Any],
    device: torch.device | str,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> float:
    """Top-1 accuracy (%) of ``predict(x) -> logits (B, C)`` over ``loader``.

    Correct counts are summed on the device; one host read at the end.
    """
    device = torch.device(device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    for obj in loader:
        batch = _to_batch(obj, device, channels_last)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            logits = predict(batch.x)
        correct += (logits.argmax(dim=1) == batch.y).sum()
        total += int(batch.y.shape[0])
    if total == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return 100.0 * int(correct.item()) / total


def _progress(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True, file=sys.stderr)


class _TensorBoard:
    def __init__(self, run_dir: Path | None, enabled: bool) -> None:
        self.writer = None
        if not enabled or run_dir is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("supkd: train.tensorboard is on but not installed", file=sys.stderr)
            return
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        step = record["step"]
        for k, v in record.items():
            if isinstance(v, int | float) and k not in ("step", "epoch") and v is not None:
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ---------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------


def fit(
    task: nn.Module,
    train_loader: Iterable[Any],
    *,
    train: TrainConfig | None = None,
    optim: OptimConfig | None = None,
    schedule: ScheduleConfig | None = None,
    device: torch.device | str = "cpu",
    test_loader: Iterable[Any] | None = None,
    val_loader: Iterable[Any] | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    callbacks: Sequence[Callable[[TrainState], None]] = (),
    checkpoint_extra: dict[str, Any] | None = None,
    handle_signals: bool = True,
) -> dict[str, Any]:
    """Train ``task`` on ``train_loader`` for ``train.epochs`` epochs.

    Args:
        task: a :class:`supkd.train.tasks.Task` (``task(batch) -> {"loss", parts}``,
            ``task.model``, ``task.predict``, ``extra_state``).
        train_loader: yields ``supkd.data.Batch`` or ``(x, y)`` tuples; needs ``len()``
            unless ``train.steps_per_epoch`` is set; ``set_epoch(epoch)`` is called when
            present. Must be the per-rank loader under DDP.
        train, optim, schedule: config sections (defaults when None).
        device: where to train.
        test_loader, val_loader: evaluated every ``train.eval_every`` epochs and after the
            last one (accuracy in %).
        run_dir: when given, ``metrics.jsonl`` (one line per epoch) and
            ``checkpoints/last.pt`` (+ ``best.pt``) are written there (rank 0 only).
        resume: continue from ``run_dir/checkpoints/last.pt`` when it exists.
        quiet: no progress bar, no messages.
        callbacks: called with a :class:`TrainState` after every optimizer step.
        checkpoint_extra: extra plain values stored in every checkpoint (e.g. the config).
        handle_signals: install the SIGINT/SIGTERM checkpoint-and-stop handlers.

    Returns:
        ``{"status": "completed"|"diverged", "test_acc", "val_acc", "best_val_acc",
        "diverged_step", "error", "epochs", "steps", "wall_time_s"}``.

    Raises:
        TrainingInterrupted: stopped by a signal or a callback (checkpoint saved first).
    """
    train = train or TrainConfig()
    optim = optim or OptimConfig()
    schedule = schedule or ScheduleConfig()
    device = torch.device(device)
    dinfo = dist_utils.info()
    main = dist_utils.is_main()
    run_dir = Path(run_dir) if run_dir is not None else None
    ckpt_dir = run_dir / "checkpoints" if run_dir is not None else None

    cuda = device.type == "cuda"
    amp_dtype = _amp_dtype(train.amp, device)
    channels_last = train.channels_last == "on" or (train.channels_last == "auto" and cuda)
    if cuda and not torch.backends.cudnn.deterministic:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    task.to(device)
    model: nn.Module = task.model
    if channels_last:
        task.to(memory_format=torch.channels_last)

    try:
        n_batches = len(train_loader)  # type: ignore[arg-type]
    except TypeError:
        n_batches = None
    if train.steps_per_epoch is not None:
        n_batches = min(n_batches, train.steps_per_epoch) if n_batches else train.steps_per_epoch
    if not n_batches:
        raise ConfigError(
            "train loader: has no length and train.steps_per_epoch is not set (or it is empty)"
        )
    steps_per_epoch = n_batches
    total_steps = steps_per_epoch * train.epochs

    params = (
        task.trainable_parameters()
        if hasattr(task, "trainable_parameters")
        else [p for p in task.parameters() if p.requires_grad]
    )
    optimizer = build_optimizer(params, optim, device)
    scheduler = build_scheduler(optimizer, schedule, steps_per_epoch, train.epochs)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 and cuda else None
    ema = None
    if train.ema_decay is not None:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(
            model, multi_avg_fn=get_ema_multi_avg_fn(train.ema_decay), use_buffers=True
        )
        ema.eval()  # only ever evaluated; update_parameters ignores the mode

    state = TrainState()
    best_val: float | None = None
    wall_before = 0.0
    epoch_sums: dict[str, torch.Tensor] = {}
    epoch_images = 0
    epoch_time_before = 0.0
    last_test: float | None = None
    last_val: float | None = None

    ckpt_path = ckpt_dir / "last.pt" if ckpt_dir is not None else None
    if resume and ckpt_path is not None and ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        try:
            model.load_state_dict(ck["model"])
            if hasattr(task, "load_extra_state"):
                task.load_extra_state(ck.get("task_state") or {})
            optimizer.load_state_dict(ck["optimizer"])
            scheduler.load_state_dict(ck["scheduler"])
            if scaler is not None and ck.get("scaler"):
                scaler.load_state_dict(ck["scaler"])
            if ema is not None:
                if ck.get("ema") is None:
                    raise CheckpointError(f"checkpoint {ckpt_path}: has no EMA weights")
                ema.load_state_dict(ck["ema"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {ckpt_path}: does not match this run ({str(exc).splitlines()[0]})"
            ) from None
        state.epoch = int(ck["epoch"])
        state.step = int(ck["step"])
        state.batch_in_epoch = int(ck["batch_in_epoch"])
        best_val = ck.get("best_val_acc")
        wall_before = float(ck.get("wall_time_s", 0.0))
        epoch_sums = {k: v.to(device) for k, v in (ck.get("epoch_sums") or {}).items()}
        epoch_images = int(ck.get("epoch_images", 0))
        epoch_time_before = float(ck.get("epoch_time_s", 0.0))
        last_test, last_val = ck.get("test_acc"), ck.get("val_acc")
        set_rng_state(ck["rng"])
        if run_dir is not None and main:
            state.history = read_jsonl(run_dir / "metrics.jsonl")
            # Lines written after this checkpoint (a kill between metrics and checkpoint
            # writes) would be written again: drop them.
            state.history = [r for r in state.history if r.get("epoch", 0) <= state.epoch]
            _rewrite_metrics(run_dir / "metrics.jsonl", state.history)

    compile_on = train.compile == "on" or (
        train.compile == "auto" and cuda and total_steps >= COMPILE_AUTO_MIN_STEPS
    )
    # CUDA-graph modes replay recorded graphs whose outputs live in a pool that the next
    # replay overwrites; the loop below then marks every step and evaluation batch as a new
    # iteration (see the module docstring). CPU has no CUDA graphs: inductor ignores them.
    cudagraphs = compile_on and cuda and train.compile_mode in CUDAGRAPH_COMPILE_MODES
    if compile_on:
        nets = task.networks() if hasattr(task, "networks") else [model]
        for net in nets:
            net.compile(mode=train.compile_mode)

    step_module = dist_utils.wrap_ddp(task, dinfo) if dinfo.enabled else task
    check_every_step = not cuda  # see the module docstring: the divergence guard
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    step_counter = torch.full((), state.step, dtype=torch.long, device=device)
    tb = _TensorBoard(run_dir, train.tensorboard and main)
    show_bar = main and not quiet and train.progress and sys.stdout.isatty()
    t_start = time.perf_counter()

    def predict_fn() -> Callable[[torch.Tensor], torch.Tensor]:
        if ema is not None:
            from supkd.models import as_model_output

            return lambda x: as_model_output(ema.module(x)).logits
        if cudagraphs:
            return _new_cudagraph_step_each_call(task.predict)
        return task.predict

    def checkpoint_state() -> dict[str, Any]:
        return {
            "model": _cpu_state(model),
            "spec": getattr(model, "spec", None),
            "info": task.model_info() if hasattr(task, "model_info") else {},
            "task_state": task.extra_state() if hasattr(task, "extra_state") else {},
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "rng": rng_state(),
            "epoch": state.epoch,
            "step": state.step,
            "batch_in_epoch": state.batch_in_epoch,
            "epoch_sums": {k: v.detach().cpu() for k, v in epoch_sums.items()},
            "epoch_images": epoch_images,
            "epoch_time_s": epoch_time_before + (time.perf_counter() - t_epoch),
            "best_val_acc": best_val,
            "test_acc": last_test,
            "val_acc": last_val,
            "wall_time_s": wall_before + (time.perf_counter() - t_start),
            **(checkpoint_extra or {}),
        }

    def save_last() -> Path | None:
        if ckpt_path is None or not main:
            return None
        return save_checkpoint(ckpt_path, checkpoint_state())

    def check_diverged(loss: torch.Tensor) -> None:
        # One host read: the first non-finite step recorded on the device.
        bad = first_bad
        if dinfo.enabled:
            # Every rank must stop together; the earliest bad step over ranks is recorded.
            never = torch.full_like(bad, 1 << 62)
            earliest = torch.where(bad < 0, never, bad)
            torch.distributed.all_reduce(earliest, op=torch.distributed.ReduceOp.MIN)
            bad = torch.where(earliest == never, torch.full_like(bad, -1), earliest)
        k = int(bad.item())
        if k >= 0:
            raise RunDiverged(k + 1, float(loss.detach().float().item()))

    status, diverged_step, error = "completed", None, None
    t_epoch = time.perf_counter()
    signals = _StopSignals(quiet) if handle_signals else contextlib.nullcontext()

    def stop_reason(epoch_end: bool) -> str | None:
        """Why to stop after this step (signal or callback), or None; the same on every rank.

        Under DDP a signal reaches the ranks at different steps (or only one rank), and a
        rank that left alone would leave the others waiting in the next all-reduce. So the
        flag is combined over ranks (max), at steps every rank agrees on: every step on
        CPU; on CUDA, where the read is a host sync, every ``log_every`` steps and at each
        epoch's end (which synchronizes anyway).
        """
        local = signals_requested(signals) or ("stopped by a callback" if state.stop else None)
        if not dinfo.enabled:
            return local
        if not _stop_check_due(state.step, epoch_end, train.log_every, cuda):
            return None
        flag = torch.full((), 1.0 if local else 0.0, device=device)
        if float(dist_utils.all_reduce_max(flag).item()) > 0:
            return local or "stop requested on another rank"
        return None

    try:
        with signals:
            while state.epoch < train.epochs:
                epoch = state.epoch
                t_epoch = time.perf_counter()
                if hasattr(train_loader, "set_epoch"):
                    train_loader.set_epoch(epoch)
                task.train()
                bar = _progress(steps_per_epoch, f"epoch {epoch + 1}/{train.epochs}", show_bar)
                it: Iterator[Any] = iter(train_loader)
                # Resumed mid-epoch: draw and drop the batches already trained on, so the
                # rest of the epoch sees exactly the batches an uninterrupted run sees.
                for _ in range(state.batch_in_epoch):
                    next(it)
                if bar is not None:
                    bar.update(state.batch_in_epoch)
                loss = torch.zeros((), device=device)
                while state.batch_in_epoch < steps_per_epoch:
                    try:
                        obj = next(it)
                    except StopIteration:
                        break
                    # Gradients are dropped before the forward (not just before backward):
                    # under CUDA graphs they are outputs of the previous step's recorded
                    # backward, and no reference to them may survive into a new iteration.
                    optimizer.zero_grad(set_to_none=True)
                    if cudagraphs:
                        torch.compiler.cudagraph_mark_step_begin()
                    batch = _to_batch(obj, device, channels_last)
                    with torch.autocast(
                        device.type,
                        dtype=amp_dtype or torch.float32,
                        enabled=amp_dtype is not None,
                    ):
                        parts = step_module(batch)
                    loss = parts["loss"]
                    finite = torch.isfinite(loss.detach())
                    if check_every_step:
                        ok = finite.float()
                        if dinfo.enabled:
                            ok = dist_utils.all_reduce_sum(ok) / dinfo.world_size
                        if float(ok.item()) < 1.0:
                            raise RunDiverged(state.step + 1, float(loss.detach().item()))
                    else:
                        first_bad = torch.where(
                            (~finite) & (first_bad < 0), step_counter, first_bad
                        )
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        if train.grad_clip is not None:
                            scaler.unscale_(optimizer)
                            nn.utils.clip_grad_norm_(params, train.grad_clip)
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        if train.grad_clip is not None:
                            nn.utils.clip_grad_norm_(params, train.grad_clip)
                        optimizer.step()
                    scheduler.step()
                    if ema is not None:
                        ema.update_parameters(model)
                    # Both branches make a new tensor (``+`` or clone; ``.float()`` of a
                    # float32 tensor is the tensor itself), so no part is referenced past
                    # its step: a CUDA-graph replay may overwrite a compiled output then.
                    for k, v in parts.items():
                        v = v.detach().float()
                        epoch_sums[k] = epoch_sums[k] + v if k in epoch_sums else v.clone()
                    epoch_images += int(batch.y.shape[0])
                    state.step += 1
                    state.batch_in_epoch += 1
                    step_counter += 1
                    if bar is not None:
                        bar.update(1)
                    if state.step % train.log_every == 0:
                        if not check_every_step:
                            check_diverged(loss)
                        if bar is not None:
                            bar.set_postfix(loss=f"{float(loss.detach().item()):.4f}")
                    for cb in callbacks:
                        cb(state)
                    reason = stop_reason(state.batch_in_epoch == steps_per_epoch)
                    if reason is not None:
                        path = save_last()
                        raise TrainingInterrupted(state.step, path, reason)
                    if (
                        train.checkpoint_every_steps
                        and state.step % train.checkpoint_every_steps == 0
                    ):
                        save_last()
                if bar is not None:
                    bar.close()
                if not check_every_step:
                    check_diverged(loss)
                if cudagraphs:
                    # The last step's gradients live in the CUDA-graph pool that evaluation
                    # replays will reuse; nothing reads them before the next step drops them.
                    optimizer.zero_grad(set_to_none=True)

                # --- end of epoch: evaluate, log, checkpoint ---------------------------
                n_steps = max(state.batch_in_epoch, 1)
                record: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "step": state.step,
                    "lr": float(scheduler.get_last_lr()[0]),
                }
                for k, v in epoch_sums.items():
                    mean = v / n_steps
                    if dinfo.enabled:
                        mean = dist_utils.all_reduce_mean(mean)
                    record[f"train_{k}"] = float(mean.item())
                last_epoch = epoch + 1 == train.epochs
                has_cls = getattr(task, "has_classifier", True)
                if has_cls and ((epoch + 1) % train.eval_every == 0 or last_epoch):
                    task.eval()
                    if main:
                        pred = predict_fn()
                        if test_loader is not None:
                            last_test = evaluate(
                                pred, test_loader, device, amp_dtype=amp_dtype,
                                channels_last=channels_last,
                            )
                        if val_loader is not None:
                            last_val = evaluate(
                                pred, val_loader, device, amp_dtype=amp_dtype,
                                channels_last=channels_last,
                            )
                    last_test = dist_utils.broadcast_object(last_test)
                    last_val = dist_utils.broadcast_object(last_val)
                    record["test_acc"] = last_test
                    record["val_acc"] = last_val
                    task.train()
                epoch_time = epoch_time_before + (time.perf_counter() - t_epoch)
                record["epoch_time_s"] = round(epoch_time, 4)
                record["images_per_s"] = round(
                    epoch_images * dinfo.world_size / max(epoch_time, 1e-9), 1
                )
                record["wall_time_s"] = round(wall_before + time.perf_counter() - t_start, 3)
                improved = False
                if record.get("val_acc") is not None and (
                    best_val is None or record["val_acc"] > best_val
                ):
                    best_val, improved = record["val_acc"], True
                state.history.append(record)
                state.epoch += 1
                state.batch_in_epoch = 0
                epoch_sums, epoch_images, epoch_time_before = {}, 0, 0.0
                t_epoch = time.perf_counter()
                if main and run_dir is not None:
                    append_jsonl(run_dir / "metrics.jsonl", record)
                    if improved and train.save_best and ckpt_dir is not None:
                        save_checkpoint(ckpt_dir / "best.pt", checkpoint_state())
                save_last()
                tb.log(record)
                if not quiet and main and not show_bar:
                    _print_epoch(record, train.epochs)
    except RunDiverged as exc:
        status, diverged_step = "diverged", exc.step
        error = str(exc)
        if not quiet and main:
            print(f"supkd: run diverged: {exc}", file=sys.stderr)
    finally:
        tb.close()

    if status == "completed" and ema is not None:
        # The run's model is the averaged one (what was evaluated and reported).
        model.load_state_dict(ema.module.state_dict())
    return {
        "status": status,
        "test_acc": last_test if status == "completed" else None,
        "val_acc": last_val if status == "completed" else None,
        "best_val_acc": best_val,
        "diverged_step": diverged_step,
        "error": error,
        "epochs": state.epoch,
        "steps": state.step,
        "wall_time_s": round(wall_before + time.perf_counter() - t_start, 3),
    }


def signals_requested(signals: Any) -> str | None:
    return getattr(signals, "requested", None)


def _stop_check_due(step: int, epoch_end: bool, log_every: int, cuda: bool) -> bool:
    """Whether the DDP ranks combine their stop flags after optimizer step ``step``.

    Depends only on values every rank shares, so all ranks take part in the same
    all-reduces. CPU: every step (the read is free). CUDA: every ``log_every`` steps and at
    each epoch's end, so a stop request costs no extra host sync per step.
    """
    return not cuda or epoch_end or step % log_every == 0


def _rewrite_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    import json

    from supkd.utils.atomic import atomic_write_text

    text = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records)
    atomic_write_text(path, text)


def _print_epoch(record: dict[str, Any], epochs: int) -> None:
    parts = [f"epoch {record['epoch']}/{epochs}"]
    for k in ("train_loss", "test_acc", "val_acc"):
        v = record.get(k)
        if v is not None:
            parts.append(f"{k} {v:.4g}")
    parts.append(f"{record['images_per_s']:.0f} img/s")
    print("  ".join(parts), file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------
# run: a whole run from a config
# ---------------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    import numpy
    import torchvision

    from supkd import __version__

    return {
        "supkd": __version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
    }


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
    if rd.result_path.is_file():
        prior = rd.read_result()[0] or {}
        # "imported": a teacher brought in by `supkd import-teacher`; never retrained.
        if resume and prior.get("status") in ("completed", "diverged", "imported"):
            return ("done", prior)
        # A run that failed before its first checkpoint (a config error found while building
        # its data or task) produced nothing to protect: it starts afresh, with or without
        # --resume and with the corrected config, instead of blocking its directory.
        if prior.get("status") == "failed" and not rd.has_checkpoint():
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
    from supkd.data import build_data, make_loader
    from supkd.train.checks import load_run_config
    from supkd.train.tasks import build_task

    cfg = load_run_config(cfg)
    rd = RunDir(run_dir)
    run_dir = rd.path
    dinfo = dist_utils.init_distributed(cfg.device)
    device = dinfo.device
    main = dist_utils.is_main()

    outcome: tuple[str, Any] = ("go", None)
    if main:
        try:
            outcome = _prepare_run_dir(rd, cfg, resume)
        except UserError as exc:
            outcome = ("error", exc)
    # Only rank 0 looks at the directory, but every rank must take the same branch: a rank
    # left behind would wait in the next collective for one that has returned or raised.
    outcome = dist_utils.broadcast_object(outcome)
    if outcome[0] == "done":
        return outcome[1]
    if outcome[0] == "error":
        # Every rank leaves with the same error at about the same time: without this barrier
        # rank 0 can exit right after sending the broadcast, and torchrun then kills the
        # slower ranks before they print the message.
        dist_utils.barrier()
        raise outcome[1]

    seeds = expand_seed(cfg.seed)
    set_deterministic(cfg.deterministic)
    t0 = time.time()
    base = {
        "name": cfg.name,
        "task": cfg.task.name,
        "seed": cfg.seed,
        "seeds": {"init": seeds.init, "data": seeds.data, "augment": seeds.augment},
        "meta": dict(cfg.meta),
        "device": _device_name(device),
        "world_size": dinfo.world_size,
        "versions": _versions(),
        "metric": "top-1 accuracy (%) of the last epoch on the test split",
        "launcher": launcher_from_env(),  # where a grid launcher ran it (None: by hand)
    }

    def write_result(res: dict[str, Any]) -> dict[str, Any]:
        record = RunResult(
            status=res["status"],
            test_acc=res.get("test_acc"),
            val_acc=res.get("val_acc"),
            best_val_acc=res.get("best_val_acc"),
            diverged_step=res.get("diverged_step"),
            error=res.get("error"),
            epochs=res.get("epochs", 0),
            steps=res.get("steps", 0),
            wall_time_s=res.get("wall_time_s", round(time.time() - t0, 3)),
            **base,
        )
        return rd.write_result(record) if main else record.to_dict()

    try:
        seed_everything(seeds.init)
        bundle = build_data(cfg.data, seed=seeds.data)
        task = build_task(cfg, bundle, device)
        # Training-time randomness (anything a step draws from the global generators) gets
        # its own seed, independent of the initialization.
        seed_everything(seeds.augment)
        world = dinfo.world_size
        if cfg.train.batch_size % world:
            raise ConfigError(
                f"config field 'train.batch_size': expected a multiple of the {world} processes, "
                f"got {cfg.train.batch_size}"
            )
        loader_kw = _loader_kwargs(make_loader, cfg, seeds, dinfo)
        train_loader = make_loader(
            bundle,
            "train",
            cfg.train.batch_size // world,
            train=True,
            views=task.views,
            augment=task.augment,
            device=device,
            **loader_kw,
        )
        if len(train_loader) == 0:
            # Training keeps full batches only (equal batch statistics and, under DDP, equal
            # per-rank batches), so a split smaller than one batch gives an empty epoch.
            raise ConfigError(
                f"config field 'train.batch_size': {cfg.train.batch_size} is larger than the "
                f"training split ({len(bundle.train)} images; every step takes a full batch)"
            )
        eval_kw = {k: v for k, v in loader_kw.items() if k not in ("rank", "world_size")}
        test_loader = make_loader(
            bundle, "test", cfg.train.eval_batch_size, train=False, augment="none",
            device=device, **eval_kw,
        )
        val_loader = None
        if bundle.val is not None:
            val_loader = make_loader(
                bundle, "val", cfg.train.eval_batch_size, train=False, augment="none",
                device=device, **eval_kw,
            )
        res = fit(
            task,
            train_loader,
            train=cfg.train,
            optim=cfg.optim,
            schedule=cfg.schedule,
            device=device,
            test_loader=test_loader,
            val_loader=val_loader,
            run_dir=run_dir,
            resume=resume,
            quiet=quiet,
            callbacks=callbacks,
            checkpoint_extra={"config": cfg.to_dict()},
        )
        if dinfo.enabled:
            # Every rank's parameter hash (collective): the record shows that all ranks
            # ended with the weights rank 0 saves (tests/train/test_distributed_cli.py).
            base["replica_fingerprints"] = dist_utils.replica_fingerprints(task.model)
        if res["status"] == "completed" and main:
            final = task.model
            save_model(rd.model_path, final, task.model_info())
        return write_result(res)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:
        raise
    except UserError as exc:
        write_result({"status": "failed", "error": str(exc)})
        raise
    except Exception as exc:
        write_result({"status": "failed", "error": f"{type(exc).__name__}: {exc}"})
        raise


def _loader_kwargs(make_loader: Callable[..., Any], cfg: Config, seeds: Any, dinfo: Any) -> dict:
    """Keyword arguments ``make_loader`` accepts (data order, augmentation seed, sharding)."""
    import inspect

    params = inspect.signature(make_loader).parameters
    kw: dict[str, Any] = {"seed": seeds.data}
    optional = {
        "aug_seed": seeds.augment,
        "num_workers": cfg.data.num_workers,
        "gpu_resident": cfg.data.gpu_resident,
        "rank": dinfo.rank,
        "world_size": dinfo.world_size,
    }
    for k, v in optional.items():
        if k in params:
            kw[k] = v
    return kw



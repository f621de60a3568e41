"""The training loop: one small object, :class:`TrainLoop`, for every task.

The loop knows no task, loss or method names: it calls ``task(batch)`` for
``{"loss": ..., parts...}``, back-propagates the loss, steps the optimizer and scheduler,
logs the mean of every part per epoch and evaluates ``task.predict``. It calls only the
:class:`~supkd.train.tasks.Task` interface. Its phases are methods, in the order they run:
:meth:`~TrainLoop.setup`, :meth:`~TrainLoop.resume`, :meth:`~TrainLoop.compile`, then
:meth:`~TrainLoop.run` over :meth:`~TrainLoop.epoch` (each :meth:`~TrainLoop.step`, then
:meth:`~TrainLoop.evaluate` and :meth:`~TrainLoop.end_epoch`), with
:meth:`~TrainLoop.checkpoint_state` / :meth:`~TrainLoop.save_last` and
:meth:`~TrainLoop.stop_reason` for checkpoints and stop requests.
``supkd.train.engine.fit`` is the function form.

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
- the loss parts are consumed inside their step: ``meters.sums`` holds new tensors (a
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

Interruption: SIGINT (Ctrl-C) or SIGTERM during training lets the current step finish,
writes ``checkpoints/last.pt`` (mid-epoch position included) and raises
:class:`TrainingInterrupted` (a ``KeyboardInterrupt``; the CLI exits 130); ``--resume``
continues from there. A second signal exits at once (:mod:`supkd.train.signals`). Under DDP
the ranks combine their stop flags (an all-reduce max; every step on CPU, every
``log_every`` steps and at epoch ends on CUDA), so all ranks stop after the same step even
when the signal reached only one of them.

Resume is exact: the checkpoint holds model, optimizer, scheduler, scaler, EMA, task state,
every RNG state and the position inside the epoch; loaders draw each epoch's order and
augmentations from ``(seed, epoch)``, so the resumed run replays the same batches (those
already done in the interrupted epoch are drawn and skipped). On CPU with
``deterministic: true`` the final weights are bit-identical to an uninterrupted run
(tests/train/test_resume.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from supkd.config import TrainConfig
from supkd.errors import CheckpointError, ConfigError, RunDiverged
from supkd.models import as_model_output
from supkd.models.files import cpu_state_dict
from supkd.train import distributed as dist_utils
from supkd.train.checkpoint import TrainCheckpoint, read_checkpoint, save_checkpoint
from supkd.train.evaluation import evaluate, to_batch
from supkd.train.loggers import TensorBoardLogger, WandbLogger, print_epoch, progress_bar
from supkd.train.optim import build_optimizer, build_scheduler
from supkd.train.options import FitOptions, TrainState
from supkd.train.run_dir import RunDir, RunResult
from supkd.train.seeding import rng_state, set_rng_state
from supkd.train.signals import StopSignals, stop_check_due
from supkd.train.tasks.base import Task
from supkd.vocab import RunStatus

__all__ = [
    "COMPILE_AUTO_MIN_STEPS",
    "CUDAGRAPH_COMPILE_MODES",
    "EpochMeters",
    "FitOptions",
    "Scores",
    "TrainLoop",
    "TrainState",
    "Trained",
    "TrainingInterrupted",
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
class Trained:
    """The objects the loop trains, built by :meth:`TrainLoop.setup`: the task's model, its
    trainable parameters, their optimizer and scheduler, the fp16 gradient scaler and the
    EMA copy (None when the run has none)."""

    model: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None
    ema: AveragedModel | None = None


@dataclass
class EpochMeters:
    """The current epoch's meters: each loss part's sum (on the device), the images seen,
    and its time (seconds before a resume, plus the time since ``started``)."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    images: int = 0
    time_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self, now: float) -> float:
        return self.time_before + (now - self.started)


@dataclass
class Scores:
    """Accuracies (%) so far: the best validation accuracy, the last test and val ones;
    and the wall time of the runs before a resume plus this process's start."""

    best_val: float | None = None
    test: float | None = None
    val: float | None = None
    wall_before: float = 0.0
    started: float = field(default_factory=time.perf_counter)

    def wall_time(self, now: float) -> float:
        return self.wall_before + (now - self.started)


def amp_dtype_for(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device`` (None: no autocast)."""
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    if mode == "fp16":
        return torch.float16
    if mode == "auto" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def steps_per_epoch(train_loader: Iterable[Any], train: TrainConfig) -> int:
    """Optimizer steps per epoch: ``len(train_loader)``, capped by ``train.steps_per_epoch``."""
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
    return n_batches


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


class TrainLoop:
    """Trains ``task`` on ``train_loader`` for ``train.epochs`` epochs (see the module
    docstring; the arguments are :func:`supkd.train.engine.fit`'s: a :class:`FitOptions`
    and/or its fields as keywords). Use it once: ``TrainLoop(task, loader, opts).fit()``
    returns the :class:`~supkd.train.run_dir.RunResult`.

    Its state: ``opts`` (what it was given), ``trained`` (:class:`Trained`, the objects it
    trains, built by :meth:`setup`), ``state`` (:class:`TrainState`, the position),
    ``meters`` (:class:`EpochMeters`, the epoch in progress), ``scores``
    (:class:`Scores`, accuracies and wall time), and the device settings :meth:`setup`
    and :meth:`compile` choose."""

    def __init__(
        self,
        task: Task,
        train_loader: Iterable[Any],
        options: FitOptions | None = None,
        **overrides: Any,
    ) -> None:
        if not isinstance(task, Task):
            raise TypeError(
                f"fit: expected a supkd.train.tasks.Task, got {type(task).__name__}; wrap a "
                "plain model with supkd.train.train_classifier or supkd.train.distill, or "
                "subclass Task"
            )
        self.opts = opts = FitOptions.of(options, overrides)
        self.task, self.train_loader = task, train_loader
        self.train: TrainConfig = opts.train
        self.device = torch.device(opts.device)
        self.rd = RunDir(opts.run_dir) if opts.run_dir is not None else None
        self.dinfo = dist_utils.info()
        self.main = dist_utils.is_main()
        self.signals = StopSignals(opts.quiet, install=opts.handle_signals)
        # What a checkpoint holds beyond the objects built in setup(); resume() reloads it.
        self.state = TrainState()
        self.scores = Scores()
        self.meters = EpochMeters()

    def fit(self, resume: bool | None = None) -> RunResult:
        """All phases: set up, resume (when asked, by ``resume`` or else the options, and
        a checkpoint exists), compile, train."""
        self.setup()
        if self.opts.resume if resume is None else resume:
            self.resume()
        self.compile()
        return self.run()

    # --- setup ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Device, autocast, memory format; optimizer, scheduler, scaler, EMA."""
        device, train, task = self.device, self.train, self.task
        self.cuda = cuda = device.type == "cuda"
        self.amp_dtype = amp_dtype_for(train.amp, device)
        self.channels_last = train.channels_last == "on" or (train.channels_last == "auto" and cuda)
        if cuda and not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        task.to(device)
        model: nn.Module = task.model
        if self.channels_last:
            task.to(memory_format=torch.channels_last)
        self.steps_per_epoch = steps_per_epoch(self.train_loader, train)
        params = task.trainable_parameters()
        optimizer = build_optimizer(params, self.opts.optim, device)
        scheduler = build_scheduler(optimizer, self.opts.schedule, self.steps_per_epoch,
                                    train.epochs)
        fp16 = self.amp_dtype == torch.float16 and cuda
        self.trained = Trained(model, params, optimizer, scheduler,
                               torch.amp.GradScaler("cuda") if fp16 else None)
        if train.ema_decay is not None:
            ema = AveragedModel(
                model, multi_avg_fn=get_ema_multi_avg_fn(train.ema_decay), use_buffers=True
            )
            ema.eval()  # only ever evaluated; update_parameters ignores the mode
            self.trained.ema = ema

    def compile(self) -> None:
        """``torch.compile`` on request, the DDP wrapper, and the step's device counters."""
        train, cuda = self.train, self.cuda
        total_steps = self.steps_per_epoch * train.epochs
        compile_on = train.compile == "on" or (
            train.compile == "auto" and cuda and total_steps >= COMPILE_AUTO_MIN_STEPS
        )
        # CUDA-graph modes replay recorded graphs whose outputs live in a pool that the next
        # replay overwrites; the loop then marks every step and evaluation batch as a new
        # iteration (see the module docstring). CPU has no CUDA graphs: inductor ignores them.
        self.cudagraphs = compile_on and cuda and train.compile_mode in CUDAGRAPH_COMPILE_MODES
        if compile_on:
            for net in self.task.networks():
                net.compile(mode=train.compile_mode)
        self.step_module = (
            dist_utils.wrap_ddp(self.task, self.dinfo) if self.dinfo.enabled else self.task
        )
        self.check_every_step = not cuda  # see the module docstring: the divergence guard
        self.first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        self.step_counter = torch.full((), self.state.step, dtype=torch.long, device=self.device)
        self.tb = TensorBoardLogger(
            self.rd.tensorboard if self.rd is not None else None,
            train.tensorboard and self.main,
        )
        # The resolved run config when run() passed it, else the loop's own sections.
        opts = self.opts
        config = opts.checkpoint_extra.get("config") or {
            "train": train.to_dict(), "optim": opts.optim.to_dict(),
            "schedule": opts.schedule.to_dict(),
        }
        self.wb = WandbLogger(
            train.wandb,
            self.rd.wandb if self.rd is not None else None,
            config=config,
            name=config.get("name") if isinstance(config.get("name"), str) else None,
            enabled=self.main,
        )
        self.show_bar = self.main and not opts.quiet and train.progress and sys.stdout.isatty()
        self.scores.started = time.perf_counter()

    # --- resume -----------------------------------------------------------------------------

    def resume(self) -> None:
        """Continue from ``checkpoints/last.pt`` when the run directory has one."""
        if self.rd is None or not self.rd.last_checkpoint.is_file():
            return
        path = self.rd.last_checkpoint
        ck = read_checkpoint(path)
        self._load_objects(ck, path)
        state = self.state
        state.epoch, state.step, state.batch_in_epoch = ck.epoch, ck.step, ck.batch_in_epoch
        self.scores = Scores(ck.best_val_acc, ck.test_acc, ck.val_acc,
                             wall_before=float(ck.wall_time_s), started=self.scores.started)
        self.meters = EpochMeters({k: v.to(self.device) for k, v in ck.epoch_sums.items()},
                                  int(ck.epoch_images), float(ck.epoch_time_s))
        set_rng_state(ck.rng)
        if self.main:
            # Lines written after this checkpoint (a kill between metrics and checkpoint
            # writes) would be written again: drop them.
            history = self.rd.read_metrics()
            state.history = [r for r in history if r.get("epoch", 0) <= state.epoch]
            self.rd.rewrite_metrics(state.history)
        if self.main and not self.opts.quiet:
            total = self.steps_per_epoch * self.train.epochs
            print(f"supkd: resuming {self.rd.path} from {path.name} at step {state.step} of "
                  f"{total} (epoch {state.epoch + 1}/{self.train.epochs}, batch "
                  f"{state.batch_in_epoch}/{self.steps_per_epoch})", file=sys.stderr)

    def _load_objects(self, ck: TrainCheckpoint, path: Path) -> None:
        """Model, task state, optimizer, scheduler, scaler and EMA from checkpoint ``ck``."""
        t = self.trained
        try:
            t.model.load_state_dict(ck.model)
            self.task.load_extra_state(ck.task_state or {})
            t.optimizer.load_state_dict(ck.optimizer)
            t.scheduler.load_state_dict(ck.scheduler)
            if t.scaler is not None and ck.scaler:
                t.scaler.load_state_dict(ck.scaler)
            if t.ema is not None:
                if ck.ema is None:
                    raise CheckpointError(f"checkpoint {path}: has no EMA weights")
                t.ema.load_state_dict(ck.ema)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(
                f"checkpoint {path}: does not match this run ({str(exc).splitlines()[0]})"
            ) from None

    # --- the whole run ----------------------------------------------------------------------

    def run(self) -> RunResult:
        """Train the remaining epochs; the result (a diverged run returns, not raises)."""
        status, diverged_step, error = RunStatus.COMPLETED, None, None
        self.meters.started = time.perf_counter()
        finished = False
        try:
            with self.signals:
                while self.state.epoch < self.train.epochs:
                    self.epoch()
            finished = True
        except RunDiverged as exc:
            status, diverged_step = RunStatus.DIVERGED, exc.step
            error = str(exc)
            if not self.opts.quiet and self.main:
                print(f"supkd: run diverged: {exc}", file=sys.stderr)
        finally:
            self.tb.close()
            self.wb.close(ok=finished)
        t = self.trained
        if status is RunStatus.COMPLETED and t.ema is not None:
            # The run's model is the averaged one (what was evaluated and reported).
            t.model.load_state_dict(t.ema.module.state_dict())
        done, scores = status is RunStatus.COMPLETED, self.scores
        return RunResult(
            status=status,
            test_acc=scores.test if done else None,
            val_acc=scores.val if done else None,
            best_val_acc=scores.best_val,
            diverged_step=diverged_step,
            error=error,
            epochs=self.state.epoch,
            steps=self.state.step,
            wall_time_s=round(scores.wall_time(time.perf_counter()), 3),
        )

    # --- one epoch --------------------------------------------------------------------------

    def epoch(self) -> None:
        """The rest of the current epoch's steps, then its evaluation and record."""
        state, train = self.state, self.train
        epoch = state.epoch
        self.meters.started = time.perf_counter()
        if hasattr(self.train_loader, "set_epoch"):  # optional: loaders seeded per epoch
            self.train_loader.set_epoch(epoch)
        self.task.train()
        bar = progress_bar(self.steps_per_epoch, f"epoch {epoch + 1}/{train.epochs}", self.show_bar)
        it = iter(self.train_loader)
        # Resumed mid-epoch: draw and drop the batches already trained on, so the rest of
        # the epoch sees exactly the batches an uninterrupted run sees.
        for _ in range(state.batch_in_epoch):
            next(it)
        if bar is not None:
            bar.update(state.batch_in_epoch)
        loss = torch.zeros((), device=self.device)
        while state.batch_in_epoch < self.steps_per_epoch:
            try:
                obj = next(it)
            except StopIteration:
                break
            loss = self.step(obj)
            self.after_step(loss, bar)
        if bar is not None:
            bar.close()
        if not self.check_every_step:
            self._check_diverged(loss)
        if self.cudagraphs:
            # The last step's gradients live in the CUDA-graph pool that evaluation replays
            # will reuse; nothing reads them before the next step drops them.
            self.trained.optimizer.zero_grad(set_to_none=True)
        record = self.epoch_record(epoch)
        self.evaluate(epoch, record)
        self.end_epoch(record)

    # --- one step ---------------------------------------------------------------------------

    def step(self, obj: Any) -> torch.Tensor:
        """One optimizer step on what the loader yielded; returns the loss (on the device)."""
        # Gradients are dropped before the forward (not just before backward): under CUDA
        # graphs they are outputs of the previous step's recorded backward, and no reference
        # to them may survive into a new iteration.
        t = self.trained
        t.optimizer.zero_grad(set_to_none=True)
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        batch = to_batch(obj, self.device, self.channels_last)
        state = self.state
        self.task.set_progress(state.epoch + (state.batch_in_epoch + 1) / self.steps_per_epoch)
        amp = self.amp_dtype
        with torch.autocast(self.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            parts = self.step_module(batch)
        loss = parts["loss"]
        self._guard(loss)
        self._backward(loss)
        t.scheduler.step()
        if t.ema is not None:
            t.ema.update_parameters(t.model)
        # Both branches make a new tensor (``+`` or clone; ``.float()`` of a float32 tensor
        # is the tensor itself), so no part is referenced past its step: a CUDA-graph replay
        # may overwrite a compiled output then.
        sums = self.meters.sums
        for k, v in parts.items():
            v = v.detach().float()
            sums[k] = sums[k] + v if k in sums else v.clone()
        self.meters.images += int(batch.y.shape[0])
        return loss

    def _guard(self, loss: torch.Tensor) -> None:
        """The divergence guard before backward (module docstring): on CPU a host check now;
        on CUDA the first bad step is recorded on the device and read later."""
        finite = torch.isfinite(loss.detach())
        if self.check_every_step:
            ok = finite.float()
            if self.dinfo.enabled:
                ok = dist_utils.all_reduce_sum(ok) / self.dinfo.world_size
            if float(ok.item()) < 1.0:
                raise RunDiverged(self.state.step + 1, float(loss.detach().item()))
        else:
            self.first_bad = torch.where(
                (~finite) & (self.first_bad < 0), self.step_counter, self.first_bad
            )

    def _backward(self, loss: torch.Tensor) -> None:
        """Backward, optional gradient clipping, optimizer step (through the fp16 scaler)."""
        clip, t = self.train.grad_clip, self.trained
        if t.scaler is not None:
            t.scaler.scale(loss).backward()
            if clip is not None:
                t.scaler.unscale_(t.optimizer)
                nn.utils.clip_grad_norm_(t.params, clip)
            t.scaler.step(t.optimizer)
            t.scaler.update()
        else:
            loss.backward()
            if clip is not None:
                nn.utils.clip_grad_norm_(t.params, clip)
            t.optimizer.step()

    def after_step(self, loss: torch.Tensor, bar: Any) -> None:
        """Counters, periodic reads, callbacks, stop requests and step checkpoints."""
        state, train = self.state, self.train
        state.step += 1
        state.batch_in_epoch += 1
        self.step_counter += 1
        if bar is not None:
            bar.update(1)
        if state.step % train.log_every == 0:
            if not self.check_every_step:
                self._check_diverged(loss)
            if bar is not None:
                bar.set_postfix(loss=f"{float(loss.detach().item()):.4f}")
        for cb in self.opts.callbacks:
            cb(state)
        reason = self.stop_reason(state.batch_in_epoch == self.steps_per_epoch)
        if reason is not None:
            path = self.save_last()
            raise TrainingInterrupted(state.step, path, reason)
        if train.checkpoint_every_steps and state.step % train.checkpoint_every_steps == 0:
            self.save_last()

    def _check_diverged(self, loss: torch.Tensor) -> None:
        # One host read: the first non-finite step recorded on the device.
        bad = self.first_bad
        if self.dinfo.enabled:
            # Every rank must stop together; the earliest bad step over ranks is recorded.
            never = torch.full_like(bad, 1 << 62)
            earliest = dist_utils.all_reduce_min(torch.where(bad < 0, never, bad))
            bad = torch.where(earliest == never, torch.full_like(bad, -1), earliest)
        k = int(bad.item())
        if k >= 0:
            raise RunDiverged(k + 1, float(loss.detach().float().item()))

    # --- end of epoch: record, evaluation, checkpoints ----------------------------------------

    def epoch_record(self, epoch: int) -> dict[str, Any]:
        """The epoch's metrics line: position, learning rate and every part's mean."""
        n_steps = max(self.state.batch_in_epoch, 1)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.state.step,
            "lr": float(self.trained.scheduler.get_last_lr()[0]),
        }
        for k, v in self.meters.sums.items():
            mean = v / n_steps
            if self.dinfo.enabled:
                mean = dist_utils.all_reduce_mean(mean)
            record[f"train_{k}"] = float(mean.item())
        return record

    def evaluate(self, epoch: int, record: dict[str, Any]) -> None:
        """Test/val accuracy every ``eval_every`` epochs and after the last one (rank 0
        evaluates, every rank gets the values), into ``record``."""
        last_epoch = epoch + 1 == self.train.epochs
        due = (epoch + 1) % self.train.eval_every == 0 or last_epoch
        if not (self.task.has_classifier and due):
            return
        self.task.eval()
        scores, opts = self.scores, self.opts
        if self.main:
            pred = self._predict_fn()
            kw = {"amp_dtype": self.amp_dtype, "channels_last": self.channels_last}
            if opts.test_loader is not None:
                scores.test = evaluate(pred, opts.test_loader, self.device, **kw)
            if opts.val_loader is not None:
                scores.val = evaluate(pred, opts.val_loader, self.device, **kw)
        scores.test = dist_utils.broadcast_object(scores.test)
        scores.val = dist_utils.broadcast_object(scores.val)
        record["test_acc"] = scores.test
        record["val_acc"] = scores.val
        self.task.train()

    def _predict_fn(self) -> Callable[[torch.Tensor], torch.Tensor]:
        if self.trained.ema is not None:
            ema = self.trained.ema
            return lambda x: as_model_output(ema.module(x)).logits
        if self.cudagraphs:
            return _new_cudagraph_step_each_call(self.task.predict)
        return self.task.predict

    def end_epoch(self, record: dict[str, Any]) -> None:
        """Timings and best accuracy into ``record``; the next epoch's counters; the metrics
        line, ``best.pt`` (on a new best) and ``last.pt`` written; the loggers told."""
        state, scores, now = self.state, self.scores, time.perf_counter()
        epoch_time = self.meters.elapsed(now)
        record["epoch_time_s"] = round(epoch_time, 4)
        record["images_per_s"] = round(
            self.meters.images * self.dinfo.world_size / max(epoch_time, 1e-9), 1
        )
        record["wall_time_s"] = round(scores.wall_time(now), 3)
        improved = False
        if record.get("val_acc") is not None and (
            scores.best_val is None or record["val_acc"] > scores.best_val
        ):
            scores.best_val, improved = record["val_acc"], True
        state.history.append(record)
        state.epoch += 1
        state.batch_in_epoch = 0
        self.meters = EpochMeters()
        if self.main and self.rd is not None:
            self.rd.append_metrics(record)
            if improved and self.train.save_best:
                save_checkpoint(self.rd.best_checkpoint, self.checkpoint_state())
        self.save_last()
        self.tb.log(record)
        self.wb.log(record)
        if not self.opts.quiet and self.main and not self.show_bar:
            print_epoch(record, self.train.epochs)

    # --- checkpoints ------------------------------------------------------------------------

    def checkpoint_state(self) -> TrainCheckpoint:
        """Everything a resumed run needs to continue exactly (module docstring: resume)."""
        now, t, scores, meters = time.perf_counter(), self.trained, self.scores, self.meters
        return TrainCheckpoint(
            model=cpu_state_dict(t.model),
            spec=getattr(t.model, "spec", None),  # supkd models carry one; others not
            info=self.task.model_info(),
            task_state=self.task.extra_state(),
            optimizer=t.optimizer.state_dict(),
            scheduler=t.scheduler.state_dict(),
            scaler=t.scaler.state_dict() if t.scaler is not None else None,
            ema=t.ema.state_dict() if t.ema is not None else None,
            rng=rng_state(),
            epoch=self.state.epoch,
            step=self.state.step,
            batch_in_epoch=self.state.batch_in_epoch,
            epoch_sums={k: v.detach().cpu() for k, v in meters.sums.items()},
            epoch_images=meters.images,
            epoch_time_s=meters.elapsed(now),
            best_val_acc=scores.best_val,
            test_acc=scores.test,
            val_acc=scores.val,
            wall_time_s=scores.wall_time(now),
            extra=dict(self.opts.checkpoint_extra),
        )

    def save_last(self) -> Path | None:
        """Write ``checkpoints/last.pt`` (rank 0 of a run with a directory); its path."""
        if self.rd is None or not self.main:
            return None
        return save_checkpoint(self.rd.last_checkpoint, self.checkpoint_state())

    # --- stop requests ----------------------------------------------------------------------

    def stop_reason(self, epoch_end: bool) -> str | None:
        """Why to stop after this step (signal or callback), or None; the same on every rank.

        Under DDP a signal reaches the ranks at different steps (or only one rank), and a
        rank that left alone would leave the others waiting in the next all-reduce. So the
        flag is combined over ranks (max), at steps every rank agrees on: every step on
        CPU; on CUDA, where the read is a host sync, every ``log_every`` steps and at each
        epoch's end (which synchronizes anyway).
        """
        local = self.signals.requested or ("stopped by a callback" if self.state.stop else None)
        if not self.dinfo.enabled:
            return local
        if not stop_check_due(self.state.step, epoch_end, self.train.log_every, self.cuda):
            return None
        flag = torch.full((), 1.0 if local else 0.0, device=self.device)
        if float(dist_utils.all_reduce_max(flag).item()) > 0:
            return local or "stop requested on another rank"
        return None

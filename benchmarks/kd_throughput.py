"""KD and SupCon training throughput: the public-code-style loop vs supkd's fast path.

In one process, on the same data and models (ResNet-50 teacher -> ResNet-18 student, CIFAR
32×32, ``supkd.models.create_model``), measures images/s of

(a) the reference loop written the way public KD code does it: fp32, PIL transforms
    (RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize) in DataLoader
    workers, Hinton KD (T = 4) with ``loss.item()`` every step;
(b) supkd's distill step for every KD loss in ``supkd.losses.LOSSES``: uint8 data resident on
    the device with batched crop+flip there, bf16 autocast + channels_last + torch.compile on
    CUDA, fused SGD, no host synchronization inside the step;
    plus the teacher forward alone, the student's CE step alone and the KD step with the exact
    teacher cache (``supkd.train.teacher_cache``);
and the same for SupCon pre-training of the ResNet-50 (two views): PIL views in workers vs
device-side augmentation.

Each row gives images/s, the ratio to the reference loop (same batch size, and batch 64 as in
the issue's target), FLOPs per image (``torch.utils.flop_counter``) and the share of the
matmul peak measured in the same run (bf16 on CUDA, fp32 on CPU).

Also on CUDA:
- the compile break-even: the student's CE step at ``--breakeven-batch`` (512) eager, then
  compiled (the process's first compilation; with ``--compile-cache fresh``, the default,
  inductor's caches start empty as on a fresh machine), then compiled again after a Dynamo
  reset (inductor's on-disk caches warm, as for every later run of a grid on one machine).
  The report gives each compile overhead / (eager step time - compiled step time) in
  optimizer steps: the measurement that ``supkd.train.engine.COMPILE_AUTO_MIN_STEPS`` (a
  guess of 5,000) awaits;
- large-batch rows: distill ``hinton_kl`` / ``supcon_kd`` and the teacher-cache step at
  ``--large-batch`` (1024), the SupCon step at ``--supcon-large-batch`` (512) as well as at
  ``--supcon-batch`` (256, the reference's batch);
- ``--compile-mode MODE`` compiles every supkd row with that ``torch.compile`` mode
  (``train.compile_mode``); ``--also-mode MODE`` (e.g. ``reduce-overhead``) adds the student
  CE, distill ``hinton_kl`` and teacher-cache rows at the break-even batch in that mode.
On CPU the supkd rows run eager (``--cpu-compile`` compiles them, to try the CUDA code path),
so the break-even and ``--also-mode`` rows are listed as skipped; the large-batch rows run
at twice the largest batch (``--quick``: 32 and 16).

The rows are data: ``ROWS`` lists one ``RowSpec`` per kind of row (what it measures, its
label, the FLOPs it counts, the stages it runs at) and ``STAGES`` the run order with each
stage's batches. A new row, e.g. a feature-distillation step, is one ``RowSpec`` entry; a new
KD loss in ``supkd.losses.LOSSES`` needs none (the ``supkd distill: {loss}`` rows cover
``--losses``, which defaults to every registered loss).

Rows run in priority order (the targets of issue #7 first, the batch-256 rows last) so that
a time limit (SIGTERM: the table of the rows done so far is printed) costs the least useful
ones; the table lists them by section and batch. Each network gets static-shape graphs per
batch size, as a run of one batch size does (``automatic_dynamic_shapes`` off).

    python benchmarks/kd_throughput.py --device cpu --quick
    python benchmarks/kd_throughput.py --device cuda --out kd.md
    python benchmarks/kd_throughput.py --device cuda --also-mode reduce-overhead

CUDA time: the H200 run of 2026-11-26 (30 timed + 5 warm-up steps, 2 rounds, no break-even,
batch-1024, SupCon-512 or reduce-overhead rows) took about 230 s, nearly all of it
compilation (warm-up column: 10-50 s for each new network or batch size, under 1 s when
cached). The defaults now time 20 steps after 3 warm-up steps, in the warm-up call and one
more round (timing is about 10% of the total); with the added rows (about 17 s for a fresh
student compile, 40 s for the SupCon ResNet-50 at its second batch, 35 s for the
reduce-overhead rows) the estimate is about 4 minutes with ``--also-mode reduce-overhead``.
"""

from __future__ import annotations

import argparse
import sys
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    CIFAR_MEAN,
    CIFAR_STD,
    count_flops,
    environment,
    fmt_rate,
    load_train_images,
    markdown_table,
    measure_peak_flops,
    sync,
    time_steps,
    write_output,
)
from supkd.config import TrainConfig
from supkd.data import DataBundle
from supkd.losses import LOSSES, SupConLoss
from supkd.models import create_model
from supkd.train.engine import COMPILE_AUTO_MIN_STEPS, CUDAGRAPH_COMPILE_MODES
from supkd.train.teacher_cache import (
    TeacherCache,
    build_cache_table,
)

#: The pad of the small (CIFAR) style's random crop: supkd's DataBundle default.
PAD = DataBundle.__dataclass_fields__["pad"].default
#: ``train.compile_mode`` values (``torch.compile`` modes).
COMPILE_MODES = typing.get_args(typing.get_type_hints(TrainConfig)["compile_mode"])


# ---------------------------------------------------------------------------------------------
# (a) reference: the way public KD / SupCon code is written


class PILDataset(torch.utils.data.Dataset):
    """CIFAR-style data set: numpy HWC uint8 -> PIL image -> torchvision transform (as in
    torchvision.datasets.CIFAR10, which public KD and SupCon code uses)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.data = images.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


class TwoCrop:
    """Two independent augmentations of one image (SupContrast's TwoCropTransform)."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, img):
        return [self.transform(img), self.transform(img)]


def kd_transform():
    import torchvision.transforms as T

    return T.Compose(
        [
            T.RandomCrop(32, padding=PAD),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )


def supcon_transform():
    """SupContrast's CIFAR pre-training augmentation (docs/design.md §5)."""
    import torchvision.transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(32, scale=(0.2, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
            T.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )


def endless(loader) -> Iterator:
    while True:
        yield from loader


def make_reference_loader(images, labels, transform, batch, workers, device):
    ds = PILDataset(images, labels, transform)
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
    )
    return endless(loader)


def reference_kd_step(teacher, student, opt, it, device, alpha=1.0, T=4.0) -> Callable[[], None]:
    def step() -> None:
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.no_grad():
            t = teacher(x).logits
        s = student(x).logits
        # Hinton et al. (2015) KD as in public code: KL(p_t^T || p_s^T) * T^2, batchmean
        kd = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
        loss = F.cross_entropy(s, y) + alpha * kd * T * T
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()  # public loops log the running loss every step (a host sync)

    return step


def reference_supcon_step(model, opt, it, device, loss_fn) -> Callable[[], None]:
    def step() -> None:
        (v1, v2), y = next(it)
        x = torch.cat([v1, v2]).to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        B = y.shape[0]
        z = F.normalize(model(x).projection, dim=1)
        features = torch.stack(torch.split(z, [B, B]), dim=1)  # (B, 2, D)
        loss = loss_fn(features, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss.item()

    return step


# ---------------------------------------------------------------------------------------------
# (b) supkd: the library's own loader, tasks, optimizer and training loop (supkd.train.fit)


def tensor_bundle(images: torch.Tensor, labels: torch.Tensor):
    """A supkd DataBundle over in-memory uint8 CIFAR images (pad 4, small style)."""
    from supkd.data import DataBundle, TensorImageDataset

    ds = TensorImageDataset(images, labels, [str(i) for i in range(10)])
    return DataBundle(
        name="cifar10-bench",
        train=ds,
        val=None,
        test=ds,
        num_classes=10,
        classes=ds.classes,
        image_size=32,
        mean=CIFAR_MEAN,
        std=CIFAR_STD,
        in_channels=3,
        pad=PAD,
    )


def fit_measure(
    task, bundle, batch, device, *, warmup, steps, compile_on, compile_mode="default", lr=0.05
):
    """One call of supkd's engine (``supkd.train.fit``) for ``warmup + steps`` steps on the
    GPU-resident loader; returns a callable giving seconds per step of the last ``steps``.

    A step callback synchronizes the device at the two marks, so the time is exactly that of
    the engine's loop (data, autocast, task step, backward, fused optimizer, scheduler, its
    periodic loss reads), without set-up, compilation (in the warm-up) or the epoch's end.
    ``measure.first_steps`` collects, per call, the seconds until its first step ended.
    """
    from supkd.config import OptimConfig, ScheduleConfig, TrainConfig
    from supkd.data import make_loader
    from supkd.train.engine import fit

    loader = make_loader(
        bundle,
        "train",
        batch,
        train=True,
        views=task.views,
        augment=task.augment,
        device=device,
        seed=0,
        num_workers=0,
        gpu_resident="on",
    )
    if len(loader) < warmup + steps:
        raise ValueError(f"need {warmup + steps} batches of {batch}, data has {len(loader)}")
    cfg = TrainConfig(
        epochs=1,
        batch_size=batch,
        steps_per_epoch=warmup + steps,
        progress=False,
        compile="on" if compile_on else "off",
        compile_mode=compile_mode,
    )
    optim = OptimConfig(lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def measure() -> float:
        marks: dict[int, float] = {}

        def mark(state) -> None:
            if state.step in (1, warmup, warmup + steps):
                sync(device)
                marks[state.step] = time.perf_counter()

        loader.set_epoch(0)
        sync(device)
        t_fit = time.perf_counter()
        fit(
            task,
            loader,
            train=cfg,
            optim=optim,
            schedule=ScheduleConfig(name="constant"),
            device=device,
            quiet=True,
            callbacks=[mark],
            handle_signals=False,
        )
        measure.first_steps.append(marks[1] - t_fit)
        return (marks[warmup + steps] - marks[warmup]) / steps

    # Seconds from each fit() call to the end of its first step (set-up, compilation when
    # the graphs are not cached, cuDNN autotuning, the step): less one normal step, the
    # first call's value is the row's one-time cost.
    measure.first_steps = []
    return measure


def teacher_forward_measure(
    teacher, bundle, batch, device, *, warmup, steps, fast: bool, compile_mode="default"
):
    """Teacher forward alone on the loader's batches (bf16 + channels_last + compile on CUDA).

    Under a CUDA-graph mode each call is marked as a new iteration, as the engine does."""
    from supkd.data import make_loader

    loader = make_loader(
        bundle, "train", batch, train=True, device=device, seed=0, num_workers=0, gpu_resident="on"
    )
    fwd = torch.compile(teacher, dynamic=False, mode=compile_mode) if fast else teacher
    graphs = fast and compile_mode in CUDAGRAPH_COMPILE_MODES
    batches = [b.x for _, b in zip(range(4), loader)]
    if fast:
        batches = [x.contiguous(memory_format=torch.channels_last) for x in batches]

    def run(n: int) -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            for i in range(n):
                if graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                fwd(batches[i % len(batches)])

    run(warmup)

    def measure() -> float:
        return time_steps(lambda: run(1), steps, 0, device)[0]

    return measure


# ---------------------------------------------------------------------------------------------
# FLOPs per image (eager model, counted once per architecture)


def flops_per_image(model: nn.Module, device, train: bool, batch: int = 2) -> float:
    x = torch.randn(batch, 3, 32, 32, device=device)
    was = model.training
    model.train(train)

    def run():
        if train:
            out = model(x)
            (
                out.logits.float().sum() + (0 if out.projection is None else out.projection.sum())
            ).backward()
        else:
            with torch.no_grad():
                model(x)

    f = count_flops(run)
    model.zero_grad(set_to_none=True)
    model.train(was)
    return f / batch


# ---------------------------------------------------------------------------------------------


@dataclass
@dataclass
class Row:
    group: str
    name: str
    batch: int
    flops: float  # per image
    note: str = ""
    rate: float = float("nan")
    warmup_s: float = float("nan")
    # Table position: rows run in priority order (so a time limit loses the least useful
    # ones) but are listed by section, then batch. 0 reference, 1 eager baseline, 2 supkd
    # steps, 3 teacher cache, 4 --also-mode rows.
    section: int = 2


def _copy_of(net: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
    """A fresh, uncompiled ``build()`` with ``net``'s weights (``net.compile`` works in place,
    so a row that needs the teacher compiled in another mode gets its own copy)."""
    copy = build().eval()
    copy.load_state_dict(net.state_dict())
    return copy


def _raise_dynamo_limits() -> None:
    # Every (module, batch size) pair is a graph of its own; the default recompile limit (8)
    # would silently send later rows back to eager mode.
    import torch._dynamo.config as dcfg

    # A training run uses one batch size, so its graphs are static. Without this, a
    # network's second batch size here would turn it into one dynamic-shape graph that the
    # later rows reuse, which is not what a run of that batch size executes.
    dcfg.automatic_dynamic_shapes = False
    for name, value in (
        ("cache_size_limit", 256),
        ("recompile_limit", 256),
        ("accumulated_cache_size_limit", 4096),
        ("accumulated_recompile_limit", 4096),
    ):
        if hasattr(dcfg, name):
            setattr(dcfg, name, value)


def _timing_rounds(measures, repeats: int, best: dict[int, float]) -> None:
    for rnd in range(repeats):
        for row, measure in measures:
            try:
                per_step = measure()
            except Exception as exc:
                row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
                continue
            best[id(row)] = min(best.get(id(row), float("inf")), per_step)
            row.rate = row.batch / best[id(row)]
            print(
                f"  round {rnd + 1}/{repeats} {row.group} | {row.name} b{row.batch}: "
                f"{fmt_rate(row.batch / per_step)} img/s",
                flush=True,
            )


def breakeven_report(
    rows: list[Row],
    measures: list[Callable[[], float] | None],
    mode: str,
    batch: int,
    cache: str,
) -> str:
    """The compile break-even: compile overhead / per-step saving, in optimizer steps, for
    the first compilation (``cache`` fresh: nothing on disk) and for a recompilation with
    inductor's on-disk caches warm (every later run on the same machine).

    A compile overhead is the time from the compiled row's first fit() call to the end of
    its first step, less one timed step; the eager row runs first, so cuDNN autotuning for
    these shapes is already done then.
    """
    head = f"- compile break-even (student CE step, batch {batch}, compile mode {mode})"
    if len(rows) != 3 or len(measures) != 3 or any(m is None for m in measures):
        return f"{head}: not measured (compile off, CPU, or a row did not run)"
    eager, compiled, warm = rows
    if any(r.rate != r.rate for r in rows):
        return f"{head}: not measured (a row was not timed)"
    t_e = batch / eager.rate
    t_c = batch / min(compiled.rate, warm.rate)  # the same graph: the slower rate
    steps_ms = f"step {1e3 * t_e:.2f} ms eager vs {1e3 * t_c:.2f} ms compiled"
    parts = []
    for label, m in (
        (f"first compile ({cache} cache)", measures[1]),
        ("recompile, caches warm", measures[2]),
    ):
        first = getattr(m, "first_steps", [])
        if not first:
            parts.append(f"{label}: not timed")
            continue
        overhead = first[0] - t_c
        if t_e <= t_c:
            parts.append(f"{label}: {overhead:.1f} s, never repaid")
        else:
            parts.append(f"{label}: {overhead:.1f} s -> {overhead / (t_e - t_c):,.0f} steps")
    return (
        f"{head}: {steps_ms}; compile overhead (a row's first fit() call to the end of its "
        f"first step, less one step) and break-even in optimizer steps: {'; '.join(parts)} "
        "(engine "
        f"COMPILE_AUTO_MIN_STEPS = {COMPILE_AUTO_MIN_STEPS:,}; a real run also compiles its "
        "evaluation graph once)"
    )


def _sigterm_as_interrupt() -> None:
    import signal

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


# ---------------------------------------------------------------------------------------------
# command line and the settings it resolves to


def _add_size_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=None, help="timed steps per row")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed steps per row (torch.compile compiles here)")
    p.add_argument("--batch-sizes", default=None,
                   help="comma list for the reference KD loop (default 64,256; --quick 16)")
    p.add_argument("--fast-batch-sizes", default=None,
                   help="comma list for supkd's steps (default CUDA 256,512; CPU = --batch-sizes)")
    p.add_argument("--supcon-batch", type=int, default=None,
                   help="SupCon batch in images, 2 views each (default CUDA 256, CPU 32)")
    p.add_argument("--workers", type=int, default=None,
                   help="DataLoader workers of the reference loops (default CUDA 8/16, CPU 2)")
    p.add_argument("--width", type=int, default=64, help="ResNet width (64 = standard)")
    p.add_argument("--images", type=int, default=None, help="training images held in memory")
    p.add_argument("--cache-images", type=int, default=None,
                   help="images whose 162-view teacher cache is really built (default CUDA "
                   "2048, CPU 2); the table is tiled over the data set for the KD row")
    p.add_argument("--losses", default=",".join(LOSSES), help="KD losses for supkd's step")
    p.add_argument("--repeats", type=int, default=None,
                   help="timing rounds per row after its warm-up call (which is timed too), "
                   "interleaved, best kept (default CPU 3, CUDA 1)")
    p.add_argument("--breakeven-batch", type=int, default=None,
                   help="CUDA: batch of the eager vs compiled student CE rows that give the "
                   "compile break-even (default 512)")
    p.add_argument("--large-batch", type=int, default=None,
                   help="batch of the extra distill and teacher-cache rows (default CUDA 1024, "
                   "CPU twice the largest --fast-batch-sizes; 0: none)")
    p.add_argument("--large-losses", default="hinton_kl,supcon_kd",
                   help="KD losses of the --large-batch rows")
    p.add_argument("--supcon-large-batch", type=int, default=None,
                   help="a second supkd SupCon row at this batch (default CUDA 512, CPU twice "
                   "--supcon-batch; 0: none)")


def _add_compile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-compile", action="store_true", help="supkd rows in eager mode")
    p.add_argument("--compile-cache", choices=["fresh", "default"], default="fresh",
                   help="fresh (default): inductor and Triton caches in a new temporary folder, "
                   "so that compile times are those of a first run on a fresh machine whatever "
                   "ran before; default: the usual on-disk caches")
    p.add_argument("--cpu-compile", action="store_true",
                   help="CPU: compile the supkd rows as on CUDA (exercises the break-even and "
                   "--also-mode rows before a GPU run; inductor's CPU compile takes minutes)")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default",
                   help="torch.compile mode of every compiled supkd row (train.compile_mode)")
    p.add_argument("--also-mode", choices=COMPILE_MODES, default=None,
                   help="CUDA: also time the student CE, distill hinton_kl and teacher-cache "
                   "rows at --breakeven-batch compiled with this mode (e.g. reduce-overhead)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    _add_size_options(p)
    _add_compile_options(p)
    p.add_argument("--skip-supcon", action="store_true")
    p.add_argument("--data", default=None,
                   help="cifar10-jpeg folder (default: auto-detect, else synthetic images)")
    p.add_argument("--quick", action="store_true",
                   help="CPU smoke run: width 16, batch 16, 3 steps, 2 losses")
    p.add_argument("--out", default=None, help="also write the Markdown report here")
    args = p.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible")
    return args


def _csv(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


@dataclass
class Settings:
    """What one run measures, resolved from the command line and the device's defaults."""

    device: torch.device
    cuda: bool
    steps: int
    warmup: int
    repeats: int
    ref_bs: list[int]
    fast_bs: list[int]
    supcon_b: int
    large_b: int
    sc_large: int
    breakeven_b: int
    workers: int
    sc_workers: int
    n_images: int
    n_cache: int
    losses: list[str]
    large_losses: list[str]
    compile_on: bool

    @property
    def head_bs(self) -> list[int]:
        """The headline batches: the largest --fast-batch-sizes (512 on CUDA); CPU: every
        fast batch (there is usually one)."""
        return [max(self.fast_bs)] if self.cuda else list(self.fast_bs)

    @property
    def rest_bs(self) -> list[int]:
        return [B for B in self.fast_bs if B not in self.head_bs]

    @property
    def supcon_bs(self) -> list[int]:
        """The larger batch first: it is the one that may meet the target."""
        return sorted({self.supcon_b, *([self.sc_large] if self.sc_large else [])}, reverse=True)


def resolve(args: argparse.Namespace) -> Settings:
    import os

    cuda = args.device == "cuda"
    if args.quick:
        args.width = min(args.width, 16)
        if args.losses == ",".join(LOSSES):
            args.losses = "hinton_kl,supcon_kd"
    # CUDA: 20 timed steps (0.2-0.6 s per row and round) are plenty against compile times
    # of 10-50 s per new graph, which dominate the run (see the module docstring).
    steps = args.steps or (3 if args.quick else 20 if cuda else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3 if cuda else 2)
    ref_bs = [int(b) for b in (args.batch_sizes or ("16" if args.quick else "64,256")).split(",")]
    fast_default = "256,512" if cuda else ",".join(map(str, ref_bs))
    fast_bs = [int(b) for b in (args.fast_batch_sizes or fast_default).split(",")]
    supcon_b = args.supcon_batch or (8 if args.quick else 256 if cuda else 32)
    large_b = args.large_batch if args.large_batch is not None else (
        1024 if cuda else 2 * max(fast_bs)
    )
    sc_large = args.supcon_large_batch if args.supcon_large_batch is not None else (
        512 if cuda else 2 * supcon_b
    )
    breakeven_b = args.breakeven_batch or (512 if cuda else max(fast_bs))
    cpus = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else (min(8, cpus) if cuda else min(2, cpus))
    need = max([*ref_bs, *fast_bs, supcon_b, large_b, sc_large, breakeven_b]) * (
        steps + warmup + 1
    )
    n_images = args.images or (max(512, need) if args.quick else max(10_000, min(need, 50_000)))
    return Settings(
        device=torch.device(args.device), cuda=cuda, steps=steps, warmup=warmup,
        # The warm-up call of each row already times its steps after compilation; CUDA adds
        # one more round (a dedicated GPU is steady), the shared CPU box three interleaved.
        repeats=args.repeats or (1 if cuda else 3),
        ref_bs=ref_bs, fast_bs=fast_bs, supcon_b=supcon_b, large_b=large_b, sc_large=sc_large,
        breakeven_b=breakeven_b, workers=workers,
        sc_workers=args.workers if args.workers is not None else (
            min(16, cpus) if cuda else workers
        ),
        n_images=n_images, n_cache=min(args.cache_images or (2048 if cuda else 2), n_images),
        losses=_csv(args.losses), large_losses=_csv(args.large_losses),
        compile_on=(cuda or args.cpu_compile) and not args.no_compile,
    )


def _prepare_process(args: argparse.Namespace, s: Settings) -> None:
    """Threads, Dynamo limits, SIGTERM and (``--compile-cache fresh``) empty compile caches."""
    import os

    if not s.cuda:
        torch.set_num_threads(os.cpu_count() or 1)
    _raise_dynamo_limits()
    _sigterm_as_interrupt()
    if args.compile_cache == "fresh":
        import atexit
        import shutil
        import tempfile

        # Read by inductor whenever it opens its caches (nothing has compiled yet).
        fresh = tempfile.mkdtemp(prefix="supkd_bench_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh
        os.environ["TRITON_CACHE_DIR"] = os.path.join(fresh, "triton")
        atexit.register(shutil.rmtree, fresh, ignore_errors=True)
    if s.cuda:
        torch.backends.cudnn.benchmark = True


# ---------------------------------------------------------------------------------------------
# the run: data, networks and the rows measured so far


class Bench:
    """One run's data, networks and rows. ``add`` builds a row and runs its first (warm-up)
    measurement at once; the timing rounds come after every row is built."""

    def __init__(self, args: argparse.Namespace, s: Settings) -> None:
        self.args, self.s, self.device = args, s, s.device
        torch.manual_seed(0)
        self.images, self.labels, self.data_src = load_train_images(s.n_images, args.data)
        print(f"data: {len(self.images)} images, {self.data_src}", flush=True)
        self.peak, self.peak_how = measure_peak_flops(s.device)
        print(f"peak: {self.peak / 1e12:.2f} TFLOP/s ({self.peak_how})", flush=True)
        self.bundle = tensor_bundle(self.images, self.labels)
        self.flops = {
            "teacher": flops_per_image(self.new_teacher().eval(), s.device, train=False),
            "student": flops_per_image(self.new_student(), s.device, train=True),
        }
        self.rows: list[Row] = []
        self.best: dict[int, float] = {}  # id(row) -> fastest seconds per step seen
        self.measures: list[tuple[Row, Callable[[], float]]] = []
        self.tagged: dict[str, list[tuple[Row, Callable[[], float] | None]]] = {}
        self.stopped = False
        prec = "bf16+channels_last" if s.cuda else "fp32"
        mode = f"{prec}+compile({args.compile_mode})" if s.compile_on else f"{prec} eager"
        self.how = f"supkd.train.fit, GpuLoader, {mode}"
        self.example = torch.zeros(2, 3, 32, 32, device=s.device)
        self.teacher: nn.Module | None = None  # shared by the supkd rows (make_shared)
        self.student: nn.Module | None = None
        self._supcon_model: nn.Module | None = None
        self.build_s, self.cache, self.cache_bundle = float("nan"), None, self.bundle

    # --- networks ---------------------------------------------------------------------------
    def new_teacher(self, projection_dim: int | None = None) -> nn.Module:
        return create_model("resnet50", stem="cifar", num_classes=10, width=self.args.width,
                            projection_dim=projection_dim).to(self.device)

    def new_student(self) -> nn.Module:
        return create_model(
            "resnet18", stem="cifar", num_classes=10, width=self.args.width
        ).to(self.device)

    def make_shared(self) -> None:
        """The teacher and student that the supkd rows share (after the reference rows)."""
        self.teacher, self.student = self.new_teacher().eval(), self.new_student()

    def supcon_model(self) -> nn.Module:
        """One SupCon network for every batch (memory)."""
        if self._supcon_model is None:
            self._supcon_model = self.new_teacher(128)
        return self._supcon_model

    def count_supcon_flops(self) -> None:
        """ResNet-50 + projection head, fwd+bwd on two views per image."""
        self.flops["supcon"] = 2 * flops_per_image(self.new_teacher(128), self.device, train=True)

    def build_cache(self) -> None:
        """The teacher cache: a real table for n_cache images, tiled (with the images) over
        the data set, so lookups are exact and cost what a full table's do. Built by an eager
        copy of the teacher (the rows before compiled the shared one in place)."""
        if self.stopped:
            return
        s = self.s
        try:
            eager_teacher = _copy_of(self.teacher, self.new_teacher)
            t0 = time.perf_counter()
            table = build_cache_table(eager_teacher, self.images[: s.n_cache], mean=CIFAR_MEAN,
                                      std=CIFAR_STD, pad=PAD, device=self.device,
                                      batch_size=1024, progress=False)
            sync(self.device)
            self.build_s = time.perf_counter() - t0
            del eager_teacher
            tile = torch.arange(s.n_images) % s.n_cache
            self.cache = TeacherCache(table[tile.to(self.device)], pad=PAD, key="benchmark")
            self.cache_bundle = tensor_bundle(self.images[tile], self.labels[tile])
        except KeyboardInterrupt:  # time limit: the rows after it are listed as not run
            self.stopped = True

    # --- measuring ----------------------------------------------------------------------------
    def add(self, row: Row, make: Callable[[], Callable[[], float]]) -> Callable[[], float] | None:
        """Build the row and run its first (warm-up) measurement now; time it later.
        Returns the row's measure (None when the row did not run)."""
        self.rows.append(row)
        if self.stopped:
            row.note = "not run (interrupted)"
            return None
        t0 = time.perf_counter()
        try:
            measure = make()
            # First call: compilation, cudnn autotuning, worker start-up, and then the timed
            # steps themselves, so a row that gets no timing round still has a rate.
            per_step = measure()
        except KeyboardInterrupt:  # time limit: keep what is measured, report it
            self.stopped = True
            row.note = "not run (interrupted)"
            return None
        except Exception as exc:  # one failing row must not lose the others
            row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
            print(f"  {row.group} | {row.name} b{row.batch}: {row.note}", flush=True)
            return None
        row.warmup_s = time.perf_counter() - t0
        self.best[id(row)] = per_step
        row.rate = row.batch / per_step
        self.measures.append((row, measure))
        print(f"  ready: {row.group} | {row.name} b{row.batch} ({row.warmup_s:.1f}s)", flush=True)
        return measure

    def step_measure(self, step: Callable[[], None]) -> Callable[[], float]:
        s = self.s
        time_steps(step, 0, s.warmup, self.device)
        return lambda: time_steps(step, s.steps, 0, self.device)[0]

    def fit(self, task, B: int, *, bundle=None, compile_: bool | None = None,
            mode: str | None = None) -> Callable[[], float]:
        """``fit_measure`` of ``task`` at batch ``B`` with this run's settings."""
        s = self.s
        return fit_measure(task, bundle or self.bundle, B, self.device, warmup=s.warmup,
                           steps=s.steps, compile_on=s.compile_on if compile_ is None else compile_,
                           compile_mode=mode or self.args.compile_mode)

    def distill_task(self, loss: str, student=None, teacher=None):
        from supkd.train.tasks import distill_task_from_modules

        return distill_task_from_modules(student or self.student, teacher or self.teacher,
                                         self.example, loss=loss)

    def cached_task(self, student=None, teacher=None):
        task = self.distill_task("hinton_kl", student, teacher)
        task.cache = self.cache
        return task

    def teacher_copy(self) -> nn.Module:
        return _copy_of(self.teacher, self.new_teacher)

    def note_fields(self) -> dict[str, object]:
        other = self.args.also_mode
        return {
            "how": self.how,
            "how_eager": self.how.replace(f"+compile({self.args.compile_mode})", " eager"),
            "how_other": self.how.replace(
                f"compile({self.args.compile_mode})", f"compile({other})"
            ),
            "workers": self.s.workers,
            "sc_workers": self.s.sc_workers,
        }


# ---------------------------------------------------------------------------------------------
# the rows, declared as data: what each one measures (make), at which stages and batches


Make = Callable[[Bench, int, "str | None"], Callable[[], float]]


def _ref_kd(b: Bench, B: int, _: str | None) -> Callable[[], float]:
    teacher, student = b.new_teacher().eval(), b.new_student()
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    it = make_reference_loader(b.images, b.labels, kd_transform(), B, b.s.workers, b.device)
    return b.step_measure(reference_kd_step(teacher, student, opt, it, b.device))


def _ref_supcon(b: Bench, B: int, _: str | None) -> Callable[[], float]:
    model = b.new_teacher(128)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    it = make_reference_loader(b.images, b.labels, TwoCrop(supcon_transform()), B,
                               b.s.sc_workers, b.device)
    return b.step_measure(reference_supcon_step(model, opt, it, b.device,
                                                SupConLoss(temperature=0.1)))


def _fresh_ce(b: Bench, B: int, _: str | None, **fit) -> Callable[[], float]:
    # Its own student: a compiled module stays compiled (nn.Module.compile works in place).
    from supkd.train.tasks import CETask

    return b.fit(CETask(b.new_student()), B, **fit)


def _student_ce(b: Bench, B: int, _: str | None) -> Callable[[], float]:
    from supkd.train.tasks import CETask

    return b.fit(CETask(b.student), B)


def _teacher_forward(b: Bench, B: int, _: str | None) -> Callable[[], float]:
    return teacher_forward_measure(b.teacher, b.bundle, B, b.device, warmup=b.s.warmup,
                                   steps=b.s.steps, fast=b.s.cuda,
                                   compile_mode=b.args.compile_mode)


def _distill(b: Bench, B: int, loss: str | None) -> Callable[[], float]:
    return b.fit(b.distill_task(loss), B)


def _cached(b: Bench, B: int, _: str | None) -> Callable[[], float]:
    return b.fit(b.cached_task(), B, bundle=b.cache_bundle)


def _supcon(b: Bench, B: int, _: str | None) -> Callable[[], float]:
    from supkd.train.tasks import SupConTask

    return b.fit(SupConTask(b.supcon_model(), temperature=0.1, base_temperature=None), B)


# The --also-mode rows: fresh networks, so that each is compiled anew in that mode.
def _other_ce(b: Bench, B: int, _: str | None) -> Callable[[], float]:
    return _fresh_ce(b, B, None, mode=b.args.also_mode)


def _other_distill(b: Bench, B: int, _: str | None) -> Callable[[], float]:
    task = b.distill_task("hinton_kl", b.new_student(), b.teacher_copy())
    return b.fit(task, B, mode=b.args.also_mode)


def _other_cached(b: Bench, B: int, _: str | None) -> Callable[[], float]:
    task = b.cached_task(b.new_student(), b.teacher_copy())
    return b.fit(task, B, bundle=b.cache_bundle, mode=b.args.also_mode)


# Gates: None runs the row, "" leaves it out, any other text lists it as skipped for that reason.
def _eager_baseline(b: Bench, B: int, stage: str) -> str | None:
    if b.s.compile_on:
        return None
    return "--no-compile" if b.s.cuda else "supkd rows are eager on CPU (nothing to compare)"


def _compiled_only(b: Bench, B: int, stage: str) -> str | None:
    return None if b.s.compile_on else ""


def _not_the_breakeven_row(b: Bench, B: int, stage: str) -> str | None:
    # At the break-even batch the compiled break-even row is this row.
    return "" if stage == "head" and b.s.compile_on and b.s.breakeven_b == B else None


def _compiled_else_skipped(b: Bench, B: int, stage: str) -> str | None:
    if b.s.compile_on:
        return None
    return "--no-compile" if b.s.cuda else "CUDA only (supkd rows are eager on CPU)"


@dataclass(frozen=True)
class RowSpec:
    """One kind of row. It runs at each batch of each of its ``stages``; ``name`` and
    ``note`` are formatted with ``{loss}`` (one row per entry of the Settings list named by
    ``over``), ``{other}`` (--also-mode) and :meth:`Bench.note_fields`."""

    stages: tuple[str, ...]
    group: str
    name: str
    flops: tuple[str, ...]  # the networks (Bench.flops keys) whose FLOPs per image it counts
    make: Make
    note: str = "{how}"
    section: int = 2
    over: str | None = None
    gate: Callable[[Bench, int, str], str | None] | None = None
    reset_dynamo: bool = False  # torch._dynamo.reset() first: the row compiles anew
    tag: str | None = None  # rows the report reads back (the compile break-even)


TS = ("teacher", "student")
ROWS: list[RowSpec] = [
    RowSpec(("reference kd",), "kd", "reference (fp32, PIL workers, hinton_kl)", TS, _ref_kd,
            note="{workers} workers", section=0),
    # The compile break-even first, so that the compiled row holds the process's first
    # compilation of the student (later rows reuse Dynamo's cache); the recompiled row runs
    # after Dynamo forgets it, with inductor's on-disk caches (FX graphs, Triton kernels)
    # holding it, as they do for every later run of a grid on the same machine.
    RowSpec(("break-even",), "kd", "student CE step alone, eager (compile off)", ("student",),
            partial(_fresh_ce, compile_=False), note="{how_eager}", section=1,
            gate=_eager_baseline, reset_dynamo=True, tag="breakeven"),
    RowSpec(("break-even",), "kd", "student CE step alone", ("student",), _fresh_ce,
            note="{how}; first compile (break-even)", gate=_compiled_only, tag="breakeven"),
    RowSpec(("break-even",), "kd", "student CE step alone, recompiled (warm compile cache)",
            ("student",), _fresh_ce, note="{how}; Dynamo reset, inductor caches warm",
            section=1, gate=_compiled_only, reset_dynamo=True, tag="breakeven"),
    RowSpec(("head", "rest"), "kd", "teacher forward alone", ("teacher",), _teacher_forward,
            note=""),
    RowSpec(("head", "rest"), "kd", "student CE step alone", ("student",), _student_ce,
            gate=_not_the_breakeven_row),
    RowSpec(("head", "rest"), "kd", "supkd distill: {loss}", TS, _distill, over="losses"),
    RowSpec(("large",), "kd", "supkd distill: {loss}", TS, _distill, over="large_losses"),
    RowSpec(("cache", "large", "rest"), "kd", "supkd distill + teacher cache: hinton_kl",
            ("student",), _cached, section=3),
    RowSpec(("supcon reference",), "supcon", "reference (fp32, 2 PIL views in workers)",
            ("supcon",), _ref_supcon, note="{sc_workers} workers", section=0),
    RowSpec(("supcon head", "supcon rest"), "supcon",
            "supkd SupCon step (full SupCon aug on device)", ("supcon",), _supcon),
    RowSpec(("also-mode",), "kd", "student CE step alone [{other}]", ("student",), _other_ce,
            note="{how_other}", section=4, gate=_compiled_else_skipped),
    RowSpec(("also-mode",), "kd", "supkd distill: hinton_kl [{other}]", TS, _other_distill,
            note="{how_other}", section=4, gate=_compiled_else_skipped),
    RowSpec(("also-mode",), "kd", "supkd distill + teacher cache: hinton_kl [{other}]",
            ("student",), _other_cached, note="{how_other}", section=4,
            gate=_compiled_else_skipped),
]


@dataclass(frozen=True)
class Stage:
    """A point in the run order and the batches its rows run at (``before`` runs first,
    when there are any)."""

    name: str
    batches: Callable[[Bench], list[int]]
    before: Callable[[Bench], None] | None = None


def _supcon_batches(pick: Callable[[list[int]], list[int]]) -> Callable[[Bench], list[int]]:
    return lambda b: [] if b.args.skip_supcon else pick(b.s.supcon_bs)


# Priority order, so that a time limit (SIGTERM) loses the least useful rows: the targets of
# issue #7 first (reference loops, supkd at the large batches, the teacher cache, SupCon),
# then the compile-mode comparison, then the same-batch comparisons with the reference loops
# (256 on CUDA). The table lists the rows by section and batch.
STAGES: list[Stage] = [
    Stage("reference kd", lambda b: b.s.ref_bs),
    Stage("break-even", lambda b: [b.s.breakeven_b], before=Bench.make_shared),
    Stage("head", lambda b: b.s.head_bs),
    Stage("cache", lambda b: b.s.head_bs, before=Bench.build_cache),
    Stage("large", lambda b: [b.s.large_b] if b.s.large_b else []),
    Stage("supcon reference", lambda b: [] if b.args.skip_supcon else [b.s.supcon_b],
          before=Bench.count_supcon_flops),
    Stage("supcon head", _supcon_batches(lambda bs: bs[:1])),
    Stage("also-mode", lambda b: [b.s.breakeven_b] if b.args.also_mode else []),
    Stage("supcon rest", _supcon_batches(lambda bs: bs[1:])),
    Stage("rest", lambda b: b.s.rest_bs),
]


def add_rows(b: Bench, spec: RowSpec, B: int, stage: str) -> None:
    """The rows of ``spec`` at batch ``B``: skipped, or built and warmed up (Bench.add)."""
    why = spec.gate(b, B, stage) if spec.gate else None
    if why == "":
        return
    notes = b.note_fields()
    for item in getattr(b.s, spec.over) if spec.over else [None]:
        name = spec.name.format(loss=item, other=b.args.also_mode)
        flops = sum(b.flops[f] for f in spec.flops)
        row = Row(spec.group, name, B, flops, spec.note.format(**notes), section=spec.section)
        if why is not None:
            row.note = f"skipped: {why}"
            b.rows.append(row)
            continue
        if spec.reset_dynamo:
            torch._dynamo.reset()
        measure = b.add(row, lambda item=item: spec.make(b, B, item))
        if spec.tag:
            b.tagged.setdefault(spec.tag, []).append((row, measure))


def run_rows(b: Bench, stages: list[Stage] = STAGES, rows: list[RowSpec] = ROWS) -> None:
    for stage in stages:
        batches = stage.batches(b)
        if batches and stage.before:
            stage.before(b)
        for B in batches:
            for spec in rows:
                if stage.name in spec.stages:
                    add_rows(b, spec, B, stage.name)
    # Timing: every row `repeats` times, round-robin, best round kept. Interleaving makes a
    # shared machine's load hit all rows alike; the best round is the least disturbed one.
    try:
        _timing_rounds(b.measures, 0 if b.stopped else b.s.repeats, b.best)
    except KeyboardInterrupt:  # SIGINT/SIGTERM (e.g. a suite's time limit): report what we have
        print("interrupted: reporting the rows measured so far", flush=True)


# ---------------------------------------------------------------------------------------------
# report


def table(b: Bench) -> str:
    def ref_rate(group: str, B: int | None) -> float | None:
        for r in b.rows:
            if r.group == group and r.name.startswith("reference") and B in (None, r.batch):
                return r.rate if r.rate == r.rate else None
        return None

    ref_bs = b.s.ref_bs
    b0 = 64 if 64 in ref_bs else ref_bs[0]
    headers = ["group", "step", "batch", "images/s", "× ref (same batch)", f"× ref b{b0}",
               "GFLOP/img", "% of peak", "warm-up s", "note"]
    table_rows = []
    group_rank = {"kd": 0, "supcon": 1}
    order = {id(r): i for i, r in enumerate(b.rows)}
    for r in sorted(
        b.rows, key=lambda r: (group_rank.get(r.group, 2), r.section, r.batch, order[id(r)])
    ):
        same = ref_rate(r.group, r.batch)
        base = ref_rate("kd", b0) if r.group == "kd" else ref_rate(r.group, None)
        ok = r.rate == r.rate
        table_rows.append([
            r.group, r.name, r.batch,
            fmt_rate(r.rate) if ok else "-",
            f"{r.rate / same:.2f}" if same and ok else "-",
            f"{r.rate / base:.2f}" if base and ok else "-",
            f"{r.flops / 1e9:.3f}",
            f"{100 * r.rate * r.flops / b.peak:.1f}" if ok else "-",
            f"{r.warmup_s:.1f}" if r.warmup_s == r.warmup_s else "-",
            r.note,
        ])
    return markdown_table(headers, table_rows)


def report(b: Bench) -> str:
    s, args = b.s, b.args
    cache_line = "- teacher cache: not built (interrupted)"
    if b.build_s == b.build_s:
        views_per_s = s.n_cache * 162 / b.build_s
        cache_line = (
            f"- teacher cache: built for {s.n_cache} images × 162 views in {b.build_s:.1f} s "
            f"({fmt_rate(views_per_s)} views/s, eager teacher; 50,000 images: "
            f"~{50_000 * 162 / views_per_s:.0f} s)"
        )
    tagged = b.tagged.get("breakeven", [])
    breakeven_line = breakeven_report([r for r, _ in tagged], [m for _, m in tagged],
                                      args.compile_mode, s.breakeven_b, args.compile_cache)
    print(breakeven_line, flush=True)
    f_teacher, f_student = b.flops["teacher"], b.flops["student"]
    return "\n".join([
        "## KD / SupCon step throughput (benchmarks/kd_throughput.py)",
        "",
        environment(b.device),
        f"- data: {len(b.images)} images, {b.data_src}; ResNet-50 -> ResNet-18 (CIFAR stem, "
        f"width {args.width}); {s.steps} timed steps after {s.warmup} warm-up steps per row, "
        f"best of {s.repeats} interleaved rounds",
        f"- peak: {b.peak / 1e12:.2f} TFLOP/s ({b.peak_how}, same run); FLOPs per image "
        f"(FlopCounterMode): teacher fwd {f_teacher / 1e9:.3f} G, student fwd+bwd "
        f"{f_student / 1e9:.3f} G; % of peak counts teacher fwd + student fwd/bwd per image",
        f"- supkd rows: {b.how} (supkd.train.tasks DistillTask/CETask/SupConTask, "
        "supkd.data make_loader(gpu_resident='on'), engine fused SGD); warm-up s includes "
        "compilation",
        cache_line,
        breakeven_line,
        "",
        table(b),
    ])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = resolve(args)
    _prepare_process(args, settings)
    bench = Bench(args, settings)
    run_rows(bench)
    write_output(report(bench), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

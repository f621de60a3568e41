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
from supkd.losses import LOSSES, SupConLoss
from supkd.models import create_model
from supkd.train.engine import COMPILE_AUTO_MIN_STEPS, CUDAGRAPH_COMPILE_MODES
from supkd.train.teacher_cache import (
    TeacherCache,
    build_cache_table,
)

PAD = 4
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
    """SupContrast's CIFAR pre-training augmentation (DESIGN §5)."""
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


def main(argv: list[str] | None = None) -> int:
    import os

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps per row")
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="untimed steps per row (torch.compile compiles here)",
    )
    p.add_argument(
        "--batch-sizes",
        default=None,
        help="comma list for the reference KD loop (default 64,256; --quick 16)",
    )
    p.add_argument(
        "--fast-batch-sizes",
        default=None,
        help="comma list for supkd's steps (default CUDA 256,512; CPU = --batch-sizes)",
    )
    p.add_argument(
        "--supcon-batch",
        type=int,
        default=None,
        help="SupCon batch in images, 2 views each (default CUDA 256, CPU 32)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="DataLoader workers of the reference loops (default CUDA 8/16, CPU 2)",
    )
    p.add_argument("--width", type=int, default=64, help="ResNet width (64 = standard)")
    p.add_argument("--images", type=int, default=None, help="training images held in memory")
    p.add_argument(
        "--cache-images",
        type=int,
        default=None,
        help="images whose 162-view teacher cache is really built (default CUDA "
        "2048, CPU 2); the table is tiled over the data set for the KD row",
    )
    p.add_argument("--losses", default=",".join(LOSSES), help="KD losses for supkd's step")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timing rounds per row after its warm-up call (which is timed too), "
        "interleaved, best kept (default CPU 3, CUDA 1)",
    )
    p.add_argument("--no-compile", action="store_true", help="supkd rows in eager mode")
    p.add_argument(
        "--compile-cache",
        choices=["fresh", "default"],
        default="fresh",
        help="fresh (default): inductor and Triton caches in a new temporary folder, so that "
        "compile times are those of a first run on a fresh machine whatever ran before; "
        "default: the usual on-disk caches",
    )
    p.add_argument(
        "--cpu-compile",
        action="store_true",
        help="CPU: compile the supkd rows as on CUDA (exercises the break-even and "
        "--also-mode rows before a GPU run; inductor's CPU compile takes minutes)",
    )
    p.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        default="default",
        help="torch.compile mode of every compiled supkd row (train.compile_mode)",
    )
    p.add_argument(
        "--also-mode",
        choices=COMPILE_MODES,
        default=None,
        help="CUDA: also time the student CE, distill hinton_kl and teacher-cache rows at "
        "--breakeven-batch compiled with this mode (e.g. reduce-overhead)",
    )
    p.add_argument(
        "--breakeven-batch",
        type=int,
        default=None,
        help="CUDA: batch of the eager vs compiled student CE rows that give the compile "
        "break-even (default 512)",
    )
    p.add_argument(
        "--large-batch",
        type=int,
        default=None,
        help="batch of the extra distill and teacher-cache rows (default CUDA 1024, CPU twice "
        "the largest --fast-batch-sizes; 0: none)",
    )
    p.add_argument(
        "--large-losses",
        default="hinton_kl,supcon_kd",
        help="KD losses of the --large-batch rows",
    )
    p.add_argument(
        "--supcon-large-batch",
        type=int,
        default=None,
        help="a second supkd SupCon row at this batch (default CUDA 512, CPU twice "
        "--supcon-batch; 0: none)",
    )
    p.add_argument("--skip-supcon", action="store_true")
    p.add_argument(
        "--data",
        default=None,
        help="cifar10-jpeg folder (default: auto-detect, else synthetic images)",
    )
    p.add_argument(
        "--quick", action="store_true", help="CPU smoke run: width 16, batch 16, 3 steps, 2 losses"
    )
    p.add_argument("--out", default=None, help="also write the Markdown report here")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device visible")
    cuda = device.type == "cuda"
    if args.quick:
        args.width = min(args.width, 16)
        if args.losses == ",".join(LOSSES):
            args.losses = "hinton_kl,supcon_kd"
    # CUDA: 20 timed steps (0.2-0.6 s per row and round) are plenty against compile times
    # of 10-50 s per new graph, which dominate the run (see the module docstring).
    steps = args.steps or (3 if args.quick else 20 if cuda else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3 if cuda else 2)
    # The warm-up call of each row already times its steps after compilation; CUDA adds one
    # more round (a dedicated GPU is steady), the shared CPU box three interleaved rounds.
    repeats = args.repeats or (1 if cuda else 3)
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
    sc_workers = args.workers if args.workers is not None else (min(16, cpus) if cuda else workers)
    need = max([*ref_bs, *fast_bs, supcon_b, large_b, sc_large, breakeven_b]) * (
        steps + warmup + 1
    )
    n_images = args.images or (max(512, need) if args.quick else max(10_000, min(need, 50_000)))
    n_cache = min(args.cache_images or (2048 if cuda else 2), n_images)
    losses = [x for x in args.losses.split(",") if x]
    compile_on = (cuda or args.cpu_compile) and not args.no_compile
    if not cuda:
        torch.set_num_threads(cpus)
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
    if cuda:
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(0)
    images, labels, data_src = load_train_images(n_images, args.data)
    print(f"data: {len(images)} images, {data_src}", flush=True)
    peak, peak_how = measure_peak_flops(device)
    print(f"peak: {peak / 1e12:.2f} TFLOP/s ({peak_how})", flush=True)
    bundle = tensor_bundle(images, labels)

    def new_teacher(projection_dim=None):
        return create_model(
            "resnet50",
            stem="cifar",
            num_classes=10,
            width=args.width,
            projection_dim=projection_dim,
        ).to(device)

    def new_student():
        return create_model("resnet18", stem="cifar", num_classes=10, width=args.width).to(device)

    f_teacher = flops_per_image(new_teacher().eval(), device, train=False)
    f_student = flops_per_image(new_student(), device, train=True)
    rows: list[Row] = []
    best: dict[int, float] = {}  # id(row) -> fastest seconds per step seen
    measures: list[tuple[Row, Callable[[], float]]] = []
    stopped: list[bool] = []

    def add(row: Row, make: Callable[[], Callable[[], float]]) -> Callable[[], float] | None:
        """Build the row and run its first (warm-up) measurement now; time it later.
        Returns the row's measure (None when the row did not run)."""
        rows.append(row)
        if stopped:
            row.note = "not run (interrupted)"
            return None
        t0 = time.perf_counter()
        try:
            measure = make()
            # First call: compilation, cudnn autotuning, worker start-up, and then the timed
            # steps themselves, so a row that gets no timing round still has a rate.
            per_step = measure()
        except KeyboardInterrupt:  # time limit: keep what is measured, report it
            stopped.append(True)
            row.note = "not run (interrupted)"
            return None
        except Exception as exc:  # one failing row must not lose the others
            row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
            print(f"  {row.group} | {row.name} b{row.batch}: {row.note}", flush=True)
            return None
        row.warmup_s = time.perf_counter() - t0
        best[id(row)] = per_step
        row.rate = row.batch / per_step
        measures.append((row, measure))
        print(f"  ready: {row.group} | {row.name} b{row.batch} ({row.warmup_s:.1f}s)", flush=True)
        return measure

    def step_measure(step: Callable[[], None]) -> Callable[[], float]:
        time_steps(step, 0, warmup, device)
        return lambda: time_steps(step, steps, 0, device)[0]

    # Rows run in priority order, so that a time limit (SIGTERM) loses the least useful ones:
    # the targets first (reference loops, supkd at the large batches, the teacher
    # cache, SupCon), then the compile-mode comparison, then the batch-256 rows. The table
    # lists them by section and batch.

    # (a) the reference KD loop
    for B in ref_bs:

        def make_ref(B=B):
            teacher, student = new_teacher().eval(), new_student()
            opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
            it = make_reference_loader(images, labels, kd_transform(), B, workers, device)
            return step_measure(reference_kd_step(teacher, student, opt, it, device))

        add(
            Row(
                "kd",
                "reference (fp32, PIL workers, hinton_kl)",
                B,
                f_teacher + f_student,
                f"{workers} workers",
                section=0,
            ),
            make_ref,
        )

    # (b) supkd: engine fit() over the GPU-resident loader with the library's tasks
    from supkd.train.tasks import CETask, SupConTask, distill_task_from_modules

    def skip(row: Row, why: str) -> None:
        """A row that this device or these options do not run, listed with the reason."""
        row.note = f"skipped: {why}"
        rows.append(row)

    example = torch.zeros(2, 3, 32, 32, device=device)
    prec = "bf16+channels_last" if cuda else "fp32"
    mode = f"{prec}+compile({args.compile_mode})" if compile_on else f"{prec} eager"
    how = f"supkd.train.fit, GpuLoader, {mode}"

    def fit_row(task, B, *, bundle_=None, compile_=None, mode_=None):
        """The row's make(): ``task`` is a Task or a function building one."""
        return lambda: fit_measure(
            task() if callable(task) and not isinstance(task, nn.Module) else task,
            bundle_ or bundle,
            B,
            device,
            warmup=warmup,
            steps=steps,
            compile_on=compile_on if compile_ is None else compile_,
            compile_mode=mode_ or args.compile_mode,
        )

    teacher, student = new_teacher().eval(), new_student()

    def kd_rows(B: int, names: list[str]) -> None:
        for name in names:
            add(
                Row("kd", f"supkd distill: {name}", B, f_teacher + f_student, how),
                fit_row(
                    lambda name=name: distill_task_from_modules(
                        student, teacher, example, loss=name
                    ),
                    B,
                ),
            )

    def teacher_row(B: int) -> None:
        add(
            Row("kd", "teacher forward alone", B, f_teacher),
            lambda: teacher_forward_measure(
                teacher,
                bundle,
                B,
                device,
                warmup=warmup,
                steps=steps,
                fast=cuda,
                compile_mode=args.compile_mode,
            ),
        )

    # Compile break-even first, so that the compiled row holds the process's first
    # compilation of the student (later rows reuse Dynamo's cache). Its own students: a
    # compiled module stays compiled (nn.Module.compile works in place).
    be_rows: list[Row] = []
    be_measures: list[Callable[[], float] | None] = []
    be_warm = Row(
        "kd",
        "student CE step alone, recompiled (warm compile cache)",
        breakeven_b,
        f_student,
        section=1,
    )
    be_eager = Row(
        "kd", "student CE step alone, eager (compile off)", breakeven_b, f_student, section=1
    )
    be_compiled = Row(
        "kd",
        "student CE step alone",
        breakeven_b,
        f_student,
        f"{how}; first compile (break-even)",
    )
    if compile_on:
        torch._dynamo.reset()
        be_eager.note = how.replace(f"+compile({args.compile_mode})", " eager")
        be_measures = [
            add(be_eager, fit_row(lambda: CETask(new_student()), breakeven_b, compile_=False)),
            add(be_compiled, fit_row(lambda: CETask(new_student()), breakeven_b)),
        ]
        # The same compilation again after Dynamo forgets it: inductor's on-disk caches
        # (FX graphs, Triton kernels) now hold it, as they do for every later run of a grid
        # on the same machine.
        torch._dynamo.reset()
        be_warm.note = f"{how}; Dynamo reset, inductor caches warm"
        be_measures.append(add(be_warm, fit_row(lambda: CETask(new_student()), breakeven_b)))
        be_rows = [be_eager, be_compiled, be_warm]
    else:
        why = "--no-compile" if cuda else "supkd rows are eager on CPU (nothing to compare)"
        skip(be_eager, why)

    # The headline batches: the largest --fast-batch-sizes (512 on CUDA), then --large-batch.
    # CPU: every fast batch here (there is usually one).
    head_bs = [max(fast_bs)] if cuda else list(fast_bs)
    rest_bs = [B for B in fast_bs if B not in head_bs]
    for B in head_bs:
        teacher_row(B)
        if not be_rows or breakeven_b != B:  # else the break-even row is this row
            add(Row("kd", "student CE step alone", B, f_student, how), fit_row(CETask(student), B))
        kd_rows(B, losses)

    # teacher cache: a real table for n_cache images, tiled (with the images) over the data
    # set, so lookups are exact and cost what a full table's do. Built by an eager copy of
    # the teacher (the rows above compiled the shared one in place).
    build_s, cache, cache_bundle = float("nan"), None, bundle
    if not stopped:
        try:
            eager_teacher = _copy_of(teacher, new_teacher)
            t0 = time.perf_counter()
            table = build_cache_table(
                eager_teacher,
                images[:n_cache],
                mean=CIFAR_MEAN,
                std=CIFAR_STD,
                pad=PAD,
                device=device,
                batch_size=1024,
                progress=False,
            )
            sync(device)
            build_s = time.perf_counter() - t0
            del eager_teacher
            tile = torch.arange(n_images) % n_cache
            cache = TeacherCache(table[tile.to(device)], pad=PAD, key="benchmark")
            cache_bundle = tensor_bundle(images[tile], labels[tile])
        except KeyboardInterrupt:  # time limit: the rows below are listed as not run
            stopped.append(True)

    def cached_task(student_=None, teacher_=None):
        task = distill_task_from_modules(
            student_ or student, teacher_ or teacher, example, loss="hinton_kl"
        )
        task.cache = cache
        return task

    def cache_row(B: int) -> None:
        add(
            Row("kd", "supkd distill + teacher cache: hinton_kl", B, f_student, how, section=3),
            fit_row(cached_task, B, bundle_=cache_bundle),
        )

    for B in head_bs:
        cache_row(B)
    if large_b:
        kd_rows(large_b, [x for x in args.large_losses.split(",") if x])
        cache_row(large_b)

    # SupCon pre-training step: ResNet-50 + projection head on two views per image
    if not args.skip_supcon:
        f_supcon = 2 * flops_per_image(new_teacher(128), device, train=True)

        def make_ref_supcon():
            model = new_teacher(128)
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
            it = make_reference_loader(
                images, labels, TwoCrop(supcon_transform()), supcon_b, sc_workers, device
            )
            return step_measure(
                reference_supcon_step(model, opt, it, device, SupConLoss(temperature=0.1))
            )

        add(
            Row(
                "supcon",
                "reference (fp32, 2 PIL views in workers)",
                supcon_b,
                f_supcon,
                f"{sc_workers} workers",
                section=0,
            ),
            make_ref_supcon,
        )
        supcon_model = new_teacher(128)  # one model for every batch (memory)

        def supcon_row(B: int) -> None:
            add(
                Row("supcon", "supkd SupCon step (full SupCon aug on device)", B, f_supcon, how),
                fit_row(
                    lambda: SupConTask(supcon_model, temperature=0.1, base_temperature=None), B
                ),
            )

        # The larger batch first: it is the one that may meet the target; the reference's
        # own batch comes after the compile-mode rows.
        supcon_bs = sorted({supcon_b, *([sc_large] if sc_large else [])}, reverse=True)
        supcon_row(supcon_bs[0])

    # The same steps compiled in a second mode (fresh networks, so each is compiled anew
    # in that mode), at the break-even batch.
    if args.also_mode:
        other = args.also_mode
        how_other = how.replace(f"compile({args.compile_mode})", f"compile({other})")
        names = [
            ("student CE step alone", f_student),
            ("supkd distill: hinton_kl", f_teacher + f_student),
            ("supkd distill + teacher cache: hinton_kl", f_student),
        ]
        if not compile_on:
            why = "--no-compile" if cuda else "CUDA only (supkd rows are eager on CPU)"
            for name, f in names:
                skip(Row("kd", f"{name} [{other}]", breakeven_b, f, section=4), why)
        else:
            makers = [
                lambda: CETask(new_student()),
                lambda: distill_task_from_modules(
                    new_student(), _copy_of(teacher, new_teacher), example, loss="hinton_kl"
                ),
                lambda: cached_task(new_student(), _copy_of(teacher, new_teacher)),
            ]
            for (name, f), make in zip(names, makers):
                add(
                    Row("kd", f"{name} [{other}]", breakeven_b, f, how_other, section=4),
                    fit_row(
                        make,
                        breakeven_b,
                        bundle_=cache_bundle if "cache" in name else None,
                        mode_=other,
                    ),
                )

    # Last, the same-batch comparisons with the reference loops (256 on CUDA).
    if not args.skip_supcon:
        for B in supcon_bs[1:]:
            supcon_row(B)
    for B in rest_bs:
        teacher_row(B)
        add(Row("kd", "student CE step alone", B, f_student, how), fit_row(CETask(student), B))
        kd_rows(B, losses)
        cache_row(B)

    # Timing: every row `repeats` times, round-robin, best round kept. Interleaving makes a
    # shared machine's load hit all rows alike; the best round is the least disturbed one.
    try:
        _timing_rounds(measures, 0 if stopped else repeats, best)
    except KeyboardInterrupt:  # SIGINT/SIGTERM (e.g. a suite's time limit): report what we have
        print("interrupted: reporting the rows measured so far", flush=True)

    # ------------------------------------------------------------------ report
    def ref_rate(group: str, B: int | None) -> float | None:
        for r in rows:
            if r.group == group and r.name.startswith("reference") and B in (None, r.batch):
                return r.rate if r.rate == r.rate else None
        return None

    b0 = 64 if 64 in ref_bs else ref_bs[0]
    headers = [
        "group",
        "step",
        "batch",
        "images/s",
        "× ref (same batch)",
        f"× ref b{b0}",
        "GFLOP/img",
        "% of peak",
        "warm-up s",
        "note",
    ]
    table_rows = []
    group_rank = {"kd": 0, "supcon": 1}
    order = {id(r): i for i, r in enumerate(rows)}
    for r in sorted(
        rows, key=lambda r: (group_rank.get(r.group, 2), r.section, r.batch, order[id(r)])
    ):
        same = ref_rate(r.group, r.batch)
        base = ref_rate("kd", b0) if r.group == "kd" else ref_rate(r.group, None)
        ok = r.rate == r.rate
        table_rows.append(
            [
                r.group,
                r.name,
                r.batch,
                fmt_rate(r.rate) if ok else "-",
                f"{r.rate / same:.2f}" if same and ok else "-",
                f"{r.rate / base:.2f}" if base and ok else "-",
                f"{r.flops / 1e9:.3f}",
                f"{100 * r.rate * r.flops / peak:.1f}" if ok else "-",
                f"{r.warmup_s:.1f}" if r.warmup_s == r.warmup_s else "-",
                r.note,
            ]
        )
    cache_line = "- teacher cache: not built (interrupted)"
    if build_s == build_s:
        views_per_s = n_cache * 162 / build_s
        cache_line = (
            f"- teacher cache: built for {n_cache} images × 162 views in {build_s:.1f} s "
            f"({fmt_rate(views_per_s)} views/s, eager teacher; 50,000 images: "
            f"~{50_000 * 162 / views_per_s:.0f} s)"
        )
    breakeven_line = breakeven_report(
        be_rows, be_measures, args.compile_mode, breakeven_b, args.compile_cache
    )
    print(breakeven_line, flush=True)
    parts = [
        "## KD / SupCon step throughput (benchmarks/kd_throughput.py)",
        "",
        environment(device),
        f"- data: {len(images)} images, {data_src}; ResNet-50 -> ResNet-18 (CIFAR stem, "
        f"width {args.width}); {steps} timed steps after {warmup} warm-up steps per row, "
        f"best of {repeats} interleaved rounds",
        f"- peak: {peak / 1e12:.2f} TFLOP/s ({peak_how}, same run); FLOPs per image "
        f"(FlopCounterMode): teacher fwd {f_teacher / 1e9:.3f} G, student fwd+bwd "
        f"{f_student / 1e9:.3f} G; % of peak counts teacher fwd + student fwd/bwd per image",
        f"- supkd rows: {how} (supkd.train.tasks DistillTask/CETask/SupConTask, "
        "supkd.data make_loader(gpu_resident='on'), engine fused SGD); warm-up s includes "
        "compilation",
        cache_line,
        breakeven_line,
        "",
        markdown_table(headers, table_rows),
    ]
    write_output("\n".join(parts), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

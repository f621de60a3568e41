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

    python benchmarks/kd_throughput.py --device cpu --quick
    python benchmarks/kd_throughput.py --device cuda --out kd.md
"""

from __future__ import annotations

import argparse
import sys
import time
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
from supkd.losses import LOSSES, SupConLoss
from supkd.models import create_model
from supkd.train.teacher_cache import (
    TeacherCache,
    build_cache_table,
)

PAD = 4


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


def fit_measure(task, bundle, batch, device, *, warmup, steps, compile_on, lr=0.05):
    """One call of supkd's engine (``supkd.train.fit``) for ``warmup + steps`` steps on the
    GPU-resident loader; returns a callable giving seconds per step of the last ``steps``.

    A step callback synchronizes the device at the two marks, so the time is exactly that of
    the engine's loop (data, autocast, task step, backward, fused optimizer, scheduler, its
    periodic loss reads), without set-up, compilation (in the warm-up) or the epoch's end.
    """
    from supkd.data import make_loader
    from supkd.experiments.config import OptimConfig, ScheduleConfig, TrainConfig
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
    )
    optim = OptimConfig(lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def measure() -> float:
        marks: dict[int, float] = {}

        def mark(state) -> None:
            if state.step in (warmup, warmup + steps):
                sync(device)
                marks[state.step] = time.perf_counter()

        loader.set_epoch(0)
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
        return (marks[warmup + steps] - marks[warmup]) / steps

    return measure


def teacher_forward_measure(teacher, bundle, batch, device, *, warmup, steps, fast: bool):
    """Teacher forward alone on the loader's batches (bf16 + channels_last + compile on CUDA)."""
    from supkd.data import make_loader

    loader = make_loader(
        bundle, "train", batch, train=True, device=device, seed=0, num_workers=0, gpu_resident="on"
    )
    fwd = torch.compile(teacher, dynamic=False) if fast else teacher
    batches = [b.x for _, b in zip(range(4), loader)]
    if fast:
        batches = [x.contiguous(memory_format=torch.channels_last) for x in batches]

    def run(n: int) -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast):
            for i in range(n):
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


def _raise_dynamo_limits() -> None:
    # Every (module, batch size) pair is a graph of its own; the default recompile limit (8)
    # would silently send later rows back to eager mode.
    import torch._dynamo.config as dcfg

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
        help="timing rounds per row, interleaved, best kept (default CPU 3, CUDA 2)",
    )
    p.add_argument("--no-compile", action="store_true", help="supkd rows in eager mode")
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
    steps = args.steps or (3 if args.quick else 30 if cuda else 10)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5 if cuda else 2)
    repeats = args.repeats or (2 if cuda else 3)
    ref_bs = [int(b) for b in (args.batch_sizes or ("16" if args.quick else "64,256")).split(",")]
    fast_default = "256,512" if cuda else ",".join(map(str, ref_bs))
    fast_bs = [int(b) for b in (args.fast_batch_sizes or fast_default).split(",")]
    supcon_b = args.supcon_batch or (8 if args.quick else 256 if cuda else 32)
    cpus = os.cpu_count() or 1
    workers = args.workers if args.workers is not None else (min(8, cpus) if cuda else min(2, cpus))
    sc_workers = args.workers if args.workers is not None else (min(16, cpus) if cuda else workers)
    need = max([*ref_bs, *fast_bs, supcon_b]) * (steps + warmup + 1)
    n_images = args.images or (max(512, need) if args.quick else max(10_000, min(need, 50_000)))
    n_cache = min(args.cache_images or (2048 if cuda else 2), n_images)
    losses = [x for x in args.losses.split(",") if x]
    compile_on = cuda and not args.no_compile
    if not cuda:
        torch.set_num_threads(cpus)
    _raise_dynamo_limits()
    _sigterm_as_interrupt()
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
    measures: list[tuple[Row, Callable[[], float]]] = []
    stopped: list[bool] = []

    def add(row: Row, make: Callable[[], Callable[[], float]]) -> None:
        """Build the row and run its first (warm-up) measurement now; time it later."""
        rows.append(row)
        if stopped:
            row.note = "not run (interrupted)"
            return
        t0 = time.perf_counter()
        try:
            measure = make()
            measure()  # first call: compilation, cudnn autotuning, worker start-up
        except KeyboardInterrupt:  # time limit: keep what is measured, report it
            stopped.append(True)
            row.note = "not run (interrupted)"
            return
        except Exception as exc:  # one failing row must not lose the others
            row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:90]}"
            print(f"  {row.group} | {row.name} b{row.batch}: {row.note}", flush=True)
            return
        row.warmup_s = time.perf_counter() - t0
        measures.append((row, measure))
        print(f"  ready: {row.group} | {row.name} b{row.batch} ({row.warmup_s:.1f}s)", flush=True)

    def step_measure(step: Callable[[], None]) -> Callable[[], float]:
        time_steps(step, 0, warmup, device)
        return lambda: time_steps(step, steps, 0, device)[0]

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
            ),
            make_ref,
        )

    # (b) supkd: engine fit() over the GPU-resident loader with the library's tasks
    from supkd.train.tasks import CETask, distill_task_from_modules

    teacher, student = new_teacher().eval(), new_student()
    example = torch.zeros(2, 3, 32, 32, device=device)
    mode = "bf16+channels_last+compile" if compile_on else "fp32 eager"
    how = f"supkd.train.fit, GpuLoader, {mode}"
    for B in fast_bs:
        add(
            Row("kd", "teacher forward alone", B, f_teacher),
            lambda B=B: teacher_forward_measure(
                teacher, bundle, B, device, warmup=warmup, steps=steps, fast=cuda
            ),
        )
        add(
            Row("kd", "student CE step alone", B, f_student, how),
            lambda B=B: fit_measure(
                CETask(student),
                bundle,
                B,
                device,
                warmup=warmup,
                steps=steps,
                compile_on=compile_on,
            ),
        )
        for name in losses:

            def make_kd(B=B, name=name):
                task = distill_task_from_modules(student, teacher, example, loss=name)
                return fit_measure(
                    task, bundle, B, device, warmup=warmup, steps=steps, compile_on=compile_on
                )

            add(Row("kd", f"supkd distill: {name}", B, f_teacher + f_student, how), make_kd)

    # teacher cache: a real table for n_cache images, tiled (with the images) over the data
    # set, so lookups are exact and cost what a full table's do
    t0 = time.perf_counter()
    table = build_cache_table(
        teacher,
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
    views_per_s = n_cache * 162 / build_s
    tile = torch.arange(n_images) % n_cache
    cache = TeacherCache(table[tile.to(device)], pad=PAD, key="benchmark")
    cache_bundle = tensor_bundle(images[tile], labels[tile])
    for B in fast_bs:

        def make_cached(B=B):
            task = distill_task_from_modules(student, teacher, example, loss="hinton_kl")
            task.cache = cache
            return fit_measure(
                task, cache_bundle, B, device, warmup=warmup, steps=steps, compile_on=compile_on
            )

        add(Row("kd", "supkd distill + teacher cache: hinton_kl", B, f_student, how), make_cached)

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
            ),
            make_ref_supcon,
        )

        def make_supcon():
            from supkd.train.tasks import SupConTask

            task = SupConTask(new_teacher(128), temperature=0.1, base_temperature=None)
            return fit_measure(
                task, bundle, supcon_b, device, warmup=warmup, steps=steps, compile_on=compile_on
            )

        add(
            Row("supcon", "supkd SupCon step (full SupCon aug on device)", supcon_b, f_supcon, how),
            make_supcon,
        )

    # Timing: every row `repeats` times, round-robin, best round kept. Interleaving makes a
    # shared machine's load hit all rows alike; the best round is the least disturbed one.
    best: dict[int, float] = {}
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
    for r in rows:
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
                f"{r.warmup_s:.1f}",
                r.note,
            ]
        )
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
        f"- teacher cache: built for {n_cache} images × 162 views in {build_s:.1f} s "
        f"({fmt_rate(views_per_s)} views/s, eager teacher; 50,000 images: "
        f"~{50_000 * 162 / views_per_s:.0f} s)",
        "",
        markdown_table(headers, table_rows),
    ]
    write_output("\n".join(parts), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

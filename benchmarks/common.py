"""Shared helpers for the speed benchmarks: data, timing, FLOP counting, peak FLOP/s, tables.

Every benchmark prints a Markdown table and the environment (machine, versions, date, command)
so that a figure pasted into benchmarks/RESULTS.md carries its provenance.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from supkd.data import NORMALIZATION

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The cifar10-jpeg pack's statistics (its decoded training split), as supkd registers them.
CIFAR_MEAN, CIFAR_STD = NORMALIZATION["cifar10-jpeg"]


def find_cifar10_jpeg(explicit: str | None = None) -> Path | None:
    """The cifar10-jpeg pack: --data, $SUPKD_CIFAR10_JPEG or ./.data/cifar10-jpeg."""
    candidates = [
        explicit,
        os.environ.get("SUPKD_CIFAR10_JPEG"),
        REPO_ROOT / ".data" / "cifar10-jpeg",
    ]
    for c in candidates:
        if c and (Path(c) / "train.npz").is_file():
            return Path(c)
    return None


def decode_npz(path: Path, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one cifar10-jpeg split -> (uint8 images (N, 3, 32, 32), long labels (N,)).

    The pack is stored class by class; ``limit`` takes an evenly strided subset so that every
    class is present.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    with np.load(path) as z:
        jpeg, offsets, labels = z["jpeg"], z["offsets"], z["labels"]
    n = len(labels)
    idx = np.arange(n) if limit is None or limit >= n else np.linspace(0, n - 1, limit).astype(int)
    blobs = [torch.from_numpy(jpeg[offsets[i] : offsets[i + 1]].copy()) for i in idx]
    images = torch.stack(decode_jpeg(blobs, mode=ImageReadMode.RGB))
    return images, torch.from_numpy(labels[idx].astype(np.int64))


def load_train_images(
    n: int, data_dir: str | None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n`` CIFAR-10 training images (uint8 NCHW) and labels; synthetic when no pack is found.

    Throughput does not depend on pixel values, so random images are a fair stand-in; the
    third return value says which was used.
    """
    pack = find_cifar10_jpeg(data_dir)
    if pack is not None:
        images, labels = decode_npz(pack / "train.npz", limit=n)
        return images, labels, f"cifar10-jpeg ({pack})"
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return images, labels, "synthetic uint8 (no cifar10-jpeg pack found)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(
    step: Callable[[], object], steps: int, warmup: int, device: torch.device
) -> tuple[float, float]:
    """Run ``warmup`` then ``steps`` calls of ``step``; -> (seconds per step, warm-up seconds).

    The warm-up time includes torch.compile's compilation, reported separately.
    """
    t0 = time.perf_counter()
    for _ in range(warmup):
        step()
    sync(device)
    t1 = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    t2 = time.perf_counter()
    return (t2 - t1) / max(steps, 1), t1 - t0


def count_flops(fn: Callable[[], object]) -> int:
    """Total FLOPs of one call of ``fn`` (forward and any backward inside it)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return int(counter.get_total_flops())


def measure_peak_flops(device: torch.device) -> tuple[float, str]:
    """Achieved matmul FLOP/s in this process: bf16 8192³ on CUDA, fp32 1024³ on CPU."""
    if device.type == "cuda":
        n, dtype, reps = 8192, torch.bfloat16, 20
    else:
        n, dtype, reps = 1024, torch.float32, 5
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    dt = (time.perf_counter() - t0) / reps
    return 2 * n**3 / dt, f"{str(dtype).replace('torch.', '')} matmul {n}x{n}x{n}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def environment(device: torch.device) -> str:
    """One Markdown block: machine, versions, date and the exact command."""
    if device.type == "cuda":
        machine = f"{torch.cuda.get_device_name(device)} ({os.cpu_count()} CPU cores)"
    else:
        cpu = platform.processor() or platform.machine()
        machine = f"CPU {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:  # pragma: no cover
        tv = "-"
    try:
        import supkd

        sk = supkd.__version__
    except ImportError:  # pragma: no cover
        sk = "-"
    cmd = " ".join(["python", *sys.argv])
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"- machine: {machine}\n- versions: python {platform.python_version()}, torch "
        f"{torch.__version__}, torchvision {tv}, supkd {sk}\n- date: {date}\n- command: `{cmd}`"
    )


def write_output(text: str, path: str | None) -> None:
    print(text, flush=True)
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text + "\n", encoding="utf-8")


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"

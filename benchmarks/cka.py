"""Benchmark: layer-wise CKA of a CIFAR ResNet-50 (teacher) vs a ResNet-18 (student).

All stages of both networks (``stem, layer1..layer4, embedding, logits``: 7 x 7 pairs plus
the 7 x 7 teacher self-similarity block) with the streaming unbiased estimator
(:func:`supkd.analysis.layerwise.layerwise_cka`) over 10,000 images: the cifar10-jpeg test
split when the pack is found, else random images. Random weights are fine: the cost does
not depend on them.

Prints a Markdown table: seconds split into data, forward passes and CKA (centred Grams +
HSIC sums), images/s, the peak resident memory of the process (``resource.getrusage``; torch's
tensors live outside the Python heap, so ``tracemalloc`` would not see them) and, on CUDA, the
peak allocated device memory. An ablation row times the CKA update alone on the same
features cast to float64 first (what a "do everything in float64" implementation pays),
against the default float32 Gram blocks summed in float64.

    python benchmarks/cka.py                        # 10,000 images, CPU
    python benchmarks/cka.py --images 1000 --threads 2
    python benchmarks/cka.py --device cuda
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    CIFAR_MEAN,
    CIFAR_STD,
    decode_npz,
    environment,
    find_cifar10_jpeg,
    markdown_table,
    sync,
    write_output,
)
from supkd.analysis.cka import MinibatchCKA
from supkd.analysis.layerwise import layerwise_cka
from supkd.models import create_model


def _rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Timed(nn.Module):
    """Wraps a model; accumulates the wall time of its ``forward_intermediates`` calls."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model = model
        self.device = device
        self.seconds = 0.0

    def forward_intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        sync(self.device)
        t0 = time.perf_counter()
        out = self.model.forward_intermediates(x)
        sync(self.device)
        self.seconds += time.perf_counter() - t0
        return out


class Batches:
    """Normalized float batches from uint8 images; times its own work (the data share)."""

    def __init__(self, images: torch.Tensor, batch_size: int, device: torch.device) -> None:
        self.images, self.batch_size, self.device = images, batch_size, device
        self.mean = torch.tensor(CIFAR_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR_STD, device=device).view(1, 3, 1, 1)
        self.seconds = 0.0

    def __iter__(self) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.images), self.batch_size):
            t0 = time.perf_counter()
            x = self.images[start : start + self.batch_size].to(self.device)
            x = (x.float().div_(255) - self.mean) / self.std
            sync(self.device)
            self.seconds += time.perf_counter() - t0
            yield x


def load_images(n: int, data_dir: str | None) -> tuple[torch.Tensor, str]:
    pack = find_cifar10_jpeg(data_dir)
    if pack is None:
        g = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), "random"
    images, _ = decode_npz(pack / "test.npz", limit=n)
    if len(images) < n:  # more than the test split asked for: top up from train
        extra, _ = decode_npz(pack / "train.npz", limit=n - len(images))
        images = torch.cat([images, extra])
    # The pack is stored class by class: shuffle so every batch mixes classes.
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    return images[perm].contiguous(), f"cifar10-jpeg ({pack})"


def float64_ablation(
    teacher: nn.Module, student: nn.Module, batches: Batches, n_batches: int
) -> tuple[float, float]:
    """Seconds of MinibatchCKA.update on ``n_batches`` batches: float32 features (default
    path) vs the same features cast to float64 first."""
    times = {"f32": 0.0, "f64": 0.0}
    device = batches.device
    with torch.no_grad():
        for i, x in enumerate(batches):
            if i >= n_batches:
                break
            fa = list(teacher.forward_intermediates(x).values())
            fb = list(student.forward_intermediates(x).values())
            for key in ("f32", "f64"):
                a = fa if key == "f32" else [t.double() for t in fa]
                b = fb if key == "f32" else [t.double() for t in fb]
                # Best of two: the first update also pays for fresh allocations.
                best = math.inf
                for _ in range(2):
                    mb = MinibatchCKA(len(a), len(a) + len(b))
                    sync(device)
                    t0 = time.perf_counter()
                    mb.update(a, a + b)
                    sync(device)
                    best = min(best, time.perf_counter() - t0)
                times[key] += best
                del a, b
    return times["f32"], times["f64"]


def feature_sizes(
    teacher: nn.Module, student: nn.Module, images: torch.Tensor, args: argparse.Namespace,
    device: torch.device,
) -> tuple[float, float, dict[str, int]]:
    """(features MiB per batch, Grams MiB per batch, dims per stage) of one probe batch."""
    with torch.no_grad():
        probe = images[: args.batch_size].to(device).float()
        fa = teacher.forward_intermediates(probe)
        fb = student.forward_intermediates(probe)
    dims = {
        k: v[0].numel() if not args.pool or v.dim() < 4 else v.shape[1]
        for k, v in [
            *(("T." + k, v) for k, v in fa.items()),
            *(("S." + k, v) for k, v in fb.items()),
        ]
    }
    feat_mib = sum(dims.values()) * args.batch_size * 4 / 2**20
    gram_mib = (len(fa) + len(fb)) * args.batch_size**2 * 8 / 2**20
    return feat_mib, gram_mib, dims


def ablation_lines(
    teacher: nn.Module, student: nn.Module, batches: Batches, args: argparse.Namespace
) -> list[str]:
    f32, f64 = float64_ablation(teacher, student, batches, args.ablation_batches)
    return [
        "",
        f"CKA update alone on {args.ablation_batches} batches of {args.batch_size}:",
        markdown_table(
            ["features", "seconds", "per batch s"],
            [
                [
                    "float32, Gram blocks summed in float64 (default)",
                    f"{f32:.2f}",
                    f"{f32 / args.ablation_batches:.3f}",
                ],
                ["cast to float64 first", f"{f64:.2f}", f"{f64 / args.ablation_batches:.3f}"],
            ],
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--data", default=None, help="cifar10-jpeg folder (default: search)")
    p.add_argument("--pool", action="store_true", help="global average pooling of conv stages")
    p.add_argument(
        "--ablation-batches", type=int, default=4, help="batches for the float64 ablation (0: skip)"
    )
    p.add_argument("--out", default=None, help="also write the output to this file")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)

    images, source = load_images(args.images, args.data)
    teacher = Timed(create_model("resnet50", stem="cifar", num_classes=10), device)
    student = Timed(create_model("resnet18", stem="cifar", num_classes=10), device)
    teacher.to(device).eval()
    student.to(device).eval()
    batches = Batches(images, args.batch_size, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _rss_mib()

    t0 = time.perf_counter()
    res = layerwise_cka(teacher, student, batches, pool=args.pool, device=device)
    sync(device)
    total = time.perf_counter() - t0
    rss_after = _rss_mib()
    fwd = teacher.seconds + student.seconds
    cka_s = total - fwd - batches.seconds
    cuda_peak = (
        f"{torch.cuda.max_memory_allocated(device) / 2**20:,.0f}" if device.type == "cuda" else "-"
    )

    feat_mib, gram_mib, dims = feature_sizes(teacher.model, student.model, images, args, device)

    threads = torch.get_num_threads()
    rows = [
        [
            f"{res.num_samples:,}",
            args.batch_size,
            str(device),
            threads,
            "pool" if args.pool else "flatten",
            f"{batches.seconds:.1f}",
            f"{teacher.seconds:.1f}",
            f"{student.seconds:.1f}",
            f"{cka_s:.1f}",
            f"{total:.1f}",
            f"{res.num_samples / total:,.0f}",
            f"{rss_before:,.0f}",
            f"{rss_after:,.0f}",
            cuda_peak,
        ]
    ]
    headers = [
        "images",
        "batch",
        "device",
        "threads",
        "stages",
        "data s",
        "R50 fwd s",
        "R18 fwd s",
        "CKA s",
        "total s",
        "img/s",
        "peak RSS before MiB",
        "peak RSS after MiB",
        "CUDA peak MiB",
    ]
    lines = [
        "# Layer-wise CKA benchmark: CIFAR ResNet-50 vs ResNet-18, all stages",
        "",
        environment(device),
        "",
        f"images: {source}; {len(res.stages_a)} x {len(res.stages_b)} stage pairs + "
        f"{len(res.stages_a)} x {len(res.stages_a)} teacher self-similarity block",
        f"features per batch (float32, all stages of both nets): {feat_mib:,.0f} MiB; "
        f"Grams per batch (float64): {gram_mib:,.1f} MiB; "
        f"widest stage: {max(dims, key=dims.get)} = {max(dims.values()):,} dims",
        "",
        markdown_table(headers, rows),
        "",
        "Matched-stage CKA (random weights; a check that values are finite, not a result):",
        markdown_table(res.stages_a, [[f"{res.diagonal[s]:.3f}" for s in res.stages_a]]),
        f"sanity, teacher vs itself: min {min(res.sanity.values()):.9f}",
    ]
    if args.ablation_batches > 0:
        lines += ablation_lines(teacher.model, student.model, batches, args)
    write_output("\n".join(lines), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

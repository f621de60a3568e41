"""SupCon two-view augmentation throughput: DataLoader + torchvision v2 vs the GPU-resident
tensor path (and kornia, the library alternative to the tensor path).

One batch of 512 CIFAR images (cifar10-jpeg when present, else random uint8 images) is
turned into two SupCon views (RandomResizedCrop 0.2-1, flip, ColorJitter(0.4, 0.4, 0.4, 0.1)
p 0.8, grayscale p 0.2) and normalized, by:

- ``dataloader+v2``: supkd's DataLoader path (per-image torchvision.transforms.v2
  functional ops on uint8 with a per-sample generator, ``num_workers`` workers, then the
  batch is moved to the device and normalized);
- ``gpu-path tensor``: supkd's GPU-resident loader (batched tensor ops) on ``--device``;
- ``kornia``: kornia.augmentation with the same recipe on ``--device``, for the backend
  choice recorded in src/supkd/data/gpu.py.

A second table times whole SupCon epochs (two views) on digits (1,294 training images,
1x16x16) through both paths, with ``--digits-epochs`` epochs (0 skips it).

Usage: python benchmarks/augment_throughput.py [--device cpu|cuda] [--reps 5] [--workers 0]
       [--digits-epochs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import find_cifar10_jpeg, sync
from supkd.data import DataBundle, DataConfig, TensorImageDataset, build_data, make_loader
from supkd.data.datasets import NORMALIZATION, load_jpeg_pack


def cifar_images(n: int) -> tuple[torch.Tensor, str]:
    pack = find_cifar10_jpeg()
    if pack is not None and (pack / "test.npz").is_file():
        src = load_jpeg_pack(pack / "test.npz")
        ds = src.take(torch.arange(n) * (len(src.labels) // n))  # spread over all classes
        return ds.images, f"cifar10-jpeg ({pack})"
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), "random uint8"


def time_it(fn, device: torch.device, reps: int) -> float:
    fn()  # warm-up (worker start, kernel selection)
    times = []
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--skip-dataloader", action="store_true", help="time the device paths only")
    ap.add_argument("--digits-epochs", type=int, default=3, help="digits epochs to time (0: none)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    images, source = cifar_images(args.batch)
    labels = torch.arange(args.batch) % 10
    mean, std = NORMALIZATION["cifar10-jpeg"]
    ds = TensorImageDataset(images, labels, [str(i) for i in range(10)])
    bundle = DataBundle(
        "cifar10-jpeg",
        ds,
        None,
        ds,
        10,
        ds.classes,
        32,
        mean,
        std,
        3,
        config=DataConfig(name="cifar10-jpeg", root="unused"),
    )

    def loader_batch(gpu: str):
        loader = make_loader(
            bundle,
            "train",
            args.batch,
            train=True,
            views=2,
            augment="supcon",
            device=device,
            num_workers=args.workers,
            gpu_resident=gpu,
        )

        def run() -> torch.Tensor:
            batch = next(iter(loader))
            assert batch.x.shape == (args.batch, 2, 3, 32, 32)
            return batch.x

        return run

    rows = [(f"gpu-path tensor ops on {device.type}", loader_batch("on"))]
    if not args.skip_dataloader:
        name = f"dataloader+v2 ({args.workers} workers) -> {device.type}"
        rows.insert(0, (name, loader_batch("off")))
    try:
        import kornia.augmentation as K

        aug = K.AugmentationSequential(
            K.RandomResizedCrop((32, 32), scale=(0.2, 1.0)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
            K.RandomGrayscale(p=0.2),
            K.Normalize(torch.tensor(mean), torch.tensor(std)),
        ).to(device)
        dev_images = images.to(device)

        def kornia_batch() -> torch.Tensor:
            x = dev_images.float().div(255).repeat(2, 1, 1, 1)
            return aug(x).view(2, args.batch, 3, 32, 32).transpose(0, 1)

        rows.append((f"kornia.augmentation on {device.type}", kornia_batch))
    except ImportError:
        print("kornia not installed: skipping its row", file=sys.stderr)

    print(
        f"SupCon two-view batch of {args.batch} images ({source}); torch threads "
        f"{torch.get_num_threads()}; median of {args.reps}"
    )
    print(f"| {'path':<44} | {'ms/batch':>9} | {'images/s':>10} | {'views/s':>10} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 12}|{'-' * 12}|")
    for name, fn in rows:
        t = time_it(fn, device, args.reps)
        print(
            f"| {name:<44} | {t * 1e3:9.1f} | {args.batch / t:10.0f} | {2 * args.batch / t:10.0f} |"
        )
    if args.digits_epochs > 0:
        digits_epochs(args, device)
    return 0


def digits_epochs(args: argparse.Namespace, device: torch.device) -> None:
    """Median seconds per SupCon epoch (two views, batch 256) on digits, both paths."""
    bundle = build_data(DataConfig(name="digits"), seed=0)
    n = len(bundle.train)
    print(
        f"\nSupCon epoch on digits ({n} training images, 2 views, batch 256); "
        f"median of {args.digits_epochs} epochs after one warm-up"
    )
    print(f"| {'path':<44} | {'s/epoch':>9} | {'images/s':>10} |")
    print(f"|{'-' * 46}|{'-' * 11}|{'-' * 12}|")
    paths = [("on", f"gpu-path tensor ops on {device.type}")]
    if not args.skip_dataloader:
        paths.insert(0, ("off", f"dataloader+v2 ({args.workers} workers) -> {device.type}"))
    for gpu, name in paths:
        loader = make_loader(
            bundle,
            "train",
            256,
            train=True,
            views=2,
            augment="supcon",
            device=device,
            num_workers=args.workers,
            gpu_resident=gpu,
        )
        times = []
        for epoch in range(args.digits_epochs + 1):
            loader.set_epoch(epoch)
            sync(device)
            t = time.perf_counter()
            for _ in loader:
                pass
            sync(device)
            times.append(time.perf_counter() - t)
        t = statistics.median(times[1:])
        print(f"| {name:<44} | {t:9.3f} | {n / t:10.0f} |")


if __name__ == "__main__":
    raise SystemExit(main())

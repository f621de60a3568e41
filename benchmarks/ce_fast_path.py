"""CE training step throughput of supkd's ``fit``: the fast path (bf16 autocast +
channels_last, the CUDA default) against plain fp32 in the same run.

A ResNet-18 (CIFAR stem, 10 classes) trains one epoch on random 32x32 images in batches of
``--batch`` through :func:`supkd.train.fit` twice: ``amp=off channels_last=off`` (the
reference) and ``amp=auto channels_last=auto``. The table gives images per second of each
and the ratio to the reference. Moved here from tests/train/test_cuda_path.py, where it
printed the figures without asserting anything (issue 16: speed lives in benchmarks/).

Usage: python benchmarks/ce_fast_path.py [--device cuda|cpu] [--batch 512] [--steps 40]
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, TensorDataset

from common import environment, markdown_table, sync
from supkd.config import TrainConfig
from supkd.models import create_model
from supkd.train import fit
from supkd.train.tasks import CETask

VARIANTS = (("off", "off"), ("auto", "auto"))  # (train.amp, train.channels_last); first: ref


def _loader(n: int, batch: int, size: int = 32) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def images_per_s(device: torch.device, amp: str, cl: str, loader: DataLoader,
                 batch: int) -> float:
    """One epoch of CE steps (after a 3-step warm-up epoch) -> images per second."""
    warm = _loader(3 * batch, batch)
    for data, timed in ((warm, False), (loader, True)):
        task = CETask(create_model("resnet18", num_classes=10))
        sync(device)
        t0 = time.perf_counter()
        res = fit(task, data, device=device, quiet=True,
                  train=TrainConfig(epochs=1, amp=amp, channels_last=cl, compile="off",
                                    progress=False))
        sync(device)
        if timed:
            return batch * res["steps"] / (time.perf_counter() - t0)
    raise AssertionError("unreachable")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    device = torch.device(args.device)
    loader = _loader(args.batch * args.steps, args.batch)
    rates = [images_per_s(device, amp, cl, loader, args.batch) for amp, cl in VARIANTS]
    rows = [(f"amp={amp} channels_last={cl}", f"{r:,.0f}", f"{r / rates[0]:.2f}x")
            for (amp, cl), r in zip(VARIANTS, rates)]
    print(markdown_table(["ResNet-18 CE step", "images/s", "vs fp32"], rows))
    print(environment(device))


if __name__ == "__main__":
    main()

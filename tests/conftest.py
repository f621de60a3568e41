"""Shared test fixtures.

The real CIFAR-10 pack lives beside the repository at ../shared/data/cifar10-jpeg (CI has
it at the same relative path). A user's clone does not: tests that need it skip with a
clear reason, and the core suite runs on embedded (digits) or generated data.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR10_JPEG_DIR = Path(
    os.environ.get("SUPKD_CIFAR10_JPEG", REPO_ROOT.parent / "shared" / "data" / "cifar10-jpeg")
)

# Two cores are shared by everything in CI, including the subprocesses the integration tests
# start; OpenMP threads spin-wait when cores are contended (a 12-step run measured 40 s with
# 2 threads under load vs 0.8 s with 1), so every process of the test suite uses one thread.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cifar10_jpeg_dir() -> Path:
    """Path to the cifar10-jpeg pack, or skip the test when it is not beside the repo."""
    if not (CIFAR10_JPEG_DIR / "train.npz").is_file():
        pytest.skip(
            f"needs the CIFAR-10 JPEG pack at {CIFAR10_JPEG_DIR} "
            "(../shared/data/cifar10-jpeg beside the repository, or set SUPKD_CIFAR10_JPEG)"
        )
    return CIFAR10_JPEG_DIR


#: Tiny timm networks, one per family (a CNN, a ConvNeXt, a ViT), as (model name, timm_args)
#: for 32-pixel inputs: widths and depths cut down through timm_args so that a training step
#: takes milliseconds on one CPU core.
TIMM_TINY = {
    "cnn": ("timm/resnet10t", {"channels": [8, 16, 32, 64], "stem_width": 8}),
    "convnext": ("timm/convnext_atto", {"dims": [8, 16, 32, 64], "depths": [1, 1, 1, 1]}),
    "vit": ("timm/vit_tiny_patch16_224",
            {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}),
}


@pytest.fixture(scope="session")
def timm_tiny() -> dict[str, tuple[str, dict]]:
    """:data:`TIMM_TINY` (skips when timm is not installed: it is the ``timm`` extra)."""
    pytest.importorskip("timm")
    return TIMM_TINY

"""Data: data sets (digits, CIFAR-10/100, the cifar10-jpeg pack, ImageFolder trees),
transforms, and loaders (DataLoader or GPU-resident) yielding :class:`Batch` objects.

>>> bundle = build_data(DataConfig(name="digits"), seed=0)
>>> loader = make_loader(bundle, "train", 128, train=True, device="cpu", seed=0)
>>> for batch in loader: ...   # Batch(x (B, 1, 16, 16), y (B,), index (B,), aug (B, 3))
"""

from __future__ import annotations

from supkd.config import DataConfig
from supkd.data.batch import Batch
from supkd.data.datasets import (
    DATASETS,
    NORMALIZATION,
    DataBundle,
    ImageFolderDataset,
    TensorImageDataset,
    build_data,
    check_data_config,
)
from supkd.data.loader import Loader, make_loader

__all__ = [
    "DATASETS",
    "NORMALIZATION",
    "Batch",
    "DataBundle",
    "DataConfig",
    "ImageFolderDataset",
    "Loader",
    "TensorImageDataset",
    "build_data",
    "check_data_config",
    "make_loader",
]

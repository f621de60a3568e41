"""Data: data sets (digits, CIFAR-10/100, the cifar10-jpeg pack, ImageFolder trees),
transforms, and loaders (DataLoader or GPU-resident) yielding :class:`Batch` objects.

A data set is one :class:`DatasetSpec` (loader, native size, channels, normalization,
style) registered by its own file under :mod:`supkd.data.sets` with ``@register_dataset``;
``DATASETS`` is the registry, ``NATIVE_SIZES`` and ``NORMALIZATION`` read-only views of it.

>>> bundle = build_data(DataConfig(name="digits"), seed=0)
>>> loader = make_loader(bundle, "train", 128, train=True, device="cpu", seed=0)
>>> for batch in loader: ...   # Batch(x (B, 1, 16, 16), y (B,), index (B,), aug (B, 3))
"""

from __future__ import annotations

from supkd.config import DataConfig
from supkd.data.batch import Batch
from supkd.data.datasets import DataBundle, ImageFolderDataset, TensorImageDataset, build_data
from supkd.data.images import Source, tensor_source
from supkd.data.loader import Loader, make_loader
from supkd.data.spec import (
    DATASETS,
    NATIVE_SIZES,
    NORMALIZATION,
    DatasetSpec,
    LoadedSplits,
    check_cutout,
    check_data_config,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "NATIVE_SIZES",
    "NORMALIZATION",
    "Batch",
    "DataBundle",
    "DataConfig",
    "DatasetSpec",
    "ImageFolderDataset",
    "LoadedSplits",
    "Loader",
    "Source",
    "TensorImageDataset",
    "build_data",
    "check_cutout",
    "check_data_config",
    "make_loader",
    "register_dataset",
    "tensor_source",
]

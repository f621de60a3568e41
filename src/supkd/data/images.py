"""What the data-set files share: in-memory images, a split's source, decode and resize.

Small data sets (digits, CIFAR) are decoded once into one uint8 tensor (N, C, H, W)
(:class:`TensorImageDataset`): that tensor is what the GPU-resident loader moves to the
device. A :class:`Source` is one split before subsetting: its labels (for stratified splits)
and a ``take(indices)`` that materializes only the images kept (a subset of the JPEG pack
decodes only the images it needs).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "DEFAULT_ROOT",
    "TEST_FRACTION",
    "TEST_SPLIT_SEED",
    "Source",
    "TensorImageDataset",
    "quiet",
    "resize_all",
    "tensor_source",
]

#: Held-out test fraction for data sets without a test split of their own (digits, a plain
#: class-per-folder tree). Drawn with a fixed seed so the test set never depends on a run.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0
DEFAULT_ROOT = Path(os.environ.get("SUPKD_DATA", Path.home() / ".cache" / "supkd" / "data"))


def quiet(fn: Callable, *args, **kwargs):
    # torchvision 0.29 deprecates its image codecs in favour of TorchCodec (a further
    # dependency); they still work and are the fast path here, so the per-call warning
    # is silenced rather than repeated for every image.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torchvision")
        return fn(*args, **kwargs)


class TensorImageDataset(Dataset):
    """In-memory images: ``images`` uint8 (N, C, H, W), ``labels`` long (N,)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.classes = list(classes)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])

    def select(self, indices: torch.Tensor) -> TensorImageDataset:
        return TensorImageDataset(self.images[indices], self.labels[indices], self.classes)


@dataclass
class Source:
    """One split of a data set before subsetting: ``labels`` (N,) long, and ``take(indices)``
    giving the data set of those images. ``classes``: the class names, where the split
    knows them itself (a JPEG pack file)."""

    labels: torch.Tensor
    take: Callable[[torch.Tensor], Dataset]
    classes: list[str] | None = None


def tensor_source(ds: TensorImageDataset) -> Source:
    """The :class:`Source` of an in-memory data set."""
    return Source(ds.labels, ds.select)


def resize_all(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return TF.resize(images, [size, size], antialias=True)

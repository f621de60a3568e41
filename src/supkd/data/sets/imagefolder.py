"""``imagefolder``: any class-per-folder image tree (ImageNet layout or a single tree),
decoded file by file when read (DataLoader workers)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image

from supkd.config import DataConfig
from supkd.data.images import TEST_FRACTION, TEST_SPLIT_SEED, Source, quiet
from supkd.data.spec import LoadedSplits, register_dataset
from supkd.data.splits import stratified_split
from supkd.errors import DataError

__all__ = ["IMG_EXTENSIONS", "NATIVE_SIZE", "ImageFolderDataset", "load_imagefolder",
           "scan_image_folder"]

NATIVE_SIZE = 224
#: torchvision.datasets.folder.IMG_EXTENSIONS, lower case.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class ImageFolderDataset(Dataset):
    """Files of a class-per-folder tree, decoded to uint8 RGB (3, H, W) when read.

    Bad files fail fast: zero-byte files are found when the tree is scanned (one ``stat`` per
    file, cheap even for ImageNet), and a file that does not decode raises DataError naming
    it the first time it is read. Skipping would silently change the data set between runs
    and make results incomparable; a user should remove or replace the file instead.
    """

    def __init__(self, paths: Sequence[str], labels: torch.Tensor, classes: Sequence[str]) -> None:
        self.paths = list(paths)
        self.labels = labels.long()
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path = self.paths[i]
        try:
            data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
            image = quiet(decode_image, data, mode=ImageReadMode.RGB)
        except (RuntimeError, OSError, ValueError) as e:
            reason = str(e).strip().splitlines()[-1][:120] if str(e).strip() else type(e).__name__
            raise DataError(f"cannot decode image file {path}: {reason}") from None
        return image, int(self.labels[i])

    def select(self, indices: torch.Tensor) -> ImageFolderDataset:
        return ImageFolderDataset(
            [self.paths[i] for i in indices.tolist()], self.labels[indices], self.classes
        )


def scan_image_folder(root: Path) -> tuple[list[str], list[str], list[int]]:
    """(classes, file paths, labels) of a class-per-folder tree; DataError on a missing
    folder, no class folders, an empty class folder or a zero-byte file."""
    if not root.is_dir():
        raise DataError(f"image folder {root} not found")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(
            f"image folder {root} has no class sub-folders (expected ROOT/<class>/<image>)"
        )
    paths: list[str] = []
    labels: list[int] = []
    for k, c in enumerate(classes):
        found = 0
        for dirpath, dirnames, filenames in os.walk(root / c, followlinks=True):
            dirnames.sort()
            for f in sorted(filenames):
                if f.lower().endswith(IMG_EXTENSIONS) and not f.startswith("."):
                    p = os.path.join(dirpath, f)
                    if os.path.getsize(p) == 0:
                        raise DataError(f"image file {p} is empty (0 bytes); remove or replace it")
                    paths.append(p)
                    labels.append(k)
                    found += 1
        if found == 0:
            raise DataError(
                f"class folder {root / c} holds no images (expected files ending in "
                f"{', '.join(IMG_EXTENSIONS)})"
            )
    return classes, paths, labels


# ImageNet statistics (torchvision's pretrained models expect these) and ImageNet-style
# augmentation (RandomResizedCrop; resize + center crop at evaluation).
@register_dataset("imagefolder", native_size=NATIVE_SIZE, channels=3, style="imagenet",
                  normalization=((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
def load_imagefolder(cfg: DataConfig) -> LoadedSplits:
    """``ROOT/train/<class>/*`` + ``ROOT/val/<class>/*`` (ImageNet layout; ``test/`` also
    accepted), or a single ``ROOT/<class>/*`` tree from which a stratified 20% test split
    is held out with a fixed seed."""
    if not cfg.root:
        raise DataError("config field 'data.root': imagefolder needs the folder of the image tree")
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder {root} not found")
    held_out = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    if (root / "train").is_dir() and held_out is not None:
        classes, paths, labels = scan_image_folder(root / "train")
        test_classes, test_paths, test_labels = scan_image_folder(held_out)
        if test_classes != classes:
            raise DataError(
                f"image folder {held_out}: its classes differ from {root / 'train'} "
                f"({len(test_classes)} vs {len(classes)} class folders)"
            )
        train = ImageFolderDataset(paths, torch.tensor(labels), classes)
        test = ImageFolderDataset(test_paths, torch.tensor(test_labels), classes)
    else:
        classes, paths, labels = scan_image_folder(root)
        full = ImageFolderDataset(paths, torch.tensor(labels), classes)
        test_idx, train_idx = stratified_split(
            full.labels, round(TEST_FRACTION * len(full)), TEST_SPLIT_SEED
        )
        train, test = full.select(train_idx), full.select(test_idx)
    return LoadedSplits(
        Source(train.labels, train.select),
        Source(test.labels, test.select),
        classes,
        cfg.image_size or NATIVE_SIZE,
    )

"""``cifar10-jpeg``: the CIFAR-10 images as one ``.npz`` of JPEGs per split, for work with no
network (format: docs/design.md §6)."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_jpeg

from supkd.config import DataConfig
from supkd.data.images import Source, TensorImageDataset, quiet, resize_all
from supkd.data.spec import LoadedSplits, register_dataset
from supkd.errors import DataError

__all__ = ["NATIVE_SIZE", "PACK_ARRAYS", "load_cifar10_jpeg", "load_jpeg_pack"]

NATIVE_SIZE = 32
PACK_ARRAYS = ("jpeg", "offsets", "labels", "classes")


def _read_pack(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The four arrays of a pack file, checked (DataError naming the file and the array)."""
    if not path.is_file():
        raise DataError(f"JPEG pack file {path} not found (expected train.npz and test.npz there)")
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an archive of named arrays")
        with z:
            arrays = {k: z[k] for k in z.files if k in PACK_ARRAYS}
    # A damaged zip raises zipfile.BadZipFile (not an OSError), a truncated member EOFError
    # or zlib.error: all mean the same to the user, so they get the same DataError.
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        reason = str(e).strip().splitlines()[-1][:120] if str(e).strip() else type(e).__name__
        raise DataError(f"JPEG pack file {path}: not a readable .npz ({reason})") from None
    for k in PACK_ARRAYS:
        if k not in arrays:
            raise DataError(
                f"JPEG pack file {path}: missing array {k!r} (expected {', '.join(PACK_ARRAYS)})"
            )
    jpeg, offsets, labels, classes = (arrays[k] for k in PACK_ARRAYS)
    n = len(labels)
    if jpeg.dtype != np.uint8 or jpeg.ndim != 1:
        raise DataError(
            f"JPEG pack file {path}: array 'jpeg' must be 1-D uint8, got {jpeg.dtype} {jpeg.shape}"
        )
    if (
        offsets.shape != (n + 1,)
        or offsets[0] != 0
        or offsets[-1] != len(jpeg)
        or np.any(np.diff(offsets) <= 0)
    ):
        raise DataError(
            f"JPEG pack file {path}: array 'offsets' must hold N+1={n + 1} increasing entries "
            f"from 0 to len(jpeg)={len(jpeg)}"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"JPEG pack file {path}: array 'labels' must be 1-D integers")
    if n and (labels.min() < 0 or labels.max() >= len(classes)):
        raise DataError(
            f"JPEG pack file {path}: labels out of range: found {labels.min()}..{labels.max()}, "
            f"expected 0..{len(classes) - 1} ({len(classes)} classes)"
        )
    return jpeg, offsets, labels, classes


def load_jpeg_pack(path: Path, image_size: int | None = None) -> Source:
    """Read one split of the npz JPEG pack (format: docs/design.md §6).

    Validates the arrays (all four present, offsets monotone and ending at len(jpeg), labels
    in 0..len(classes)-1) and decodes only the images a split keeps, all at once with
    ``torchvision.io.decode_jpeg`` on a list (about 2 s for 50,000 on two cores).
    """
    jpeg, offsets, labels, classes = _read_pack(path)
    class_names = [str(c) for c in classes]
    blob = torch.from_numpy(jpeg)
    offs = offsets.tolist()

    def take(indices: torch.Tensor) -> TensorImageDataset:
        idx = indices.tolist()
        chunks = [blob[offs[i] : offs[i + 1]] for i in idx]
        try:
            images = quiet(decode_jpeg, chunks, mode=ImageReadMode.RGB) if chunks else []
        except RuntimeError:
            # decode_jpeg on a list does not say which image failed: find it.
            for i, c in zip(idx, chunks):
                try:
                    quiet(decode_jpeg, c, mode=ImageReadMode.RGB)
                except RuntimeError:
                    raise DataError(f"JPEG pack file {path}: image {i} does not decode") from None
            raise
        if images and len({tuple(t.shape) for t in images}) > 1:
            raise DataError(f"JPEG pack file {path}: images of different sizes")
        stacked = torch.stack(images) if images else torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
        if image_size:
            stacked = resize_all(stacked, image_size)
        return TensorImageDataset(
            stacked, torch.from_numpy(labels[idx].astype(np.int64)), class_names
        )

    return Source(torch.from_numpy(labels.astype(np.int64)), take, class_names)


# Statistics measured on the decoded JPEG training split (docs/design.md §6).
@register_dataset("cifar10-jpeg", native_size=NATIVE_SIZE, channels=3,
                  normalization=((0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)))
def load_cifar10_jpeg(cfg: DataConfig) -> LoadedSplits:
    root = cfg.root or os.environ.get("SUPKD_CIFAR10_JPEG")
    if not root:
        raise DataError(
            "config field 'data.root': cifar10-jpeg needs the folder holding train.npz and test.npz"
        )
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError(f"cifar10-jpeg folder {folder} not found (expected train.npz and test.npz)")
    train = load_jpeg_pack(folder / "train.npz", cfg.image_size)
    test = load_jpeg_pack(folder / "test.npz", cfg.image_size)
    if train.classes != test.classes:
        raise DataError(
            f"cifar10-jpeg folder {folder}: train.npz and test.npz list different classes"
        )
    return LoadedSplits(train, test, list(train.classes or []), cfg.image_size or NATIVE_SIZE)

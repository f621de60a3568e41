"""The data sets: digits (embedded), CIFAR-10/100 (torchvision), the cifar10-jpeg pack and
ImageFolder trees, all returning ``(uint8 image (C, H, W), int label)``.

Small data sets (digits, CIFAR) are decoded once into one uint8 tensor (N, C, H, W): that
tensor is what the GPU-resident loader moves to the device. ImageFolder trees decode each
file when it is read (DataLoader workers).
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as TF

from supkd.config import DataConfig
from supkd.data.splits import stratified_split
from supkd.errors import ConfigError, DataError
from supkd.utils.registry import did_you_mean

#: Side of each data set's images when ``image_size`` is None (the loaders' defaults), so
#: that ``cutout`` can be checked before any data is loaded.
NATIVE_SIZES = {"digits": 16, "cifar10": 32, "cifar100": 32, "cifar10-jpeg": 32, "imagefolder": 224}

#: Per-data-set channel statistics in [0, 1] units (mean, std).
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # Computed on the CIFAR-10 training set (the std of the pixels, not of per-image means).
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # Measured on the decoded JPEG training split (../shared/data/cifar10-jpeg/README.md).
    "cifar10-jpeg": ((0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)),
    # ImageNet statistics (torchvision's pretrained models expect these).
    "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
#: torchvision.datasets.folder.IMG_EXTENSIONS, lower case.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Held-out test fraction for data sets without a test split of their own (digits, a plain
#: class-per-folder tree). Drawn with a fixed seed so the test set never depends on a run.
TEST_FRACTION = 0.2
TEST_SPLIT_SEED = 0
DEFAULT_ROOT = Path(os.environ.get("SUPKD_DATA", Path.home() / ".cache" / "supkd" / "data"))


def _quiet(fn: Callable, *args, **kwargs):
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
            image = _quiet(decode_image, data, mode=ImageReadMode.RGB)
        except (RuntimeError, OSError, ValueError) as e:
            reason = str(e).strip().splitlines()[-1][:120] if str(e).strip() else type(e).__name__
            raise DataError(f"cannot decode image file {path}: {reason}") from None
        return image, int(self.labels[i])

    def select(self, indices: torch.Tensor) -> ImageFolderDataset:
        return ImageFolderDataset(
            [self.paths[i] for i in indices.tolist()], self.labels[indices], self.classes
        )


@dataclass
class DataBundle:
    """The splits of one data set and what the models and transforms need to know about it.

    ``style``: ``small`` (fixed-size images; pad-crop + flip, no resize at eval) or
    ``imagenet`` (RandomResizedCrop for training, resize + center crop at eval).
    ``pad``: the crop padding of the small style (4 for 32x32, as in the ResNet/CIFAR recipe).
    """

    name: str
    train: Dataset
    val: Dataset | None
    test: Dataset
    num_classes: int
    classes: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_channels: int
    style: str = "small"
    pad: int = 4
    config: DataConfig = field(default_factory=DataConfig)

    def split(self, name: str) -> Dataset:
        """The data set of split ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {name!r}")
        ds = getattr(self, name)
        if ds is None:
            raise DataError(f"data set {self.name!r} has no {name} split (data.val_fraction is 0?)")
        return ds


# A split whose images are materialized only for the indices kept (lets a subset of the
# JPEG pack decode only the images it needs).
@dataclass
class _Source:
    labels: torch.Tensor
    take: Callable[[torch.Tensor], Dataset]


def _tensor_source(ds: TensorImageDataset) -> _Source:
    return _Source(ds.labels, ds.select)


def _resize_all(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return TF.resize(images, [size, size], antialias=True)


# --------------------------------------------------------------------------- digits
def _digits(cfg: DataConfig) -> tuple[_Source, _Source, list[str], int]:
    """scikit-learn's 1,797 embedded 8x8 digits (UCI optdigits test set), offline.

    Shaped for small ResNets: the 0..16 gray levels are scaled to uint8 0..255 and the images
    upsampled (bilinear) to ``image_size`` (default 16x16) with one channel, so that a CIFAR
    stem ResNet keeps a 2x2 map at layer4 (8x8 would leave 1x1) while an epoch of a width-8
    ResNet-18 stays well under a second on two CPU cores. No official test split exists: a
    stratified 20% is held out with a fixed seed.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    images = _resize_all(images, cfg.image_size or NATIVE_SIZES["digits"])
    labels = torch.from_numpy(d.target.astype(np.int64))
    classes = [str(c) for c in d.target_names]
    full = TensorImageDataset(images, labels, classes)
    test_idx, train_idx = stratified_split(
        labels, round(TEST_FRACTION * len(labels)), TEST_SPLIT_SEED
    )
    return (
        _tensor_source(full.select(train_idx)),
        _tensor_source(full.select(test_idx)),
        classes,
        images.shape[-1],
    )


# --------------------------------------------------------------------- CIFAR (torchvision)
def _torchvision_cifar(cfg: DataConfig) -> tuple[_Source, _Source, list[str], int]:
    from torchvision import datasets

    cls = datasets.CIFAR10 if cfg.name == "cifar10" else datasets.CIFAR100
    root = Path(cfg.root).expanduser() if cfg.root else DEFAULT_ROOT / cfg.name
    folder = "cifar-10-batches-py" if cfg.name == "cifar10" else "cifar-100-python"
    url = "https://www.cs.toronto.edu/~kriz/cifar.html"
    try:
        splits = [cls(str(root), train=t, download=cfg.download and t) for t in (True, False)]
    except Exception as e:  # torchvision raises RuntimeError / URLError / OSError
        how = (
            "download failed (no network?)"
            if cfg.download
            else "not found and data.download is false"
        )
        raise DataError(
            f"{cfg.name}: {how} in {root} ({type(e).__name__}); fill it by downloading the "
            f"python version from {url} and extracting it there (giving {root / folder}), "
            "or use data.name=cifar10-jpeg with a local pack"
        ) from None
    sources = []
    for s in splits:
        images = torch.from_numpy(np.asarray(s.data)).permute(0, 3, 1, 2).contiguous()
        if cfg.image_size:
            images = _resize_all(images, cfg.image_size)
        ds = TensorImageDataset(images, torch.as_tensor(s.targets), s.classes)
        sources.append(_tensor_source(ds))
    return sources[0], sources[1], list(splits[0].classes), cfg.image_size or NATIVE_SIZES[cfg.name]


# --------------------------------------------------------------------- cifar10-jpeg pack
PACK_ARRAYS = ("jpeg", "offsets", "labels", "classes")


def load_jpeg_pack(path: Path, image_size: int | None = None) -> _Source:
    """Read one split of the npz JPEG pack (format: ../shared/data/cifar10-jpeg/README.md).

    Validates the arrays (all four present, offsets monotone and ending at len(jpeg), labels
    in 0..len(classes)-1) and decodes only the images a split keeps, all at once with
    ``torchvision.io.decode_jpeg`` on a list (about 2 s for 50,000 on two cores).
    """
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
    class_names = [str(c) for c in classes]
    blob = torch.from_numpy(jpeg)
    offs = offsets.tolist()

    def take(indices: torch.Tensor) -> TensorImageDataset:
        idx = indices.tolist()
        chunks = [blob[offs[i] : offs[i + 1]] for i in idx]
        try:
            images = _quiet(decode_jpeg, chunks, mode=ImageReadMode.RGB) if chunks else []
        except RuntimeError:
            # decode_jpeg on a list does not say which image failed: find it.
            for i, c in zip(idx, chunks):
                try:
                    _quiet(decode_jpeg, c, mode=ImageReadMode.RGB)
                except RuntimeError:
                    raise DataError(f"JPEG pack file {path}: image {i} does not decode") from None
            raise
        if images and len({tuple(t.shape) for t in images}) > 1:
            raise DataError(f"JPEG pack file {path}: images of different sizes")
        stacked = torch.stack(images) if images else torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
        if image_size:
            stacked = _resize_all(stacked, image_size)
        return TensorImageDataset(
            stacked, torch.from_numpy(labels[idx].astype(np.int64)), class_names
        )

    src = _Source(torch.from_numpy(labels.astype(np.int64)), take)
    src.classes = class_names  # type: ignore[attr-defined]
    return src


def _cifar10_jpeg(cfg: DataConfig) -> tuple[_Source, _Source, list[str], int]:
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
    if train.classes != test.classes:  # type: ignore[attr-defined]
        raise DataError(
            f"cifar10-jpeg folder {folder}: train.npz and test.npz list different classes"
        )
    size = cfg.image_size or NATIVE_SIZES["cifar10-jpeg"]
    return train, test, train.classes, size  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- ImageFolder
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


def _imagefolder(cfg: DataConfig) -> tuple[_Source, _Source, list[str], int]:
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
    return (
        _Source(train.labels, train.select),
        _Source(test.labels, test.select),
        classes,
        cfg.image_size or NATIVE_SIZES["imagefolder"],
    )


_LOADERS = {
    "digits": _digits,
    "cifar10": _torchvision_cifar,
    "cifar100": _torchvision_cifar,
    "cifar10-jpeg": _cifar10_jpeg,
    "imagefolder": _imagefolder,
}


#: The data sets ``data.name`` may name.
DATASETS = tuple(_LOADERS)


def check_data_config(cfg: DataConfig) -> None:
    """The checks of a ``data:`` section that need the data set's own facts (its name, its
    native image size); ConfigError naming the field. Loads nothing."""
    if cfg.name not in _LOADERS:
        raise ConfigError(
            f"config field 'data.name': expected one of {', '.join(_LOADERS)}, "
            f"got {cfg.name!r}" + did_you_mean(cfg.name, list(_LOADERS))
        )
    side = cfg.image_size or NATIVE_SIZES[cfg.name]
    if cfg.cutout >= side:
        raise ConfigError(
            f"config field 'data.cutout': expected a side smaller than the {side}-pixel "
            f"images, got {cfg.cutout}"
        )


def _subset(labels: torch.Tensor, idx: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    if n is None or n >= len(idx):
        return idx
    keep, _ = stratified_split(labels[idx], n, seed)
    return idx[keep]


def build_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """Load the data set of ``cfg`` and split it into train / val / test.

    The validation split is a stratified ``val_fraction`` of the training set, drawn with
    ``cfg.split_seed`` (or ``seed`` when that is None); ``subset`` then keeps that many
    images of each split, stratified. Raises DataError for missing or corrupt data.
    """
    check_data_config(cfg)
    split_seed = seed if cfg.split_seed is None else cfg.split_seed
    train_src, test_src, classes, image_size = _LOADERS[cfg.name](cfg)
    n = len(train_src.labels)
    if n == 0:
        raise DataError(f"data set {cfg.name!r} has an empty training split")
    train_idx = torch.arange(n)
    val_idx = None
    if cfg.val_fraction > 0 and n >= 2:
        n_val = min(n - 1, max(1, round(cfg.val_fraction * n)))
        val_idx, train_idx = stratified_split(train_src.labels, n_val, split_seed)
    train_idx = _subset(train_src.labels, train_idx, cfg.subset, split_seed + 1)
    test_idx = _subset(
        test_src.labels, torch.arange(len(test_src.labels)), cfg.subset, split_seed + 2
    )
    train = train_src.take(train_idx)
    val = None
    if val_idx is not None:
        val = train_src.take(_subset(train_src.labels, val_idx, cfg.subset, split_seed + 3))
    test = test_src.take(test_idx)
    in_channels = 1 if cfg.name == "digits" else 3
    if cfg.name == "digits":
        # No published statistics for the rescaled digits: measure them on the training split.
        pix = train.images.float().div(255)  # type: ignore[attr-defined]
        mean, std = (float(pix.mean()),), (float(pix.std()),)
    else:
        mean, std = NORMALIZATION[cfg.name]
    style = "imagenet" if cfg.name == "imagefolder" else "small"
    return DataBundle(
        name=cfg.name,
        train=train,
        val=val,
        test=test,
        num_classes=len(classes),
        classes=list(classes),
        image_size=image_size,
        mean=tuple(mean),
        std=tuple(std),
        in_channels=in_channels,
        style=style,
        pad=max(1, image_size // 8),
        config=cfg,
    )

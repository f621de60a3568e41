"""Loading a data set into its splits: :class:`DataBundle` and :func:`build_data`.

The data sets themselves are specs registered by their own files under
:mod:`supkd.data.sets` (:mod:`supkd.data.spec`); this module only loads the one a config
names, splits off the validation set, takes subsets and attaches the spec's facts (channels,
normalization, style). The names below that come from elsewhere are re-exported for older
imports (``from supkd.data.datasets import NORMALIZATION``).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import Dataset

from supkd.config import DataConfig
from supkd.data.images import (
    DEFAULT_ROOT,
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    TensorImageDataset,
    identity_digest,
)
from supkd.data.sets.imagefolder import IMG_EXTENSIONS, ImageFolderDataset, scan_image_folder
from supkd.data.sets.jpeg_pack import PACK_ARRAYS, load_jpeg_pack
from supkd.data.spec import (
    DATASETS,
    NATIVE_SIZES,
    NORMALIZATION,
    DatasetSpec,
    check_data_config,
)
from supkd.data.splits import stratified_split
from supkd.errors import ConfigError, DataError, SupkdWarning

__all__ = [
    "DATASETS",
    "DEFAULT_ROOT",
    "IMG_EXTENSIONS",
    "NATIVE_SIZES",
    "NORMALIZATION",
    "PACK_ARRAYS",
    "TEST_FRACTION",
    "TEST_SPLIT_SEED",
    "DataBundle",
    "ImageFolderDataset",
    "TensorImageDataset",
    "build_data",
    "check_data_config",
    "load_jpeg_pack",
    "scan_image_folder",
]


@dataclass
class DataBundle:
    """The splits of one data set and what the models and transforms need to know about it.

    ``style``: ``small`` (fixed-size images; pad-crop + flip, no resize at eval) or
    ``imagenet`` (RandomResizedCrop for training, resize + center crop at eval).
    ``pad``: the crop padding of the small style (4 for 32x32, as in the ResNet/CIFAR recipe),
    of the images as held (``stored_size`` with ``data.resize: batch``).
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
    #: side of the images as held in memory when it is not ``image_size``
    #: (``data.resize: batch``: each batch is resized on the device); None: ``image_size``
    stored_size: int | None = None

    @property
    def resize_to(self) -> int | None:
        """The side batches are resized to on the device, or None when the held images
        already have ``image_size`` (``data.resize: load``, or no resize asked for)."""
        if self.stored_size is None or self.stored_size == self.image_size:
            return None
        return int(self.image_size)

    def split(self, name: str) -> Dataset:
        """The data set of split ``train``, ``val`` or ``test``."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {name!r}")
        ds = getattr(self, name)
        if ds is None:
            raise DataError(f"data set {self.name!r} has no {name} split (data.val_fraction is 0?)")
        return ds

    def summary(self) -> dict[str, Any]:
        """What a run saw (``result.json``'s ``data``): the data set's name, images per split
        (0 for no validation split), classes, and ``fingerprint``, a SHA-256 over each
        split's content identity (``identity()``: pixels and labels of an in-memory set,
        file names, sizes and labels of an image folder), or None when a split cannot say
        (a user's data set without ``identity``)."""
        splits = {"train": self.train, "val": self.val, "test": self.test}
        out: dict[str, Any] = {"name": self.name}
        out.update({k: len(v) if v is not None else 0 for k, v in splits.items()})  # type: ignore[arg-type]
        out["classes"] = self.num_classes
        if all(v is None or callable(getattr(v, "identity", None)) for v in splits.values()):
            parts = [f"{k}={v.identity() if v is not None else '-'}" for k, v in splits.items()]
            out["fingerprint"] = "sha256:" + identity_digest(*parts)[:32]
        else:
            out["fingerprint"] = None
        return out


def _subset(labels: torch.Tensor, idx: torch.Tensor, n: int | None, seed: int) -> torch.Tensor:
    if n is None or n >= len(idx):
        return idx
    keep, _ = stratified_split(labels[idx], n, seed)
    return idx[keep]


def _measured_statistics(
    spec: DatasetSpec, train: Dataset
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) in [0, 1] units of an in-memory training split, for a data
    set that registers no statistics (digits: none are published for the rescaled images)."""
    images = getattr(train, "images", None)
    if not isinstance(images, torch.Tensor):
        raise DataError(f"data set {spec.name!r} registers no normalization and its training "
                        "split is not in memory to measure it on")
    pix = images.float().div(255)
    if pix.shape[1] == 1:
        return (float(pix.mean()),), (float(pix.std()),)
    per_channel = pix.transpose(0, 1).flatten(1)
    return tuple(per_channel.mean(1).tolist()), tuple(per_channel.std(1).tolist())


def _check_splits(where: str, classes: list[str], train_labels: torch.Tensor, n_test: int,
                  n_test_all: int, n_train_all: int) -> None:
    """DataError for an empty test split; SupkdWarning for a single class or classes with
    no training image (accuracy would then mislead)."""
    if n_test == 0:
        raise DataError(
            f"{where}: the test split is empty (expected at least one image; of "
            f"{n_train_all + n_test_all} images, {n_test_all} are held out for testing)"
        )
    if len(classes) == 1:
        warnings.warn(f"{where} has a single class ({classes[0]!r}): every prediction is "
                      "right, so accuracy says nothing", SupkdWarning, stacklevel=3)
        return
    counts = torch.bincount(train_labels.long(), minlength=len(classes))
    missing = [classes[k] for k in torch.nonzero(counts == 0).flatten().tolist()]
    if missing:
        shown = ", ".join(repr(c) for c in missing[:3]) + (" ..." if len(missing) > 3 else "")
        warnings.warn(f"{where}: {len(missing)} of {len(classes)} classes ({shown}) have no "
                      "image in the training split; the model can never predict them",
                      SupkdWarning, stacklevel=3)


def build_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """Load the data set of ``cfg`` and split it into train / val / test.

    The validation split is a stratified ``val_fraction`` of the training set, drawn with
    ``cfg.split_seed`` (or ``seed`` when that is None); ``subset`` then keeps that many
    images of each split, stratified. Raises DataError for missing or corrupt data.
    """
    check_data_config(cfg)
    split_seed = seed if cfg.split_seed is None else cfg.split_seed
    spec = DATASETS[cfg.name]
    per_batch = _resize_per_batch(cfg, spec)
    # Per batch: the data set is loaded at its own size and the loaders resize each batch.
    load_cfg = dataclasses.replace(cfg, image_size=None) if per_batch else cfg
    train_src, test_src, classes, image_size = spec.load(load_cfg)
    stored = image_size
    if per_batch:
        image_size = int(cfg.image_size)
    n = len(train_src.labels)
    where = f"data set {cfg.name!r}" + (f" ({cfg.root})" if cfg.root else "")
    if n == 0:
        raise DataError(f"{where} has an empty training split")
    if cfg.val_fraction > 0 and n < 2:
        raise DataError(f"{where}: data.val_fraction {cfg.val_fraction:g} needs at least 2 "
                        f"training images, it has {n}")
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
    _check_splits(where, classes, train_src.labels[train_idx], len(test), len(test_src.labels),
                  n)
    mean, std = spec.normalization or _measured_statistics(spec, train)
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
        in_channels=spec.channels,
        style=spec.style,
        pad=max(1, stored // 8),
        config=cfg,
        stored_size=stored if stored != image_size else None,
    )


def _resize_per_batch(cfg: DataConfig, spec: DatasetSpec) -> bool:
    """Whether ``data.resize`` resolves to ``batch`` for this data set (see DataConfig)."""
    if cfg.image_size is None or cfg.image_size == spec.native_size:
        return False
    if spec.style != "small":
        if cfg.resize == "batch":
            raise ConfigError(
                f"config field 'data.resize': 'batch' is for in-memory data sets of fixed-size "
                f"images; {cfg.name!r} resizes every image in its transforms (use auto or load)"
            )
        return False
    if cfg.resize == "auto":
        return cfg.image_size > spec.native_size
    return cfg.resize == "batch"

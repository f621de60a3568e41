"""``digits``: scikit-learn's embedded 8x8 digits, the data set that needs no download."""

from __future__ import annotations

import numpy as np
import torch

from supkd.config import DataConfig
from supkd.data.images import (
    TEST_FRACTION,
    TEST_SPLIT_SEED,
    TensorImageDataset,
    resize_all,
    tensor_source,
)
from supkd.data.spec import LoadedSplits, register_dataset
from supkd.data.splits import stratified_split

__all__ = ["NATIVE_SIZE", "load_digits"]

#: 16x16: see load_digits for why not the original 8x8.
NATIVE_SIZE = 16


# One channel; no published statistics for the rescaled digits: measured on the training
# split (normalization None).
@register_dataset("digits", native_size=NATIVE_SIZE, channels=1)
def load_digits(cfg: DataConfig) -> LoadedSplits:
    """scikit-learn's 1,797 embedded 8x8 digits (UCI optdigits test set), offline.

    Shaped for small ResNets: the 0..16 gray levels are scaled to uint8 0..255 and the images
    upsampled (bilinear) to ``image_size`` (default 16x16) with one channel, so that a CIFAR
    stem ResNet keeps a 2x2 map at layer4 (8x8 would leave 1x1) while an epoch of a width-8
    ResNet-18 stays well under a second on two CPU cores. No official test split exists: a
    stratified 20% is held out with a fixed seed.
    """
    # Imported here, not at the top: scikit-learn takes about a second to import and only
    # this data set needs it (every other run would pay for it).
    from sklearn.datasets import load_digits as sklearn_digits

    d = sklearn_digits()
    images = torch.from_numpy(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    images = resize_all(images, cfg.image_size or NATIVE_SIZE)
    labels = torch.from_numpy(d.target.astype(np.int64))
    classes = [str(c) for c in d.target_names]
    full = TensorImageDataset(images, labels, classes)
    test_idx, train_idx = stratified_split(
        labels, round(TEST_FRACTION * len(labels)), TEST_SPLIT_SEED
    )
    return LoadedSplits(
        tensor_source(full.select(train_idx)),
        tensor_source(full.select(test_idx)),
        classes,
        images.shape[-1],
    )

"""``cifar10`` and ``cifar100`` through torchvision (downloaded when online, or a folder)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision import datasets

from supkd.config import DataConfig
from supkd.data.images import DEFAULT_ROOT, TensorImageDataset, resize_all, tensor_source
from supkd.data.spec import LoadedSplits, register_dataset
from supkd.errors import DataError

__all__ = ["NATIVE_SIZE", "load_cifar"]

NATIVE_SIZE = 32


# Statistics computed on each training set (the std of the pixels, not of per-image means).
# Decorators apply bottom-up: cifar10 is registered first.
@register_dataset("cifar100", native_size=NATIVE_SIZE, channels=3,
                  normalization=((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)))
@register_dataset("cifar10", native_size=NATIVE_SIZE, channels=3,
                  normalization=((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)))
def load_cifar(cfg: DataConfig) -> LoadedSplits:
    """torchvision's CIFAR-10 / CIFAR-100 (``cfg.name``) in ``cfg.root`` (default
    ``$SUPKD_DATA/<name>``), downloaded when ``data.download`` and missing."""
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
            images = resize_all(images, cfg.image_size)
        ds = TensorImageDataset(images, torch.as_tensor(s.targets), s.classes)
        sources.append(tensor_source(ds))
    return LoadedSplits(sources[0], sources[1], list(splits[0].classes),
                        cfg.image_size or NATIVE_SIZE)

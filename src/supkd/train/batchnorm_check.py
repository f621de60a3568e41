"""The per-process batch against the BatchNorm layers of a model, checked before training.

In training mode ``nn.BatchNorm`` normalizes each channel over the batch and the spatial
positions; with a single value per channel there is nothing to normalize by and PyTorch
raises ``ValueError: Expected more than 1 value per channel when training`` at the first
step (``torch.nn.functional._verify_batch_size``). That happens only when a process's batch
holds one image and some BatchNorm layer sees 1x1 feature maps (e.g. an ImageNet-stem
ResNet on 32x32 images, whose last stage is 1x1). :func:`check_batchnorm_batch` finds
such a layer with one forward of a single blank image in eval mode (no running statistic
changes), so that the config is refused with one line naming ``train.batch_size``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from supkd.errors import ConfigError

__all__ = ["check_batchnorm_batch"]


def check_batchnorm_batch(model: nn.Module, per_process_batch: int, image_shape: Sequence[int],
                          field: str = "train.batch_size") -> None:
    """ConfigError when ``per_process_batch`` images (after views are flattened) leave a
    BatchNorm layer of ``model`` one value per channel; ``image_shape`` is (C, H, W)."""
    if per_process_batch > 1:
        return  # >= 2 values per channel whatever the feature maps
    norms = [(name, m) for name, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    single: list[str] = []

    def hook(name: str):
        def record(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            if x.dim() >= 2 and x.numel() // max(int(x.shape[1]), 1) <= 1:
                single.append(name)
        return record

    handles = [m.register_forward_pre_hook(hook(name)) for name, m in norms]
    was_training = model.training
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *image_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if single:
        raise ConfigError(
            f"config field '{field}': {per_process_batch} image per process and step leaves "
            f"BatchNorm layer '{single[0]}' one value per channel (1x1 feature maps), which "
            "training cannot normalize; use a batch of at least 2 per process"
        )

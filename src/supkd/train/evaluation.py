"""Moving a loader's batch to the device, and top-1 accuracy over a loader."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from supkd.data import Batch

__all__ = ["evaluate", "to_batch"]


def to_batch(obj: Any, device: torch.device, channels_last: bool) -> Batch:
    """What a loader yields (a Batch, ``(x, y)``, a mapping) as a Batch on ``device``;
    4-d images in channels_last memory format when asked."""
    batch = Batch.from_any(obj, device)
    if channels_last and batch.x.dim() == 4:
        batch.x = batch.x.contiguous(memory_format=torch.channels_last)
    return batch


@torch.no_grad()
def evaluate(
    predict: Callable[[torch.Tensor], torch.Tensor],
    loader: Iterable[Any],
    device: torch.device | str,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> float:
    """Top-1 accuracy (%) of ``predict(x) -> logits (B, C)`` over ``loader``.

    Correct counts are summed on the device; one host read at the end.
    """
    device = torch.device(device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    total = 0
    for obj in loader:
        batch = to_batch(obj, device, channels_last)
        with torch.autocast(
            device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
        ):
            logits = predict(batch.x)
        correct += (logits.argmax(dim=1) == batch.y).sum()
        total += int(batch.y.shape[0])
    if total == 0:
        raise ValueError("evaluate: the loader yielded no samples")
    return 100.0 * int(correct.item()) / total

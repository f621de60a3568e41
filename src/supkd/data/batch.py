"""The batch every loader yields, and the adapter for users' own DataLoaders."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Batch:
    """One training or evaluation batch.

    - ``x``: float, normalized, on the device; (B, C, H, W), or (B, V, C, H, W) for V views.
    - ``y``: (B,) long labels.
    - ``index``: (B,) long indices into the split's data set, or None (user loaders).
    - ``aug``: (B, 3) long ``[dy, dx, flip]`` of the pad-crop + flip augmentation when it is
      the only augmentation (the teacher cache looks views up by it), else None (also with
      ``data.cutout``: the erased view is not the cached one). ``dy, dx`` index the top-left
      corner of the crop in the padded image.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor | None = None
    aug: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(mv(self.x), mv(self.y).long(), mv(self.index), mv(self.aug))  # type: ignore[union-attr]

    @classmethod
    def from_any(cls, obj: Any, device: torch.device | str | None = None) -> Batch:
        """Wrap what a loader yields into a Batch on ``device``.

        Accepts a Batch, an ``(x, y)`` / ``(x, y, ...)`` tuple or list (extra items ignored),
        or a mapping with ``x``/``image``/``input`` and ``y``/``label``/``target`` keys.
        """
        if isinstance(obj, Batch):
            batch = obj
        elif isinstance(obj, Mapping):
            x = next((obj[k] for k in ("x", "image", "input") if k in obj), None)
            y = next((obj[k] for k in ("y", "label", "target") if k in obj), None)
            if x is None or y is None:
                raise ValueError(
                    "batch mapping needs an 'x' (or 'image'/'input') and a 'y' (or "
                    f"'label'/'target') key, got keys {sorted(obj)}"
                )
            batch = cls(torch.as_tensor(x), torch.as_tensor(y))
        elif isinstance(obj, Sequence) and not isinstance(obj, str | bytes) and len(obj) >= 2:
            batch = cls(torch.as_tensor(obj[0]), torch.as_tensor(obj[1]))
        else:
            raise ValueError(
                "a batch must be a supkd Batch, an (x, y) tuple or a mapping with x and y, "
                f"got {type(obj).__name__}"
            )
        if batch.y.dim() != 1 or batch.y.shape[0] != batch.x.shape[0]:
            raise ValueError(
                f"batch labels must have shape (B,) matching x (B, ...), got x "
                f"{tuple(batch.x.shape)} and y {tuple(batch.y.shape)}"
            )
        if device is None:
            return Batch(batch.x, batch.y.long(), batch.index, batch.aug)
        return batch.to(device, non_blocking=True)

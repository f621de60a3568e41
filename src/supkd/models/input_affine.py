"""``input_affine``: how a network trained with other input statistics sees supkd's inputs.

A teacher trained elsewhere (SupContrast, torchvision, timm's pretrained weights) expects its
inputs normalized with the statistics of its own training, while supkd's loaders normalize with
the data set's (``supkd.data.datasets.NORMALIZATION``). :class:`InputAffine` is the per-channel
``x * scale + shift`` that converts one into the other, :func:`input_affine_between` computes
it from the two sets of statistics, :func:`check_input_affine` validates a spec's value. Every
model family (``resnet.py``, ``timm_models.py``) applies it first in its encoder.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["STATS_ATOL", "InputAffine", "check_input_affine", "input_affine_between"]

#: Teacher and data statistics closer than this are the same: no correction.
STATS_ATOL = 1e-6


def input_affine_between(
    teacher_mean: Sequence[float],
    teacher_std: Sequence[float],
    data_mean: Sequence[float],
    data_std: Sequence[float],
) -> dict[str, list[float]] | None:
    """``{"scale", "shift"}`` turning data-normalized inputs into teacher-normalized ones:
    ``scale = std_d / std_t``, ``shift = (mean_d - mean_t) / std_t`` per channel (see
    :class:`InputAffine` for the derivation); None when the statistics agree within
    :data:`STATS_ATOL`."""
    if all(
        abs(a - b) <= STATS_ATOL
        for a, b in zip([*teacher_mean, *teacher_std], [*data_mean, *data_std])
    ):
        return None
    return {
        "scale": [sd / st for sd, st in zip(data_std, teacher_std)],
        "shift": [(md - mt) / st for md, mt, st in zip(data_mean, teacher_mean, teacher_std)],
    }


def check_input_affine(value: Any, in_channels: int) -> dict[str, list[float]] | None:
    """Validate an ``input_affine`` spec and return it as plain lists of floats.

    ``value`` is None or ``{"scale": [C floats > 0], "shift": [C floats]}`` with
    ``C = in_channels``, all finite. Raises ValueError naming the field otherwise.
    """
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"scale", "shift"}:
        got = sorted(value) if isinstance(value, Mapping) else type(value).__name__
        raise ValueError(
            f"input_affine: expected None or a dict with keys 'scale' and 'shift', got {got}"
        )
    out: dict[str, list[float]] = {}
    for name in ("scale", "shift"):
        raw = value[name]
        what = "finite numbers > 0" if name == "scale" else "finite numbers"
        expected = f"input_affine.{name}: expected {in_channels} {what} (one per input channel)"
        if isinstance(raw, str | bytes) or not isinstance(raw, Sequence | torch.Tensor):
            raise ValueError(f"{expected}, got {raw!r}")
        items = raw.tolist() if isinstance(raw, torch.Tensor) else list(raw)
        if len(items) != in_channels:
            raise ValueError(f"{expected}, got {len(items)}: {items!r}")
        # bool is an int subclass, but True as a scale is a mistake, not 1.0.
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
            raise ValueError(f"{expected}, got {items!r}")
        floats = [float(v) for v in items]
        if not all(math.isfinite(v) for v in floats) or (
            name == "scale" and not all(v > 0 for v in floats)
        ):
            raise ValueError(f"{expected}, got {floats!r}")
        out[name] = floats
    return out


class InputAffine(nn.Module):
    """Per-channel ``x * scale + shift``: x (B, C, H, W) -> (B, C, H, W).

    Why: a teacher trained elsewhere expects inputs normalized with the statistics of its own
    training, ``x_t = (p - mu_t) / sigma_t`` for raw pixels ``p``, while supkd's loaders give
    ``x = (p - mu_d) / sigma_d`` with the data set's statistics (``supkd.data.datasets.
    NORMALIZATION``). Substituting ``p = x * sigma_d + mu_d``::

        x_t = (x * sigma_d + mu_d - mu_t) / sigma_t
            = x * (sigma_d / sigma_t) + (mu_d - mu_t) / sigma_t

    so ``scale = sigma_d / sigma_t`` and ``shift = (mu_d - mu_t) / sigma_t``, per channel,
    applied before the first convolution, give the teacher exactly the inputs it was trained
    on. ``scale`` and ``shift`` are (1, C, 1, 1) non-persistent buffers: they follow
    ``.to(device)`` but stay out of ``state_dict`` (the values live in the model's ``spec``),
    so weight files keep their keys. Plain tensor ops: works with channels_last, autocast and
    ``torch.compile``.
    """

    def __init__(self, scale: Sequence[float], shift: Sequence[float]) -> None:
        super().__init__()
        if len(scale) != len(shift) or not scale:
            raise ValueError(
                f"InputAffine: scale and shift must have one value per channel, got "
                f"{len(scale)} and {len(shift)}"
            )
        self.values = (tuple(float(v) for v in scale), tuple(float(v) for v in shift))
        c = len(scale)
        self.register_buffer("scale", torch.tensor(self.values[0]).view(1, c, 1, 1), False)
        self.register_buffer("shift", torch.tensor(self.values[1]).view(1, c, 1, 1), False)

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> InputAffine:
        super()._apply(fn, recurse)
        # A dtype change (``.double()``) converts the float32 buffers, float32 rounding
        # included; refill them from the exact values so a float64 model is float64-exact.
        for name, values in zip(("scale", "shift"), self.values):
            buf = getattr(self, name)
            if buf.is_floating_point() and buf.device.type != "meta":
                with torch.no_grad():
                    buf.copy_(torch.tensor(values, dtype=buf.dtype).view(buf.shape))
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"scale={list(self.values[0])}, shift={list(self.values[1])}"

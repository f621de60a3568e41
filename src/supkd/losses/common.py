"""Numerics and argument checks shared by every loss in :mod:`supkd.losses`.

All losses compute in at least float32: under ``torch.autocast`` matmuls would otherwise
run in bf16/fp16, whose 8-bit (bf16) mantissa turns a log-softmax over a batch of
similarities or a Gram difference into noise, and whose fp16 range overflows for
logits of magnitude 1e4. Float64 inputs stay float64 (for gradcheck and references).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

# eps of the L2 normalization: x / max(||x||, EPS). A zero vector maps to the zero vector
# (finite value and finite gradient) instead of 0/0; same default as F.normalize.
NORM_EPS = 1e-12

#: eps of logit standardization's denominator (Sun et al. 2024's code: 1e-7).
STANDARDIZE_EPS = 1e-7


@contextlib.contextmanager
def full_precision(*tensors: torch.Tensor) -> Iterator[None]:
    """Disable autocast for the devices of ``tensors`` so the loss body runs in float32+."""
    device_types = sorted({t.device.type for t in tensors})
    with contextlib.ExitStack() as stack:
        for dt in device_types:
            if torch.amp.is_autocast_available(dt):
                stack.enter_context(torch.autocast(device_type=dt, enabled=False))
        yield


def upcast(x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` as float32, or float64 when it already is float64."""
    if x.dtype == torch.float64:
        return x
    return x.float()


def l2_normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Eps-safe L2 normalization ``x / max(||x||_2, NORM_EPS)`` along ``dim``."""
    return F.normalize(x, p=2.0, dim=dim, eps=NORM_EPS)


def check_temperature(value: object, name: str = "temperature") -> float:
    """Validate a temperature: a finite real number > 0 (bool is refused)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"argument '{name}': expected a number > 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"argument '{name}': expected a finite number > 0, got {value!r}")
    return value


def check_flag(value: object, name: str) -> bool:
    """Validate a boolean switch: only ``True``/``False`` (1, 0, "yes" are refused)."""
    if not isinstance(value, bool):
        raise ValueError(f"argument '{name}': expected True or False, got {value!r}")
    return value


def check_labels(labels: torch.Tensor | None, batch: int, what: str) -> torch.Tensor | None:
    """Validate class labels: an integer tensor of shape (batch,) or None."""
    if labels is None:
        return None
    if not isinstance(labels, torch.Tensor):
        got = type(labels).__name__
        raise ValueError(f"labels: expected a tensor of shape ({batch},), got {got}")
    if labels.dim() != 1 or labels.shape[0] != batch:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match {what}: expected ({batch},)"
        )
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels: expected an integer tensor, got dtype {labels.dtype}")
    return labels


def check_index(index: object, batch: int, what: str) -> torch.Tensor:
    """Validate per-sample dataset indices: an integer tensor of shape (batch,), values ≥ 0
    (checked on CPU tensors only: on an accelerator the check would stall the step; there an
    index past the end trips the indexing kernel's bounds check)."""
    if not isinstance(index, torch.Tensor):
        got = type(index).__name__
        raise ValueError(f"index: expected a tensor of shape ({batch},), got {got}")
    if index.dim() != 1 or index.shape[0] != batch:
        raise ValueError(
            f"index shape {tuple(index.shape)} does not match {what}: expected ({batch},)"
        )
    if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
        raise ValueError(f"index: expected an integer tensor, got dtype {index.dtype}")
    if index.device.type == "cpu" and index.numel() and int(index.min()) < 0:
        raise ValueError(f"index: expected indices >= 0, got {int(index.min())}")
    return index.long()


def check_number(value: object, name: str, *, minimum: float = 0.0, strict: bool = False) -> float:
    """Validate a finite real weight: ``>= minimum`` (``> minimum`` when ``strict``); bool and
    strings are refused."""
    op = ">" if strict else ">="
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"argument '{name}': expected a number {op} {minimum:g}, got {value!r}")
    value = float(value)
    ok = value > minimum if strict else value >= minimum
    if not (math.isfinite(value) and ok):
        raise ValueError(
            f"argument '{name}': expected a finite number {op} {minimum:g}, got {value!r}"
        )
    return value


def check_choice(value: object, name: str, choices: tuple[str, ...]) -> str:
    """Validate a string option against ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"argument '{name}': expected one of {list(choices)}, got {value!r}")
    return value


def standardize_logits(z: torch.Tensor) -> torch.Tensor:
    """Logit standardization (Sun et al., "Logit Standardization in Knowledge Distillation",
    CVPR 2024, Eq. 3 and their code): each row z (B, C) -> (z − mean) / (std + 1e-7), std with
    Bessel's correction. Needs C ≥ 2 (one class has no std)."""
    if z.shape[1] < 2:
        raise ValueError(
            f"standardize: needs at least 2 classes per sample, got shape {tuple(z.shape)}"
        )
    mean = z.mean(dim=1, keepdim=True)
    std = z.std(dim=1, keepdim=True, correction=1)
    return (z - mean) / (std + STANDARDIZE_EPS)


def other_indices(own: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n − 1) long: for each row the indices in [0, n) other than ``own`` (B,), in order
    (DKD's non-target classes; CRD's negatives when they are all other samples)."""
    cols = torch.arange(n - 1, device=own.device)[None, :]
    return cols + (cols >= own[:, None]).long()

"""Losses of supkd: the registry of KD losses and the SupCon pre-training loss.

Usage::

    from supkd.losses import LOSSES, SupConLoss, build_loss

    kd = build_loss("supcon_kd", temperature=0.1, normalize_student=True)
    value = kd(z_s, z_t, labels)      # student (B, D_s), teacher (B, D_t), labels (B,)
    sup = SupConLoss(temperature=0.1)
    value = sup(features, labels)     # features (B, V, D), L2-normalized

``LOSSES`` maps each KD loss name of DESIGN.md §3-4 to its class; ``SupConLoss`` (teacher
pre-training) is not a KD loss and is not in the registry.
"""

from __future__ import annotations

import inspect
from typing import Any

from supkd.losses.distill import (
    CosineLoss,
    GramLoss,
    HintonKLLoss,
    KDLoss,
    LogitMSELoss,
    NormMSELoss,
    SupConKDLoss,
)
from supkd.losses.supcon import SupConLoss

__all__ = [
    "LOSSES",
    "CosineLoss",
    "GramLoss",
    "HintonKLLoss",
    "KDLoss",
    "LogitMSELoss",
    "NormMSELoss",
    "SupConKDLoss",
    "SupConLoss",
    "build_loss",
    "loss_arguments",
]

LOSSES: dict[str, type[KDLoss]] = {
    "logit_mse": LogitMSELoss,
    "norm_mse": NormMSELoss,
    "cosine": CosineLoss,
    "gram": GramLoss,
    "supcon_kd": SupConKDLoss,
    "hinton_kl": HintonKLLoss,
}


def loss_arguments(cls: type) -> dict[str, Any]:
    """The constructor arguments of a loss class and their defaults, in order."""
    params = inspect.signature(cls.__init__).parameters
    return {
        name: p.default
        for name, p in params.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def build_loss(name: str, **kwargs: Any) -> KDLoss:
    """Build the KD loss registered as ``name`` with constructor arguments ``kwargs``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names), an argument the
            loss does not take (the message names it and lists the valid ones), or an
            invalid value (temperature ≤ 0, unknown mode, non-bool flag; named in the
            message).
    """
    if not isinstance(name, str) or name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}")
    cls = LOSSES[name]
    valid = loss_arguments(cls)
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        allowed = ", ".join(valid) if valid else "none"
        raise ValueError(
            f"loss {name!r}: unknown argument '{unknown[0]}'; valid arguments: {allowed}"
        )
    return cls(**kwargs)

"""Optimizers and per-step learning-rate schedules built from the config.

Schedules are written as a closed-form factor of the global step, wrapped in
``torch.optim.lr_scheduler.LambdaLR``: the learning rate of step k is then a pure function
of k (no recursive update whose rounding depends on history), so a resumed run gets
bit-identical learning rates, and warm-up composes with every schedule without
``SequentialLR``'s chaining rules.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from supkd.config import OptimConfig, ScheduleConfig


def param_groups(
    params: Iterable[nn.Parameter], cfg: OptimConfig
) -> list[dict[str, Any]]:
    """The optimizer's parameter groups for ``params`` (those with ``requires_grad``).

    ``cfg.decay_norm_and_bias`` True: one group, every parameter decayed. False: two
    groups, in order ``{"params": weights (ndim >= 2), "weight_decay": cfg.weight_decay}``
    and ``{"params": the rest (ndim <= 1: norm weights/biases, biases), "weight_decay":
    0.0}``; an empty group is left out. The split is by shape, not by name, so it also
    covers parameters a task adds (e.g. the KD adapter's bias). Order within a group is the
    order of ``params``, so a checkpoint's optimizer state maps back to the same tensors.
    """
    params = [p for p in params if p.requires_grad]
    if cfg.decay_norm_and_bias:
        return [{"params": params, "weight_decay": cfg.weight_decay}]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer(
    params: Iterable[nn.Parameter], cfg: OptimConfig, device: torch.device
) -> torch.optim.Optimizer:
    """SGD (momentum, optional Nesterov) or AdamW over ``params``, grouped by
    :func:`param_groups` (one group, or two when ``cfg.decay_norm_and_bias`` is False).

    On CUDA the fused kernels are used (one kernel for the whole update instead of one per
    tensor; PyTorch docs, ``torch.optim`` "fused" implementations); they accept several
    groups. Every group starts at ``cfg.lr``, so the scheduler's factor applies to all.
    """
    groups = param_groups(params, cfg)
    if not groups or not groups[0]["params"]:
        raise ValueError("the task has no trainable parameters")
    fused = True if device.type == "cuda" else None
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
            fused=fused,
        )
    return torch.optim.AdamW(
        groups,
        lr=cfg.lr,
        betas=(cfg.betas[0], cfg.betas[1]),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        fused=fused,
    )


class LrFactor:
    """Multiplier of the base learning rate at global step ``k`` (0-based).

    Args:
        cfg: the schedule.
        steps_per_epoch: optimizer steps per epoch (> 0).
        epochs: number of epochs (> 0).

    Definitions (``T`` total steps, ``W`` warm-up steps):
      warm-up: ``(k + 1) / W`` for ``k < W`` (linear, as in the SupCon code's warm-up);
      cosine: ``m + (1 - m)(1 + cos(π (k - W) / (T - W))) / 2`` (Loshchilov & Hutter 2017,
      SGDR without restarts; ``m = min_lr_factor``);
      step: ``gamma ** #{milestones <= k / steps_per_epoch}``;
      onecycle: cosine from ``1/div`` up to 1 over ``pct_start·T`` steps, then cosine down to
      ``1/(div·final_div)`` (Smith & Topin 2019; ``OneCycleLR`` with ``anneal_strategy='cos'``).
    """

    def __init__(self, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int) -> None:
        if steps_per_epoch <= 0 or epochs <= 0:
            raise ValueError("steps_per_epoch and epochs must be > 0")
        self.name = cfg.name
        self.spe = steps_per_epoch
        self.total = steps_per_epoch * epochs
        self.warmup = min(round(cfg.warmup_epochs * steps_per_epoch), self.total - 1)
        self.min_factor = cfg.min_lr_factor
        self.milestones = [m * steps_per_epoch for m in cfg.milestones]
        self.gamma = cfg.gamma
        self.pct_start = cfg.pct_start
        self.div = cfg.div_factor
        self.final_div = cfg.final_div_factor

    @staticmethod
    def _cos(start: float, end: float, frac: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * frac) + 1.0)

    def __call__(self, k: int) -> float:
        if self.name == "onecycle":
            initial, peak = 1.0 / self.div, 1.0
            final = initial / self.final_div
            up = max(float(self.pct_start * self.total) - 1.0, 1.0)
            if k <= up:
                return self._cos(initial, peak, k / up)
            down = max(self.total - 1.0 - up, 1.0)
            return self._cos(peak, final, min((k - up) / down, 1.0))
        if k < self.warmup:
            return (k + 1) / self.warmup
        if self.name == "cosine":
            span = max(self.total - self.warmup, 1)
            return self._cos(1.0, self.min_factor, min((k - self.warmup) / span, 1.0))
        if self.name == "step":
            return self.gamma ** bisect.bisect_right(self.milestones, k)
        return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step ``LambdaLR`` with :class:`LrFactor`; call ``.step()`` after each optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, LrFactor(cfg, steps_per_epoch, epochs))

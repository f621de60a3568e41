"""``supcon``: SupCon pre-training (Khosla et al. 2020, Eq. 2, ``L^sup_out``) of encoder +
projection head on two augmented views."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from supkd.config import Config, TaskConfig, bounded
from supkd.errors import ConfigError, SupkdWarning
from supkd.losses import SupConLoss
from supkd.train import distributed as dist_utils
from supkd.train.tasks.base import Task, new_model, register_task

__all__ = ["SupConConfig", "SupConTask"]


@dataclass
class SupConConfig(TaskConfig):
    name: str = "supcon"
    temperature: float = bounded(0.1, gt=0)  # τ of the SupCon loss
    base_temperature: float | None = bounded(None, gt=0)  # loss × τ/this (SupContrast: 0.07)
    projection_dim: int = bounded(128, gt=0)  # used when model.projection_dim is not set


@register_task
class SupConTask(Task):
    """Two-view SupCon pre-training of encoder + projection head (Khosla et al. 2020, Eq. 2).

    Batch ``x`` is (B, 2, C, H, W); the projections of both views form features (B, 2, P)
    for :class:`supkd.losses.SupConLoss`. Under DDP the features and labels of every rank
    are gathered (with gradients) first, so the loss sees the global batch's negatives.
    The classifier is frozen here (trained by the ``linear`` stage).
    """

    Config = SupConConfig
    name = "supcon"
    views = 2
    augment = "supcon"
    has_classifier = False

    def __init__(self, model: nn.Module, temperature: float, base_temperature: float | None):
        super().__init__()
        if getattr(model, "head", None) is None:
            raise ConfigError(
                "task 'supcon': the model needs a projection head (model.projection_dim)"
            )
        self.model = model
        for p in model.classifier.parameters():
            p.requires_grad_(False)
        self.criterion = SupConLoss(temperature=temperature, base_temperature=base_temperature)

    @classmethod
    def build(cls, cfg: Config, bundle: Any, device: torch.device) -> Task:
        t = cfg.task
        _warn_few_positives(cfg.train.batch_size, getattr(bundle.train, "labels", None))
        proj = cfg.model.projection_dim or t.projection_dim
        return cls(new_model(cfg, bundle, projection_dim=proj), t.temperature, t.base_temperature)

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        x = batch.x
        if x.dim() != 5 or x.shape[1] != 2:
            raise ValueError(
                f"supcon task: expected x of shape (B, 2, C, H, W), got {tuple(x.shape)}"
            )
        B = x.shape[0]
        # One forward over both views: BatchNorm sees the same 2B batch as in SupCon's code.
        out = self.model(x.flatten(0, 1))
        feats = out.projection.reshape(B, 2, -1)
        labels = batch.y
        if dist_utils.world_size() > 1:
            feats = dist_utils.gather_with_grad(feats)
            labels = dist_utils.gather_with_grad(labels)
        loss = self.criterion(feats, labels)
        return {"loss": loss, "supcon": loss.detach()}

    def model_info(self) -> dict[str, Any]:
        return {"task": self.name, "trained": ["encoder", "head"]}


def _warn_few_positives(batch_size: int, labels: Tensor | None) -> None:
    """SupkdWarning when a global batch of ``batch_size`` images drawn from ``labels`` (N,)
    holds on average fewer than one pair of the same class: most anchors then have no
    positive but their own second view, and the loss is SimCLR's, not supervised.

    The expected number of same-class pairs is C(B, 2) · Σ_k p_k² (p_k the class
    frequencies; exact for sampling with replacement, close for a random batch of a large
    split); computed once from the training labels, with no per-step cost.
    """
    if labels is None or len(labels) == 0:
        return
    p = torch.bincount(labels.long()).double() / len(labels)
    pairs = batch_size * (batch_size - 1) / 2 * float((p * p).sum())
    if pairs < 1:
        warnings.warn(
            f"config field 'train.batch_size': a SupCon batch of {batch_size} over "
            f"{int((p > 0).sum())} classes holds {pairs:.2f} same-class pairs on average, so "
            "most anchors have no positive but their own other view (the loss is then "
            "SimCLR's, not supervised); use a larger batch", SupkdWarning, stacklevel=3)

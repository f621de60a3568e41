"""``ce``: cross-entropy training of a teacher or a student baseline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from supkd.config import Config, TaskConfig, bounded
from supkd.models import as_model_output
from supkd.train.tasks.base import Task, accuracy, ce_loss, new_model, register_task

__all__ = ["CEConfig", "CETask"]


@dataclass
class CEConfig(TaskConfig):
    name: str = "ce"
    label_smoothing: float = bounded(0.0, ge=0, lt=1)  # of the CE targets (0: none)


@register_task
class CETask(Task):
    """Cross-entropy on one augmented view: ``CE(model(x).logits, y)``."""

    Config = CEConfig
    name = "ce"

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    @classmethod
    def build(cls, cfg: Config, bundle: Any, device: torch.device) -> Task:
        return cls(new_model(cfg, bundle), cfg.task.label_smoothing)

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        logits = as_model_output(self.model(batch.x)).logits
        loss = ce_loss(logits, batch.y, self.label_smoothing)
        return {"loss": loss, "ce": loss.detach(), "acc": accuracy(logits, batch.y)}

    def model_info(self) -> dict[str, Any]:
        # A projection head, if the config gave one, gets no gradient from CE.
        return {"task": self.name, "trained": ["encoder", "classifier"]}

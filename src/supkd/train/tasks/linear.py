"""``linear``: SupCon's second stage, a linear classifier trained with CE on the frozen
encoder of a finished run. Its model is the *complete* network (encoder, projection head,
trained classifier), so the linear run's directory is a SupCon teacher with logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from supkd.config import Config, TaskConfig, bounded
from supkd.errors import CheckpointError, ConfigError
from supkd.models import make_classifier
from supkd.models.files import load_model_record
from supkd.train.tasks.base import (
    Task,
    accuracy,
    ce_loss,
    check_input_shape,
    register_task,
    warn_if_unfinished,
)

__all__ = ["LinearConfig", "LinearTask"]


@dataclass
class LinearConfig(TaskConfig):
    name: str = "linear"
    encoder: str = ""  # run directory (or model.pt / last.pt) whose encoder is frozen
    label_smoothing: float = bounded(0.0, ge=0, lt=1)  # of the CE targets (0: none)

    def check(self) -> None:
        if not self.encoder:
            raise ConfigError(
                "config field 'task.encoder': expected the run directory of a trained "
                "encoder (e.g. a SupCon run), got nothing"
            )


@register_task
class LinearTask(Task):
    """Linear classifier on a frozen encoder (SupCon's second stage).

    The encoder (and projection head) are frozen and kept in eval mode, so BatchNorm uses the
    pre-trained running statistics; the classifier is re-initialized and trained with CE on
    ``encoder(x)``. ``model`` is the whole network, so saving it gives a teacher with
    trained logits, embedding and projection.
    """

    Config = LinearConfig
    name = "linear"

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0, source: dict | None = None):
        super().__init__()
        self.model = model
        model.freeze_encoder(True)
        if model.head is not None:
            for p in model.head.parameters():
                p.requires_grad_(False)
        self.label_smoothing = label_smoothing
        self.source_info = dict(source or {})

    @classmethod
    def build(cls, cfg: Config, bundle: Any, device: torch.device) -> Task:
        try:
            rec = load_model_record(cfg.task.encoder)
        except CheckpointError as exc:
            raise CheckpointError(f"config field 'task.encoder': {exc}") from None
        model = rec.model
        warn_if_unfinished(rec, "task.encoder")
        spec = dict(model.spec)
        check_input_shape(spec, bundle, "task.encoder")
        # A fresh classifier (seeded by the init seed) for this data set's classes.
        model.classifier = make_classifier(model.embedding_dim, int(bundle.num_classes))
        spec["num_classes"] = int(bundle.num_classes)
        model.spec = spec
        return cls(model, cfg.task.label_smoothing, rec.info)

    def train(self, mode: bool = True) -> LinearTask:
        super().train(mode)
        if self.model.head is not None:
            self.model.head.eval()
        return self

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        with torch.no_grad():
            emb = self.model.encoder(batch.x)
        logits = self.model.classifier(emb)
        loss = ce_loss(logits, batch.y, self.label_smoothing)
        return {"loss": loss, "ce": loss.detach(), "acc": accuracy(logits, batch.y)}

    def model_info(self) -> dict[str, Any]:
        trained = set(self.source_info.get("trained", ["encoder", "head"]))
        trained.add("classifier")
        if self.model.head is None:
            trained.discard("head")
        return {
            "task": self.name,
            "trained": sorted(trained),
            "encoder_task": self.source_info.get("task"),
        }

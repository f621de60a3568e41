"""What every supkd model is: an encoder, an optional SupCon projection head and a linear
classifier on the encoder's embedding (:class:`EncoderModel`), returning a
:class:`ModelOutput`. The ResNets (``resnet.py``) and the timm wrappers (``timm_models.py``)
differ only in their encoder and in how they name their stages (``forward_intermediates``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from supkd.models.heads import ProjectionHead

__all__ = ["EncoderModel", "ModelOutput"]


class ModelOutput(NamedTuple):
    """What a supkd model returns.

    ``logits`` (B, C); ``embedding`` (B, F), the pooled encoder output; ``projection``
    (B, P), L2-normalized, or None for a model without a projection head. A NamedTuple so
    that DDP, ``torch.compile`` and ``torch.jit`` pass it through unchanged.
    """

    logits: torch.Tensor
    embedding: torch.Tensor
    projection: torch.Tensor | None


class EncoderModel(nn.Module):
    """Encoder + optional projection head + linear classifier.

    ``forward(x)``: x (B, C_in, H, W) -> ``ModelOutput(logits (B, K), embedding (B, F),
    projection (B, P) | None)``; the classifier reads the embedding (not the projection), as
    in SupCon's linear evaluation and in a plain CE network. Attributes every task, the
    teacher cache and CKA use: ``encoder`` (image -> (B, F), with ``out_dim`` = F), ``head``,
    ``classifier``, ``embedding_dim``, ``spec`` (what ``create_model(**spec)`` rebuilds it
    from). A subclass adds ``forward_intermediates``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        classifier: nn.Linear,
        head: ProjectionHead | None,
        spec: dict[str, Any],
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.classifier = classifier
        self.embedding_dim: int = int(encoder.out_dim)
        self.spec: dict[str, Any] = dict(spec)
        self.encoder_frozen = False

    def forward(self, x: torch.Tensor) -> ModelOutput:
        emb = self.encoder(x)
        proj = self.head(emb) if self.head is not None else None
        return ModelOutput(self.classifier(emb), emb, proj)

    def freeze_encoder(self, frozen: bool = True) -> EncoderModel:
        """Freeze (or unfreeze) the encoder for the linear stage on top of a SupCon encoder.

        A frozen encoder has ``requires_grad=False`` and stays in eval mode (BatchNorm uses
        its running statistics, dropout is off) even when ``.train()`` is called on the
        whole model, so the features the classifier is fitted on do not drift.
        """
        self.encoder_frozen = frozen
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        self.encoder.train(self.training and not frozen)
        return self

    def train(self, mode: bool = True) -> EncoderModel:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

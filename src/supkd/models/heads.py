"""Heads on top of the ResNet encoder: the SupCon projection head and the linear classifier.

Projection head as in Khosla et al. (2020), "Supervised Contrastive Learning", Sec. 3 and
docs/design.md §5: Linear(d, d) -> ReLU -> Linear(d, projection_dim), output L2-normalized (the
SupCon loss is defined on the unit hypersphere). The paper's code also offers a single
Linear(d, projection_dim) head (``SupConResNet(head='linear')``); ``kind="linear"`` builds
that one, so that such checkpoints can be imported as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: ``ProjectionHead`` kinds: the two heads of the SupContrast code (``networks/resnet_big.py``).
HEAD_KINDS = ("mlp", "linear")


class ProjectionHead(nn.Module):
    """Projection head with an L2-normalized output: a two-layer MLP (``kind="mlp"``,
    attributes ``fc1``, ``fc2``) or one Linear layer (``kind="linear"``, attribute ``fc``).

    ``forward(h)``: embedding ``(B, in_dim)`` -> projection ``(B, projection_dim)`` with unit
    L2 norm per row (eps-safe, so an all-zero row stays zero instead of becoming NaN).
    """

    def __init__(
        self, in_dim: int, projection_dim: int = 128, hidden_dim: int | None = None,
        kind: str = "mlp",
    ) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"ProjectionHead: kind must be one of {', '.join(HEAD_KINDS)}, "
                             f"got {kind!r}")
        if in_dim <= 0 or projection_dim <= 0:
            raise ValueError(
                "ProjectionHead: in_dim and projection_dim must be > 0, "
                f"got {in_dim}, {projection_dim}"
            )
        hidden = in_dim if hidden_dim is None else hidden_dim
        if hidden <= 0:
            raise ValueError(f"ProjectionHead: hidden_dim must be > 0, got {hidden}")
        self.in_dim = in_dim
        self.projection_dim = projection_dim
        self.kind = kind
        if kind == "linear":
            self.fc = nn.Linear(in_dim, projection_dim)
            return
        self.fc1 = nn.Linear(in_dim, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, projection_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.fc(h) if self.kind == "linear" else self.fc2(self.relu(self.fc1(h)))
        return F.normalize(z, dim=1, eps=1e-12)


def make_classifier(in_dim: int, num_classes: int) -> nn.Linear:
    """The linear classifier F -> C (torchvision's ``fc``: default nn.Linear initialization)."""
    if in_dim <= 0 or num_classes <= 0:
        raise ValueError(
            f"classifier: in_dim and num_classes must be > 0, got {in_dim}, {num_classes}"
        )
    return nn.Linear(in_dim, num_classes)

"""Heads on top of the ResNet encoder: the SupCon projection head and the linear classifier.

Projection head as in Khosla et al. (2020), "Supervised Contrastive Learning", Sec. 3 and
DESIGN.md §5: Linear(d, d) -> ReLU -> Linear(d, projection_dim), output L2-normalized (the
SupCon loss is defined on the unit hypersphere).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ProjectionHead(nn.Module):
    """Two-layer MLP projection head with an L2-normalized output.

    ``forward(h)``: embedding ``(B, in_dim)`` -> projection ``(B, projection_dim)`` with unit
    L2 norm per row (eps-safe, so an all-zero row stays zero instead of becoming NaN).
    """

    def __init__(
        self, in_dim: int, projection_dim: int = 128, hidden_dim: int | None = None
    ) -> None:
        super().__init__()
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
        self.fc1 = nn.Linear(in_dim, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(hidden, projection_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc2(self.relu(self.fc1(h))), dim=1, eps=1e-12)


def make_classifier(in_dim: int, num_classes: int) -> nn.Linear:
    """The linear classifier F -> C (torchvision's ``fc``: default nn.Linear initialization)."""
    if in_dim <= 0 or num_classes <= 0:
        raise ValueError(
            f"classifier: in_dim and num_classes must be > 0, got {in_dim}, {num_classes}"
        )
    return nn.Linear(in_dim, num_classes)

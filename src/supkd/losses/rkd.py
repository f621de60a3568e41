"""``rkd``: relational knowledge distillation (Park et al., CVPR 2019), a KD baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from supkd.losses.base import KDLoss
from supkd.losses.common import NORM_EPS, check_number, l2_normalize
from supkd.losses.registry import register_loss

__all__ = ["RKDLoss", "rkd_angles", "rkd_distances"]


def _differences(f: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B, D) with [i, j] = f_j − f_i."""
    return f[None, :, :] - f[:, None, :]


def rkd_distances(f: torch.Tensor) -> torch.Tensor:
    """ψ_D (B, B): Euclidean distances ‖f_i − f_j‖ over their mean on i ≠ j (diagonal 0).

    Computed from the differences, not from ‖a‖² + ‖b‖² − 2ab as the public code does, so
    no cancellation error for large features; the norm's gradient at a zero difference (the
    diagonal) is 0. With B = 1, or when every distance is 0, ψ_D is all zeros (the mean is
    floored at eps instead of dividing 0 by 0).
    """
    batch = f.shape[0]
    d = _differences(f).norm(dim=2)
    if batch < 2:
        return d
    mean = d.sum() / (batch * (batch - 1))  # the diagonal is exactly 0
    return d / mean.clamp_min(NORM_EPS)


def rkd_angles(f: torch.Tensor) -> torch.Tensor:
    """ψ_A (B, B, B): [i, j, k] = ⟨unit(f_j − f_i), unit(f_k − f_i)⟩, with the zero vector
    (eps-safe normalization) when j = i or k = i."""
    e = l2_normalize(_differences(f), dim=2)
    return e @ e.transpose(1, 2)


@register_loss("rkd")
class RKDLoss(KDLoss):
    r"""Relational KD (Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019,
    Eqs. 3-7):

        L = w_D · Huber(ψ_D(s), ψ_D(t)) + w_A · Huber(ψ_A(s), ψ_A(t))

    ψ_D: pairwise Euclidean distances divided by their mean over the pairs i ≠ j (diagonal
    0); ψ_A[i, j, k] = ⟨unit(f_j − f_i), unit(f_k − f_i)⟩ (the angle at vertex i; zero vector
    when j = i or k = i). Huber = smooth L1 with β = 1, averaged over all B² (distance) and
    B³ (angle) entries, diagonals included (``F.smooth_l1_loss``'s mean). Defaults
    w_D = 25, w_A = 50 are the CIFAR setting of the public CRD/RepDistiller code. The paper
    normalizes by the mean over pairs with positive distance; the two differ only when two
    samples of the batch have identical features.

    Inputs (B, ...) are flattened per sample; widths may differ. Memory and time grow as
    B²·D + B³ (the angle tensor): fine for the KD batches of 64-256 per process; under DDP
    the distill task gathers the global batch first.

    Shapes: student (B, ...), teacher (B, ...) with the same B; labels unused; returns a
    scalar.

    Args:
        distance_weight: w_D ≥ 0.
        angle_weight: w_A ≥ 0.
    """

    label = "RKD (Park et al. 2019)"
    paper_eq = "Park et al. 2019"
    reference = (
        'Park, Kim, Lu & Cho, "Relational Knowledge Distillation", CVPR 2019'
    )
    summary = "distance- and angle-wise relations of samples (Huber, widths may differ)"
    compares_samples = True
    same_width = False
    flatten_inputs = True

    def __init__(self, distance_weight: float = 25.0, angle_weight: float = 50.0) -> None:
        super().__init__()
        self.distance_weight = check_number(distance_weight, "distance_weight")
        self.angle_weight = check_number(angle_weight, "angle_weight")

    def extra_repr(self) -> str:
        return f"distance_weight={self.distance_weight}, angle_weight={self.angle_weight}"

    def compute(self, student, teacher, labels):
        loss_d = F.smooth_l1_loss(rkd_distances(student), rkd_distances(teacher), beta=1.0)
        loss_a = F.smooth_l1_loss(rkd_angles(student), rkd_angles(teacher), beta=1.0)
        return self.distance_weight * loss_d + self.angle_weight * loss_a

"""``norm_mse``: Eq. 2, the squared L2 distance of L2-normalized vectors."""

from __future__ import annotations

from supkd.losses.base import PAPER, KDLoss
from supkd.losses.common import l2_normalize
from supkd.losses.registry import register_loss

__all__ = ["NormMSELoss"]


@register_loss("norm_mse")
class NormMSELoss(KDLoss):
    r"""Eq. 2: ``mean_i ||z̄_t,i - z̄_s,i||²₂`` with ``z̄ = z / max(||z||, eps)``.

    Equals 2·(1 − cos) for non-zero vectors; a zero vector is mapped to zero (eps-safe).
    """

    label = "Norm KD (Eq. 2)"
    paper_eq = "Eq. 2"
    reference = PAPER
    kd_table_row = True
    summary = "squared L2 distance of L2-normalized vectors"

    def compute(self, student, teacher, labels):
        return (l2_normalize(teacher) - l2_normalize(student)).pow(2).sum(dim=1).mean()

"""``logit_mse``: the paper's baseline, Eq. 1, the squared L2 distance of the vectors."""

from __future__ import annotations

from supkd.losses.base import PAPER, KDLoss
from supkd.losses.registry import register_loss

__all__ = ["LogitMSELoss"]



@register_loss("logit_mse")
class LogitMSELoss(KDLoss):
    r"""Eq. 1: ``mean_i ||z_t,i - z_s,i||²₂`` (sum over the dimension, mean over samples).

    The paper's baseline; unlike ``F.mse_loss`` the squared error is summed over the
    D dimensions, as the squared L2 norm of Eq. 1 is.
    """

    label = "Baseline (logit MSE, Eq. 1)"
    paper_eq = "Eq. 1"
    reference = PAPER
    kd_table_row = True
    summary = "squared L2 distance of teacher and student vectors"

    def compute(self, student, teacher, labels):
        return (teacher - student).pow(2).sum(dim=1).mean()

"""``cosine``: Eq. 3, one minus the cosine similarity of teacher and student vectors."""

from __future__ import annotations

from supkd.losses.base import PAPER, KDLoss
from supkd.losses.common import l2_normalize
from supkd.losses.registry import register_loss

__all__ = ["CosineLoss"]


@register_loss("cosine")
class CosineLoss(KDLoss):
    r"""Eq. 3 as a loss: ``mean_i 1 − cos(z_t,i, z_s,i)``.

    The paper minimises the negative cosine; the constant 1 keeps the value in [0, 2]
    without changing the gradient (docs/design.md §4). Cosine is computed on eps-safe
    normalized vectors, so a zero vector has cosine 0.
    """

    label = "Cosine KD (Eq. 3)"
    paper_eq = "Eq. 3"
    reference = PAPER
    kd_table_row = True
    summary = "1 - cosine similarity of teacher and student vectors"

    def compute(self, student, teacher, labels):
        cos = (l2_normalize(teacher) * l2_normalize(student)).sum(dim=1)
        return (1.0 - cos).mean()

"""``nst``: neuron selectivity transfer (Huang & Wang, 2017), a feature KD baseline."""

from __future__ import annotations

import torch

from supkd.losses.base import StageKDLoss
from supkd.losses.common import l2_normalize
from supkd.losses.registry import register_loss
from supkd.losses.stage_ops import pool_to_common

__all__ = ["NSTLoss"]


def _poly_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean over (batch, i, j) of the polynomial kernel (a_i · b_j)² of a (B, C_a, N) and
    b (B, C_b, N)."""
    return (a @ b.transpose(1, 2)).pow(2).mean()


@register_loss("nst")
class NSTLoss(StageKDLoss):
    r"""Neuron selectivity transfer (Huang & Wang, "Like What You Like: Knowledge Distill
    via Neuron Selectivity Transfer", arXiv:1707.01219, 2017, Eqs. 4-6, polynomial kernel
    k(x, y) = (xᵀy + c)^d with d = 2, c = 0, the paper's best kernel):

        f_i = the i-th channel's map (H·W values), L2-normalized, per sample and stage,
        MMD² = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j') − 2 mean_{i,j} k(t_i, s_j),
        L = Σ_stages mean_batch MMD².

    As mdistiller: every conv stage but the stem, post-ReLU; the larger map average-pooled
    to the smaller when sizes differ (channel counts may differ); weight 50 in
    ``task.alpha``.

    Shapes: lists of (B, C_k, H_k, W_k); labels unused; returns a scalar.
    """

    label = "NST (Huang & Wang 2017)"
    paper_eq = "Huang & Wang 2017, Eq. 6"
    reference = (
        'Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity '
        'Transfer", arXiv:1707.01219, 2017'
    )
    summary = "MMD (polynomial kernel, d = 2) between normalized channel activations"

    def compute(self, student, teacher, labels):
        total = student[0].new_zeros(())
        for k, (s, t) in enumerate(zip(student, teacher, strict=True)):
            s, t = pool_to_common(s, t, self, k)
            s = l2_normalize(s.flatten(2), dim=2)
            t = l2_normalize(t.flatten(2), dim=2)
            total = total + _poly_mean(t, t) + _poly_mean(s, s) - 2.0 * _poly_mean(s, t)
        return total

"""``at``: attention transfer (Zagoruyko & Komodakis, ICLR 2017), a feature KD baseline."""

from __future__ import annotations

import torch

from supkd.losses.base import StageArg, StageKDLoss
from supkd.losses.common import check_number, l2_normalize
from supkd.losses.registry import register_loss
from supkd.losses.stage_ops import pool_to_common

__all__ = ["ATLoss", "attention_map"]


def attention_map(f: torch.Tensor, p: float) -> torch.Tensor:
    """(B, C, H, W) -> (B, H·W): the channel mean of |f|^p, L2-normalized per sample
    (the paper's Q = vec(F(A)) / ‖vec(F(A))‖ with F = mean_c |A_c|^p)."""
    return l2_normalize(f.abs().pow(p).mean(dim=1).flatten(1))


@register_loss("at")
class ATLoss(StageKDLoss):
    r"""Attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention",
    ICLR 2017, Eq. 2 with F = mean_c |A_c|^p, p = 2):

        Q = vec(mean_c |A_c|^p) / ‖·‖₂  (B, H·W) per stage,
        L = Σ_stages mean_{b, j} (Q_s[b, j] − Q_t[b, j])².

    As the authors' and mdistiller's code: the squared difference is averaged over the batch
    and the map positions (the paper writes a p-norm of the difference with β/2; mdistiller's
    weight 1000 is set as ``task.alpha``); the stages are every conv stage but the stem
    (post-ReLU outputs, where |A|^p = A^p); a stage whose maps differ in size is matched by
    average-pooling the larger to the smaller; channel counts may differ.

    Shapes: lists of (B, C_k, H_k, W_k) per stage; labels unused; returns a scalar.

    Args:
        stages: the stages read (default: every conv stage but the stem).
        p: the exponent of the attention map (2).
    """

    label = "AT (Zagoruyko & Komodakis 2017)"
    paper_eq = "Zagoruyko & Komodakis 2017, Eq. 2"
    reference = (
        'Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the '
        'Performance of Convolutional Neural Networks via Attention Transfer", ICLR 2017'
    )
    summary = "spatial attention maps (mean_c A^2, L2-normalized) matched per stage"

    def __init__(self, stages: StageArg = None, p: float = 2.0) -> None:
        super().__init__(stages)
        self.p = check_number(p, "p", minimum=0.0, strict=True)

    def compute(self, student, teacher, labels):
        total = student[0].new_zeros(())
        for k, (s, t) in enumerate(zip(student, teacher, strict=True)):
            s, t = pool_to_common(s, t, self, k)
            total = total + (attention_map(s, self.p) - attention_map(t, self.p)).pow(2).mean()
        return total

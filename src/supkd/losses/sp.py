"""``sp``: similarity-preserving KD (Tung & Mori, ICCV 2019), a KD baseline."""

from __future__ import annotations

from supkd.losses.base import KDLoss
from supkd.losses.common import l2_normalize
from supkd.losses.registry import register_loss

__all__ = ["SPLoss"]


@register_loss("sp")
class SPLoss(KDLoss):
    r"""Similarity-preserving KD (Tung & Mori, "Similarity-Preserving Knowledge
    Distillation", ICCV 2019, Eqs. 1-4):

        G = Q Qᵀ (B × B) on the per-sample flattened features Q (B, D),
        G̃ = G with each row L2-normalized,
        L = ‖G̃_t − G̃_s‖²_F / B².

    The rows of the *Gram* are normalized after the product (unlike ``gram(normalize=True)``,
    which normalizes the feature rows before it). Inputs of any shape (B, ...) are flattened
    per sample, so a conv stage's map (B, C, H, W) works as in the paper (which applies SP
    to the last stage; ``task.representation: layer4``), and teacher and student widths may
    differ. A zero row of G stays zero (eps-safe normalization). The public CRD/RepDistiller
    code uses weight 3000 for this loss on CIFAR-100.

    Shapes: student (B, ...), teacher (B, ...) with the same B; labels unused; returns a
    scalar.
    """

    label = "SP (Tung & Mori 2019)"
    paper_eq = "Tung & Mori 2019"
    reference = (
        'Tung & Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019'
    )
    summary = "row-normalized B x B sample Gram matching (widths may differ)"
    compares_samples = True
    same_width = False
    flatten_inputs = True

    def compute(self, student, teacher, labels):
        g_s = l2_normalize(student @ student.T)
        g_t = l2_normalize(teacher @ teacher.T)
        batch = student.shape[0]
        return (g_t - g_s).pow(2).sum() / (batch * batch)

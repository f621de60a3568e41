"""``pkt``: probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018), a KD baseline."""

from __future__ import annotations

import torch

from supkd.losses.base import KDLoss
from supkd.losses.registry import register_loss

__all__ = ["PKTLoss"]

#: eps of the authors' code: in the norms' denominators and inside the KL's logarithm.
PKT_EPS = 1e-7


def _conditional(x: torch.Tensor) -> torch.Tensor:
    """(B, D) -> (B, B): P[i, j] = K(x_i, x_j) / Σ_j K(x_i, x_j), K the cosine kernel
    shifted to [0, 1]: (cos + 1) / 2."""
    x = x / (x.norm(dim=1, keepdim=True) + PKT_EPS)
    k = (x @ x.T + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


@register_loss("pkt")
class PKTLoss(KDLoss):
    r"""Probabilistic knowledge transfer (Passalis & Tefas, "Learning Deep Representations
    with Probabilistic Knowledge Transfer", ECCV 2018, Eqs. 8-10, cosine kernel):

        P[i, j] = K(x_i, x_j) / Σ_{j'} K(x_i, x_j'),  K(a, b) = (cos(a, b) + 1) / 2,
        L = mean_{i, j} P_t[i, j] · log((P_t[i, j] + ε) / (P_s[i, j] + ε)),  ε = 1e-7,

    on the penultimate features (``task.representation: embedding``, mdistiller's
    ``pooled_feat``); the diagonal (i = j) is kept and the KL averaged over all B² pairs,
    as the authors' code; features are divided by (‖x‖ + ε). Widths may differ. The public
    code's weight 30000 is ``task.alpha``.

    Shapes: student (B, D_s), teacher (B, D_t); labels unused; returns a scalar.
    """

    label = "PKT (Passalis & Tefas 2018)"
    paper_eq = "Passalis & Tefas 2018, Eq. 10"
    reference = (
        'Passalis & Tefas, "Learning Deep Representations with Probabilistic Knowledge '
        'Transfer", ECCV 2018'
    )
    summary = "KL between cosine-kernel conditional probabilities of the batch's samples"
    compares_samples = True
    same_width = False
    flatten_inputs = True

    def compute(self, student, teacher, labels):
        p_s, p_t = _conditional(student), _conditional(teacher)
        return (p_t * torch.log((p_t + PKT_EPS) / (p_s + PKT_EPS))).mean()

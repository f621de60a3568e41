"""``dist``: DIST, KD from a stronger teacher by correlation (Huang et al., NeurIPS 2022)."""

from __future__ import annotations

import torch

from supkd.losses.base import KDLoss
from supkd.losses.common import check_number, check_temperature
from supkd.losses.registry import register_loss

__all__ = ["DISTLoss", "pearson_rows"]

#: eps added to the product of norms in the Pearson correlation (DIST's code: 1e-8).
PEARSON_EPS = 1e-8


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = PEARSON_EPS) -> torch.Tensor:
    """Pearson correlation of each row pair of a, b (N, K) -> (N,): the cosine of the
    mean-centred rows, ``⟨a', b'⟩ / (‖a'‖·‖b'‖ + eps)`` (a constant row gives 0)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@register_loss("dist")
class DISTLoss(KDLoss):
    r"""DIST (Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher",
    NeurIPS 2022, Eqs. 6-9 and their public code):

        L = T² · [ β·(1 − mean_i ρ(p_s[i, :], p_t[i, :]))        (inter-class relation)
                 + γ·(1 − mean_c ρ(p_s[:, c], p_t[:, c])) ]       (intra-class relation)

    with p = softmax(z/T) and ρ the Pearson correlation (cosine of centred vectors, eps 1e-8
    added to the product of norms). The intra-class term correlates each class's
    probabilities across the batch, so the loss compares samples (under DDP the distill
    task gathers the global batch first). Defaults β = γ = 1, T = 1 (the paper's ImageNet
    setting).

    Shapes: student (B, C), teacher (B, C) class logits; labels unused; returns a scalar.

    Args:
        beta: weight β ≥ 0 of the inter-class (per-sample) term.
        gamma: weight γ ≥ 0 of the intra-class (per-class, across the batch) term.
        temperature: T > 0.
    """

    label = "DIST (Huang et al. 2022)"
    paper_eq = "Huang et al. 2022"
    reference = (
        'Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher", '
        "NeurIPS 2022"
    )
    summary = "Pearson correlation of class distributions, per sample and per class"
    compares_samples = True

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0) -> None:
        super().__init__()
        self.beta = check_number(beta, "beta")
        self.gamma = check_number(gamma, "gamma")
        self.temperature = check_temperature(temperature, "temperature")

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, temperature={self.temperature}"

    def compute(self, student, teacher, labels):
        temp = self.temperature
        p_s = torch.softmax(student / temp, dim=1)
        p_t = torch.softmax(teacher / temp, dim=1)
        inter = 1.0 - pearson_rows(p_s, p_t).mean()
        intra = 1.0 - pearson_rows(p_s.T, p_t.T).mean()
        return temp * temp * (self.beta * inter + self.gamma * intra)

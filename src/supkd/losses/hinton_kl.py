"""``hinton_kl``: classic KD (Hinton et al., 2015), KL of temperature-softened outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from supkd.losses.base import KDLoss
from supkd.losses.common import check_flag, check_temperature, standardize_logits
from supkd.losses.registry import register_loss

__all__ = ["HintonKLLoss"]


@register_loss("hinton_kl")
class HintonKLLoss(KDLoss):
    r"""Hinton et al. (2015) KD: ``T² · mean_i KL(softmax(z_t,i/T) ‖ softmax(z_s,i/T))``.

    The KL is summed over classes and averaged over samples ("batchmean"); T² keeps the
    gradient scale independent of T, as in the original paper. Both distributions are
    handled as log-probabilities (``log_target=True``) so that classes with vanishing
    teacher probability contribute exactly 0 instead of 0·log 0.

    ``standardize=True`` is logit standardization (Sun et al., "Logit Standardization in
    Knowledge Distillation", CVPR 2024): each sample's logits (teacher and student alike)
    become ``(z − mean(z)) / (std(z) + 1e-7)`` (std with Bessel's correction, as in their
    code) before the usual ``T²·KL``, so the student matches the teacher's logit *relations*
    rather than their scale. Needs at least 2 classes.

    Shapes: student (B, C), teacher (B, C) logits; labels unused; returns a scalar.

    Args:
        temperature: T > 0 (4 in the public CIFAR KD recipes).
        standardize: z-score each sample's logits first (Sun et al. 2024).
    """

    label = "Hinton KD (KL, T=4; not in the paper)"
    paper_eq = "Hinton et al. 2015"
    reference = (
        'Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", '
        "NIPS Deep Learning Workshop 2015"
    )
    kd_table_row = True
    summary = "T^2 * KL of temperature-softened class distributions"

    def __init__(self, temperature: float = 4.0, standardize: bool = False) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature, "temperature")
        self.standardize = check_flag(standardize, "standardize")

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, standardize={self.standardize}"

    def compute(self, student, teacher, labels):
        temp = self.temperature
        if self.standardize:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        log_p_s = torch.log_softmax(student / temp, dim=1)
        log_p_t = torch.log_softmax(teacher / temp, dim=1)
        kl = F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True)
        return kl / student.shape[0] * (temp * temp)

"""``hinton_kl``: classic KD (Hinton et al., 2015), KL of temperature-softened outputs."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from supkd.losses.base import KDLoss
from supkd.losses.common import check_temperature
from supkd.losses.registry import register_loss

__all__ = ["HintonKLLoss"]


@register_loss("hinton_kl")
class HintonKLLoss(KDLoss):
    r"""Hinton et al. (2015) KD: ``T² · mean_i KL(softmax(z_t,i/T) ‖ softmax(z_s,i/T))``.

    The KL is summed over classes and averaged over samples ("batchmean"); T² keeps the
    gradient scale independent of T, as in the original paper. Both distributions are
    handled as log-probabilities (``log_target=True``) so that classes with vanishing
    teacher probability contribute exactly 0 instead of 0·log 0.

    Args:
        temperature: T > 0 (4 in the public CIFAR KD recipes).
    """

    label = "Hinton KD (KL, T=4; not in the paper)"
    paper_eq = "Hinton et al. 2015"
    reference = (
        'Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network", '
        "NIPS Deep Learning Workshop 2015"
    )
    kd_table_row = True
    summary = "T^2 * KL of temperature-softened class distributions"

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature, "temperature")

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def compute(self, student, teacher, labels):
        temp = self.temperature
        log_p_s = torch.log_softmax(student / temp, dim=1)
        log_p_t = torch.log_softmax(teacher / temp, dim=1)
        kl = F.kl_div(log_p_s, log_p_t, reduction="sum", log_target=True)
        return kl / student.shape[0] * (temp * temp)

"""``dkd``: decoupled knowledge distillation (Zhao et al., CVPR 2022), a KD baseline."""

from __future__ import annotations

import torch

from supkd.losses.base import KDLoss
from supkd.losses.common import (
    check_flag,
    check_number,
    check_temperature,
    other_indices,
    standardize_logits,
)
from supkd.losses.registry import register_loss

__all__ = ["DKDLoss"]


def _binary_log_probs(
    z: torch.Tensor, z_other: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """log (p_target, 1 − p_target) of softmax(z), (B, 2), both from log-sum-exps (finite
    for any finite logits, also when p_target rounds to 1)."""
    lse = torch.logsumexp(z, dim=1, keepdim=True)
    log_target = z.gather(1, labels[:, None]) - lse
    log_rest = torch.logsumexp(z_other, dim=1, keepdim=True) - lse
    return torch.cat([log_target, log_rest], dim=1)


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Σ_rows Σ_c p (log p − log q) from log-probabilities (B, K): a scalar sum over rows.
    Finite log-probabilities only: p = 0 (exp underflow) contributes exactly 0."""
    return (log_p.exp() * (log_p - log_q)).sum()


@register_loss("dkd")
class DKDLoss(KDLoss):
    r"""Decoupled KD (Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation",
    CVPR 2022, Eq. 7; the public mdistiller code's ``dkd_loss``):

        L = T² · mean_i [ α·KL(b_t,i ‖ b_s,i) + β·KL(p̂_t,i ‖ p̂_s,i) ]

    with p = softmax(z/T), b = (p_target, 1 − p_target) the binary target / non-target
    split ("TCKD") and p̂ = softmax over the C − 1 non-target classes of z/T ("NCKD").
    Defaults are the paper's CIFAR setting (α = 1, β = 8, T = 4; its ImageNet setting is
    β = 0.5). Its 20-epoch linear warm-up of the KD weight is the distill task's
    ``task.alpha_warmup_epochs``, not part of the loss.

    ``standardize=True`` applies logit standardization (Sun et al., CVPR 2024) to both
    sides first, as in their DKD experiments (see :class:`~supkd.losses.hinton_kl.
    HintonKLLoss`).

    Shapes: student (B, C), teacher (B, C) logits with C ≥ 2; labels (B,) in [0, C),
    required; returns a scalar (float32 under autocast).

    Args:
        alpha: weight α ≥ 0 of the target-class term (TCKD).
        beta: weight β ≥ 0 of the non-target term (NCKD).
        temperature: T > 0.
        standardize: z-score each sample's logits first (Sun et al. 2024).
    """

    label = "DKD (Zhao et al. 2022)"
    paper_eq = "Zhao et al. 2022"
    reference = (
        'Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation", CVPR 2022'
    )
    summary = "decoupled KD: target/non-target binary KL + non-target class KL"
    needs_labels = True

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.alpha = check_number(alpha, "alpha")
        self.beta = check_number(beta, "beta")
        self.temperature = check_temperature(temperature, "temperature")
        self.standardize = check_flag(standardize, "standardize")

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}, "
            f"standardize={self.standardize}"
        )

    def compute(self, student, teacher, labels):
        batch, classes = student.shape
        if labels is None:
            raise ValueError("DKDLoss: needs the class labels (B,) of the batch, got None")
        if classes < 2:
            raise ValueError(
                f"DKDLoss: needs at least 2 classes, got logits {tuple(student.shape)}"
            )
        # On CPU the range check is free; on an accelerator it would stall the step (there
        # gather's bounds check trips instead, and the data layer validates labels).
        if labels.device.type == "cpu" and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ValueError(
                f"DKDLoss: labels must lie in [0, {classes}), got min {int(labels.min())}, "
                f"max {int(labels.max())}"
            )
        if self.standardize:
            student, teacher = standardize_logits(student), standardize_logits(teacher)
        z_s, z_t = student / self.temperature, teacher / self.temperature
        # The C − 1 non-target columns, gathered: the target is dropped exactly (the public
        # code subtracts 1000 from it, which logits of magnitude 1e4 can outweigh).
        others = other_indices(labels, classes)
        zo_s, zo_t = z_s.gather(1, others), z_t.gather(1, others)
        tckd = _kl_rows(_binary_log_probs(z_t, zo_t, labels), _binary_log_probs(z_s, zo_s, labels))
        nckd = _kl_rows(torch.log_softmax(zo_t, dim=1), torch.log_softmax(zo_s, dim=1))
        scale = self.temperature**2 / batch
        return scale * (self.alpha * tckd + self.beta * nckd)

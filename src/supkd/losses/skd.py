"""``skd``: streamlined knowledge distillation (Jeong, Lee & Choi, CVPR 2026), a logit KD
baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from supkd.losses.base import KDLoss
from supkd.losses.common import check_number, check_temperature, l2_normalize
from supkd.losses.registry import register_loss

__all__ = ["SKDLoss"]


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """√x for x ≥ 0 with gradient 0 (not ∞·0 = NaN) where x = 0: a sample whose Gram row
    the student already matches."""
    positive = x > 0
    return torch.where(positive, x.clamp_min(torch.finfo(x.dtype).tiny).sqrt(),
                       torch.zeros_like(x))


@register_loss("skd")
class SKDLoss(KDLoss):
    r"""Streamlined knowledge distillation (Jeong, Lee & Choi, "Streamlined Knowledge
    Distillation", CVPR 2026), its instance and direction terms (torchdistill's
    ``SKDInstanceLoss`` and ``SKDDirectionLoss``, the public reference):

        L_INS = KL(softmax(z_t / τ) ‖ softmax(z_s / τ))      (batch mean, no τ² factor),
        G = ẑ ẑᵀ (B × B) of the L2-normalized logits ẑ,  D = G_s − G_t,
        Σ' = cov(D) + λ I  (B × B: the columns of D as variables, its rows as observations),
        L_DIR = mean_i √(D_iᵀ Σ'⁻¹ D_i)  (Σ'⁻¹ through its Cholesky factor),
        L = ins_weight · L_INS + dir_weight · L_DIR.

    τ = 4 and λ = 0.1 are the authors' code's (the paper gives no values), both terms
    weighted 1 as torchdistill's sample config (which has no cross-entropy term:
    ``task.ce_weight: 0`` reproduces it). Reads the logits (``task.representation:
    logits``); widths must match (the KL compares classes). The direction term couples the
    batch's samples: under DDP the task gathers the global batch.

    Shapes: student (B, K), teacher (B, K); labels unused; returns a scalar.
    """

    label = "SKD (Jeong et al. 2026)"
    paper_eq = "Jeong, Lee & Choi 2026"
    reference = 'Jeong, Lee & Choi, "Streamlined Knowledge Distillation", CVPR 2026'
    summary = "KL at T = 4 plus a Mahalanobis distance between normalized-logit Gram rows"
    compares_samples = True

    def __init__(self, temperature: float = 4.0, tikhonov: float = 0.1,
                 ins_weight: float = 1.0, dir_weight: float = 1.0) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature, "temperature")
        self.tikhonov = check_number(tikhonov, "tikhonov", minimum=0.0, strict=True)
        self.ins_weight = check_number(ins_weight, "ins_weight")
        self.dir_weight = check_number(dir_weight, "dir_weight")

    def direction(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """L_DIR of logits (B, K), (B, K)."""
        zs, zt = l2_normalize(student), l2_normalize(teacher)
        diff = zs @ zs.T - zt @ zt.T  # (B, B)
        b = diff.shape[0]
        centred = diff - diff.mean(dim=0, keepdim=True)
        cov = centred.T @ centred / max(b - 1, 1)
        eye = torch.eye(b, dtype=diff.dtype, device=diff.device)
        chol = torch.linalg.cholesky(cov + self.tikhonov * eye)
        inv = torch.cholesky_inverse(chol)
        return _safe_sqrt(((diff @ inv) * diff).sum(dim=1)).mean()

    def compute(self, student, teacher, labels):
        tau = self.temperature
        log_p_s = F.log_softmax(student / tau, dim=1)
        log_p_t = F.log_softmax(teacher / tau, dim=1)
        ins = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1).mean()
        return self.ins_weight * ins + self.dir_weight * self.direction(student, teacher)

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
    Distillation", CVPR 2026), its instance and direction terms as the authors' code
    (github.com/HyunJunSik/StreamLined, ``Distiller/SKD.py``) computes them:

        L_INS = s_τ · KL(softmax(z_t / τ) ‖ softmax(z_s / τ))   (batch mean),
        G = ẑ ẑᵀ / c (B × B) of the L2-normalized logits ẑ,  D = G_s − G_t,
        Σ' = cov(D) + λ I  (B × B: the columns of D as variables, its rows as observations),
        L_DIR = mean_i √(D_iᵀ Σ'⁻¹ D_i)  (Σ'⁻¹ through its Cholesky factor),
        L = ins_weight · L_INS + dir_weight · L_DIR,

    with c = K (the number of classes) and s_τ = τ² by default, as in the authors' code.
    Dividing both Grams by K is the same as λ·K² on the undivided Grams: the Tikhonov term
    then outweighs the batch covariance and L_DIR stays close to a (scaled) Euclidean
    distance between Gram rows. torchdistill's ``SKDDirectionLoss`` / ``SKDInstanceLoss``
    (and the paper's equations) leave out both factors (``gram_by_classes=False``,
    ``tau_squared=False``); with λ = 0.1 its covariance, which the student's gradient
    also flows through, then dominates Σ', and the student lowers L_DIR by reshaping D
    rather than shrinking it: on digits that reading costs the student 10 points with the
    CE term and 50 without it.

    τ = 4 and λ = 0.1 are the authors' code's (the paper gives no values); the two terms are
    weighted alike (one ``kd`` weight in the authors' code; its confidence masks multiply
    each scalar term by the fraction of entries at or below their median, ≈ 1/2, a
    constant left to ``task.alpha``). The authors weight CE 0.1-0.5 and the KD terms
    0.9-0.5 per pair; supkd's default is CE weight 1, α = 1 as the other baselines
    (torchdistill's recipe, no CE term: ``task.ce_weight: 0``). Reads the logits
    (``task.representation: logits``); widths must match (the KL compares classes). The
    direction term couples the batch's samples: under DDP the task gathers the global batch.

    Shapes: student (B, K), teacher (B, K); labels unused; returns a scalar.
    """

    label = "SKD (Jeong et al. 2026)"
    paper_eq = "Jeong, Lee & Choi 2026"
    reference = 'Jeong, Lee & Choi, "Streamlined Knowledge Distillation", CVPR 2026'
    summary = "KL at T = 4 plus a Mahalanobis distance between normalized-logit Gram rows"
    compares_samples = True

    def __init__(self, temperature: float = 4.0, tikhonov: float = 0.1,
                 ins_weight: float = 1.0, dir_weight: float = 1.0,
                 gram_by_classes: bool = True, tau_squared: bool = True) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature, "temperature")
        self.tikhonov = check_number(tikhonov, "tikhonov", minimum=0.0, strict=True)
        self.ins_weight = check_number(ins_weight, "ins_weight")
        self.dir_weight = check_number(dir_weight, "dir_weight")
        for name, flag in (("gram_by_classes", gram_by_classes), ("tau_squared", tau_squared)):
            if not isinstance(flag, bool):
                raise ValueError(f"argument '{name}': expected true or false, got {flag!r}")
        self.gram_by_classes = gram_by_classes
        self.tau_squared = tau_squared

    def direction(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """L_DIR of logits (B, K), (B, K)."""
        zs, zt = l2_normalize(student), l2_normalize(teacher)
        diff = zs @ zs.T - zt @ zt.T  # (B, B)
        if self.gram_by_classes:
            # The authors' /K: Σ' = cov(D)/K² + λI keeps λ ahead of the covariance the
            # student's gradient also flows through (torchdistill's reading drops it).
            diff = diff / student.shape[1]
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
        if self.tau_squared:
            ins = ins * (tau * tau)
        return self.ins_weight * ins + self.dir_weight * self.direction(student, teacher)

"""``kdsvd``: KD with singular value decomposition (Lee, Kim & Song, ECCV 2018), a feature
KD baseline."""

from __future__ import annotations

import torch

from supkd.losses.base import StageArg, StageKDLoss, stage_error
from supkd.losses.common import l2_normalize
from supkd.losses.registry import register_loss
from supkd.losses.stage_ops import check_maps

__all__ = ["KDSVDLoss", "right_singular_vectors"]


def right_singular_vectors(f: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(V (B, W, k'), σ (B, k')) of a stage map f (B, C, H, W) seen as (B, C·H, W)
    matrices: the first k' = min(k, C·H, W) right singular vectors, each L2-normalized, and
    the singular values L2-normalized over those k'. The sign of each vector is fixed so
    that its entry of largest magnitude is positive (an SVD's sign is arbitrary; fixing it
    makes the loss a function of the features, not of the SVD routine)."""
    b, c, h, w = f.shape
    _, sig, vh = torch.linalg.svd(f.reshape(b, c * h, w), full_matrices=False)
    n = min(k, sig.shape[1])
    v = vh[:, :n, :].transpose(1, 2)  # (B, W, n)
    pick = v.abs().argmax(dim=1, keepdim=True)
    sign = torch.sign(v.gather(1, pick))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return l2_normalize(v * sign, dim=1), l2_normalize(sig[:, :n], dim=1)


def _align(v_s: torch.Tensor, v_t: torch.Tensor) -> torch.Tensor:
    """For each teacher vector (column of v_t, (B, W, k)), the student vector of v_s
    (B, W, k + 3) with the largest |cosine|, times the cosine's sign: (B, W, k)."""
    cos = v_s.transpose(1, 2) @ v_t  # (B, k + 3, k)
    best = cos.abs().argmax(dim=1, keepdim=True)  # (B, 1, k)
    sign = torch.sign(cos.gather(1, best))
    picked = v_s.gather(2, best.expand(-1, v_s.shape[1], -1))
    return picked * sign


@register_loss("kdsvd")
class KDSVDLoss(StageKDLoss):
    r"""Self-supervised KD with SVD (Lee, Kim & Song, "Self-supervised Knowledge
    Distillation Using Singular Value Decomposition", ECCV 2018, Sec. 3):

        V_t, σ_t = the first k right singular vectors and values of each teacher stage,
        V_s = the student's first k + 3, each teacher vector matched to the student vector
              of largest |cosine| (with its sign), both scaled by σ_t,
        G^l[b, i, j, n] = exp(−(V^l[b, i, n] − V^{l−1}[b, j, n])² / 8)   (consecutive stages),
        L = Σ_{l ≥ 1} Σ_{i, j, n} (G_s^l − G_t^l)² / B.

    As mdistiller and RepDistiller: k = 1; every conv stage but the stem, post-ReLU; a
    stage (B, C, H, W) is decomposed as B matrices (C·H) x W, so the vectors live in the
    W axis and student and teacher stages must have the same width W (channels may differ);
    the RBF's 8 is theirs; non-finite terms count 0. Gradients flow through the SVD
    (``torch.linalg.svd``). Weight 1.

    Shapes: lists of (B, C_k, H_k, W_k), at least two stages; labels unused; a scalar.
    """

    label = "KDSVD (Lee et al. 2018)"
    paper_eq = "Lee et al. 2018, Sec. 3"
    reference = (
        'Lee, Kim & Song, "Self-supervised Knowledge Distillation Using Singular Value '
        'Decomposition", ECCV 2018'
    )
    summary = "RBF correlations of leading singular vectors between consecutive stages"

    def __init__(self, stages: StageArg = None, k: int = 1) -> None:
        super().__init__(stages)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"argument 'k': expected an integer >= 1, got {k!r}")
        self.k = k

    def compute(self, student, teacher, labels):
        if len(student) < 2:
            raise ValueError("KDSVDLoss: needs at least two stages (it correlates consecutive "
                             f"stages), got {len(student)}")
        prev: tuple[torch.Tensor, torch.Tensor] | None = None
        total = student[0].new_zeros(())
        for idx, (s, t) in enumerate(zip(student, teacher, strict=True)):
            check_maps(self, idx, tuple(s.shape), tuple(t.shape))
            if s.shape[3] != t.shape[3]:
                raise stage_error(self, idx, tuple(s.shape[1:]), tuple(t.shape[1:]),
                                  "differ in width W, the axis of the singular vectors")
            v_t, sig_t = right_singular_vectors(t, self.k)
            v_s, _ = right_singular_vectors(s, self.k + 3)
            v_s = _align(v_s, v_t)
            v_t, v_s = v_t * sig_t[:, None, :], v_s * sig_t[:, None, :]
            if prev is not None:
                g_s = torch.exp(-(v_s[:, :, None, :] - prev[0][:, None, :, :]).pow(2) / 8.0)
                g_t = torch.exp(-(v_t[:, :, None, :] - prev[1][:, None, :, :]).pow(2) / 8.0)
                diff = (g_s - g_t).pow(2)
                diff = torch.where(torch.isfinite(diff), diff, torch.zeros_like(diff))
                total = total + diff.sum() / s.shape[0]
            prev = (v_s, v_t)
        return total

"""``vid``: variational information distillation (Ahn et al., CVPR 2019), a feature KD
baseline with trained regressors and variances."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from supkd.losses.base import StageArg, StageKDLoss
from supkd.losses.common import check_number
from supkd.losses.registry import register_loss
from supkd.losses.stage_ops import check_maps, pool_to_common

__all__ = ["VIDLoss"]


def _regressor(c_s: int, c_t: int) -> nn.Sequential:
    """μ(·): three 1x1 convolutions without bias, ReLU between (the authors' and
    mdistiller's regressor)."""
    return nn.Sequential(
        nn.Conv2d(c_s, c_t, 1, bias=False), nn.ReLU(),
        nn.Conv2d(c_t, c_t, 1, bias=False), nn.ReLU(),
        nn.Conv2d(c_t, c_t, 1, bias=False),
    )


@register_loss("vid")
class VIDLoss(StageKDLoss):
    r"""Variational information distillation (Ahn, Hu, Damianou, Lawrence & Dai,
    "Variational Information Distillation for Knowledge Transfer", CVPR 2019, Eqs. 2-5):
    the negative log-likelihood of the teacher's map under a Gaussian whose mean is
    regressed from the student's and whose variance is learned per teacher channel
    (heteroscedastic in channels, homoscedastic in space):

        σ²_c = softplus(α_c) + ε,
        L = Σ_stages mean_{b, c, h, w} ½ [ (t − μ(s))² / σ²_c + log σ²_c ]

    (the constant ½ log 2π left out). μ: three 1x1 convolutions (:func:`_regressor`); α_c
    starts where σ² = ``init_var`` (5.0); ε = ``eps`` (1e-5). Both are built by
    :meth:`bind_stages` and trained with the student (mdistiller keeps α in a plain list,
    so its variances stay at their start; the authors' and RepDistiller's code train them,
    as here). Stages: every conv stage but the stem, post-ReLU; maps of different sizes are
    matched by average-pooling the larger; weight 1.

    Shapes: lists of (B, C_k, H_k, W_k); labels unused; returns a scalar.
    """

    label = "VID (Ahn et al. 2019)"
    paper_eq = "Ahn et al. 2019, Eq. 5"
    reference = (
        'Ahn et al., "Variational Information Distillation for Knowledge Transfer", '
        "CVPR 2019"
    )
    summary = "Gaussian log-likelihood of the teacher's maps, mean regressed, variance learned"

    def __init__(self, stages: StageArg = None, init_var: float = 5.0,
                 eps: float = 1e-5) -> None:
        super().__init__(stages)
        self.eps = check_number(eps, "eps", minimum=0.0, strict=True)
        self.init_var = check_number(init_var, "init_var", minimum=self.eps, strict=True)
        self.regressors = nn.ModuleList()
        self.log_scales = nn.ParameterList()

    def bind_stages(self, student_shapes, teacher_shapes, num_samples=None, seed=0,
                    teacher_bn=None):
        start = math.log(math.expm1(self.init_var - self.eps))  # softplus⁻¹(init_var − ε)
        regs, scales = [], []
        for k, (s, t) in enumerate(zip(student_shapes, teacher_shapes, strict=True)):
            check_maps(self, k, s, t)
            regs.append(_regressor(s[0], t[0]))
            scales.append(nn.Parameter(torch.full((t[0],), start)))
        self.regressors = nn.ModuleList(regs)
        self.log_scales = nn.ParameterList(scales)

    def compute(self, student, teacher, labels):
        if len(self.regressors) != len(student):
            raise ValueError(f"VIDLoss: bound for {len(self.regressors)} stages, called with "
                             f"{len(student)} (call bind_stages(...) first)")
        total = student[0].new_zeros(())
        for k, (s, t) in enumerate(zip(student, teacher, strict=True)):
            s, t = pool_to_common(s, t, self, k)
            reg, alpha = self.regressors[k], self.log_scales[k]
            mean = reg(s.to(alpha.dtype)).to(s.dtype)
            var = (F.softplus(alpha) + self.eps).to(s.dtype).view(1, -1, 1, 1)
            total = total + (0.5 * ((t - mean).pow(2) / var + var.log())).mean()
        return total

"""``ofd``: overhaul of feature distillation (Heo et al., ICCV 2019), a feature KD baseline
on pre-ReLU features with margins from the teacher's BatchNorm and trained connectors."""

from __future__ import annotations

import math

import torch
from torch import nn

from supkd.losses.base import StageArg, StageKDLoss, stage_error
from supkd.losses.registry import register_loss
from supkd.losses.stage_ops import check_maps, pool_to_size

__all__ = ["OFDLoss", "ofd_margin"]


def ofd_margin(std: float, mean: float) -> float:
    """E[x | x < 0] for x ~ N(mean, std²) (Heo et al., Eq. 5): the teacher's expected
    negative response of a channel whose pre-ReLU output the BatchNorm gives that
    distribution; −3·std when P(x < 0) ≤ 0.001 (as the authors' code)."""
    s = abs(std)
    if s == 0.0:
        return min(mean, 0.0)
    z = -mean / s
    cdf = 0.5 * math.erfc(-z / math.sqrt(2.0))  # Φ(−m/s)
    if cdf <= 0.001:
        return -3.0 * s
    pdf = math.exp(-(z * z) / 2.0) / math.sqrt(2.0 * math.pi)
    return mean - s * pdf / cdf


def _connector(c_s: int, c_t: int) -> nn.Sequential:
    """1x1 convolution (no bias) + BatchNorm, initialized as the authors' code."""
    conv = nn.Conv2d(c_s, c_t, kernel_size=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / c_t))
    bn = nn.BatchNorm2d(c_t)
    return nn.Sequential(conv, bn)


@register_loss("ofd")
class OFDLoss(StageKDLoss):
    r"""Overhaul of feature distillation (Heo, Kim, Yun, Park, Kwak & Choi, "A
    Comprehensive Overhaul of Feature Distillation", ICCV 2019, Eqs. 2-6):

        t̂ = max(t, m_c)            (the teacher's pre-ReLU map, margin m_c per channel),
        d_p(t̂, s) = Σ_{c,h,w} 0 if s ≤ t̂ ≤ 0, else (t̂ − s)²   (partial L2),
        L = Σ_k 2^{−(K−1−k)} mean_batch d_p(t̂_k, r_k(s_k))

    s: the student's pre-ReLU map through a trained connector r_k (1x1 conv + BatchNorm);
    m_c = E[x | x < 0] of N(β_c, γ_c²) from the teacher's BatchNorm before that ReLU
    (:func:`ofd_margin`; ``bn_before_relu()``); the deeper stage counts double the one
    before it. Stages: every conv stage but the stem, pre-ReLU on both sides; a teacher
    map larger than the student's is average-pooled to its size (as the authors' code), a
    smaller one refused. mdistiller's weight 0.001 is ``task.alpha``. Differences: the
    teacher stays in eval mode (mdistiller's OFD puts it in train mode).

    Shapes: lists of (B, C_k, H_k, W_k); labels unused; returns a scalar.
    """

    label = "OFD (Heo et al. 2019)"
    paper_eq = "Heo et al. 2019, Eq. 6"
    reference = 'Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019'
    summary = "partial L2 on pre-ReLU maps, teacher margins from its BatchNorm, trained connectors"
    student_preact = True
    teacher_preact = True
    needs_teacher_bn = True

    def __init__(self, stages: StageArg = None) -> None:
        super().__init__(stages)
        self.connectors = nn.ModuleList()
        self.num_margins = 0

    def bind_stages(self, student_shapes, teacher_shapes, num_samples=None, seed=0,
                    teacher_bn=None):
        if teacher_bn is None or len(teacher_bn) != len(teacher_shapes):
            raise ValueError("OFDLoss: needs the teacher's BatchNorm before each stage's ReLU "
                             "(bn_before_relu()) for its margins")
        conns = []
        for k, (s, t) in enumerate(zip(student_shapes, teacher_shapes, strict=True)):
            check_maps(self, k, s, t)
            if t[1] < s[1] or t[2] < s[2]:
                raise stage_error(self, k, s, t, "cannot be matched: the teacher map is "
                                  "smaller than the student's (OFD pools the teacher down)")
            bn = teacher_bn[k]
            if bn.num_features != t[0]:
                raise stage_error(self, k, s, t, f"do not fit the teacher's BatchNorm of "
                                  f"{bn.num_features} channels")
            conns.append(_connector(s[0], t[0]))
            margin = [ofd_margin(float(g), float(b))
                      for g, b in zip(bn.weight.detach().cpu(), bn.bias.detach().cpu(),
                                      strict=True)]
            self.register_buffer(f"margin{k}", torch.tensor(margin).view(1, -1, 1, 1))
        self.connectors = nn.ModuleList(conns)
        self.num_margins = len(conns)

    def compute(self, student, teacher, labels):
        n = len(student)
        if len(self.connectors) != n:
            raise ValueError(f"OFDLoss: bound for {len(self.connectors)} stages, called with "
                             f"{n} (call bind_stages(...) first)")
        total = student[0].new_zeros(())
        for k, (s, t) in enumerate(zip(student, teacher, strict=True)):
            conn = self.connectors[k]
            s = conn(s.to(conn[0].weight.dtype)).to(s.dtype)
            t = pool_to_size(t, tuple(s.shape[-2:]))
            m = getattr(self, f"margin{k}").to(s.dtype)
            target = torch.maximum(t, m.expand_as(t))
            skip = (s <= target) & (target <= 0)
            per = torch.where(skip, torch.zeros_like(s), (target - s).pow(2))
            total = total + per.sum() / s.shape[0] / 2.0 ** (n - 1 - k)
        return total

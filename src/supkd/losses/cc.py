"""``cc``: correlation congruence (Peng et al., ICCV 2019), a KD baseline with trained
embeddings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from supkd.losses.base import KDLoss
from supkd.losses.common import check_number, l2_normalize
from supkd.losses.registry import register_loss

__all__ = ["CCLoss", "taylor_rbf"]


def taylor_rbf(x: torch.Tensor, gamma: float, order: int) -> torch.Tensor:
    """(B, D) L2-normalized rows -> (B, B) correlation matrix: the Gaussian RBF
    exp(−γ‖x_i − x_j‖²) = exp(−2γ) exp(2γ x_iᵀx_j) expanded to order P in x_iᵀx_j
    (Peng et al., Eq. 9): Σ_{p=0}^{P} exp(−2γ) (2γ)^p / p! (x_iᵀx_j)^p."""
    sim = x @ x.T
    corr = torch.zeros_like(sim)
    for p in range(order + 1):
        corr = corr + math.exp(-2.0 * gamma) * (2.0 * gamma) ** p / math.factorial(p) * sim.pow(p)
    return corr


@register_loss("cc")
class CCLoss(KDLoss):
    r"""Correlation congruence (Peng et al., "Correlation Congruence for Knowledge
    Distillation", ICCV 2019, Eqs. 7-9):

        e = normalize(W x + b)                          (trained linear embeddings, d = 128),
        C = taylor_rbf(e)  (B × B, Gaussian RBF with γ = 0.4, Taylor order P = 2),
        L = ‖C_t − C_s‖²_F / B².

    As RepDistiller: both sides' penultimate features (``task.representation:
    embedding``) are embedded by their own trained Linear to ``feat_dim`` (128) before the
    correlation; its weight 0.02 is ``task.alpha`` (RepDistiller's CC runs the authors'
    simplified correlation; the formula here is the paper's, with the γ and P of the public
    PyTorch ports). The embeddings are built by :meth:`bind` and trained with the student.
    The paper's instance term is plain KD and is left to the other losses.

    Shapes: student (B, D_s), teacher (B, D_t); labels unused; returns a scalar.
    """

    label = "CC (Peng et al. 2019)"
    paper_eq = "Peng et al. 2019, Eq. 9"
    reference = 'Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019'
    summary = "Taylor-expanded Gaussian RBF correlations of the batch, trained embeddings"
    compares_samples = True
    same_width = False
    flatten_inputs = True

    def __init__(self, feat_dim: int = 128, gamma: float = 0.4, order: int = 2) -> None:
        super().__init__()
        for name, value in (("feat_dim", feat_dim), ("order", order)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"argument '{name}': expected an integer >= 1, got {value!r}")
        self.feat_dim, self.order = feat_dim, order
        self.gamma = check_number(gamma, "gamma", minimum=0.0, strict=True)
        self.embed_s: nn.Linear | None = None
        self.embed_t: nn.Linear | None = None

    def bind(self, student_width, teacher_width, num_samples, seed=0):
        """Build the two embeddings (B, student_width | teacher_width) -> (B, feat_dim)."""
        self.embed_s = nn.Linear(student_width, self.feat_dim)
        self.embed_t = nn.Linear(teacher_width, self.feat_dim)

    def _embed(self, layer: nn.Linear, x: torch.Tensor, side: str) -> torch.Tensor:
        if x.shape[1] != layer.in_features:
            raise ValueError(f"CCLoss: {side} width {x.shape[1]} differs from the bound width "
                             f"{layer.in_features} (bind() was called for other features)")
        return l2_normalize(F.linear(x, layer.weight.to(x.dtype), layer.bias.to(x.dtype)))

    def compute(self, student, teacher, labels):
        if self.embed_s is None or self.embed_t is None:
            raise ValueError("CCLoss: call bind(student_width, teacher_width, num_samples) "
                             "first (the distill task does it)")
        c_s = taylor_rbf(self._embed(self.embed_s, student, "student"), self.gamma, self.order)
        c_t = taylor_rbf(self._embed(self.embed_t, teacher, "teacher"), self.gamma, self.order)
        return (c_t - c_s).pow(2).mean()

"""The knowledge-distillation losses of the paper (Eq. 1-5) and Hinton's KD.

Paper: Lee, Hyeon & Jeon, "Designing Distillation Losses for Effective Knowledge Transfer
from SupCon Representations"; how its equations are read is fixed in DESIGN.md §4.

Every loss is called as ``loss(student, teacher, labels=None)`` with
student (B, D_s), teacher (B, D_t), labels (B,) integer or None, and returns a scalar.
Common behaviour (in :class:`KDLoss`):

- the teacher is detached: no gradient ever reaches it;
- the body runs in float32 even under autocast (float64 inputs stay float64);
- reductions do not grow with the batch size (mean over samples, or /B² for Gram);
- bad shapes raise ValueError naming both shapes.

Class attributes used by the distill task and by ``supkd losses``: ``paper_eq``,
``summary``, ``needs_labels`` (the task should pass labels), ``compares_samples`` (the
value couples samples of the batch, so under DDP the task gathers the global batch first),
``same_width`` (student and teacher widths must be equal; otherwise the task inserts an
adapter).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from supkd.losses.common import (
    check_flag,
    check_labels,
    check_temperature,
    full_precision,
    l2_normalize,
    upcast,
)

__all__ = [
    "CosineLoss",
    "GramLoss",
    "HintonKLLoss",
    "KDLoss",
    "LogitMSELoss",
    "NormMSELoss",
    "SupConKDLoss",
]


class KDLoss(nn.Module, abc.ABC):
    """Base class: input checks, teacher detach and float32 computation.

    Subclasses implement :meth:`compute` on validated, upcast tensors.
    """

    paper_eq: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    needs_labels: ClassVar[bool] = False
    compares_samples: ClassVar[bool] = False
    # Not a ClassVar: GramLoss sets it per instance (True only in channel mode).
    same_width: bool = True

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """student (B, D_s), teacher (B, D_t), labels (B,) or None -> scalar."""
        self._check(student, teacher)
        labels = check_labels(
            labels,
            student.shape[0],
            f"student {tuple(student.shape)} / teacher {tuple(teacher.shape)}",
        )
        teacher = teacher.detach()
        with full_precision(student, teacher):
            s, t = upcast(student), upcast(teacher)
            if s.dtype != t.dtype:
                # e.g. float64 student vs float32 teacher: compute in the wider type.
                wide = torch.promote_types(s.dtype, t.dtype)
                s, t = s.to(wide), t.to(wide)
            if labels is not None:
                labels = labels.to(s.device)
            return self.compute(s, t, labels)

    def _check(self, student: torch.Tensor, teacher: torch.Tensor) -> None:
        for name, x in (("student", student), ("teacher", teacher)):
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"{name}: expected a tensor, got {type(x).__name__}")
            if not x.is_floating_point():
                raise ValueError(f"{name}: expected a floating tensor, got dtype {x.dtype}")
        s_shape, t_shape = tuple(student.shape), tuple(teacher.shape)
        both = f"student shape {s_shape}, teacher shape {t_shape}"
        if student.dim() != 2 or teacher.dim() != 2:
            raise ValueError(f"{type(self).__name__}: expected (B, D) inputs, got {both}")
        if s_shape[0] != t_shape[0]:
            raise ValueError(f"{type(self).__name__}: batch sizes differ, {both}")
        if s_shape[0] == 0:
            raise ValueError(f"{type(self).__name__}: empty batch, {both}")
        if self.same_width and s_shape[1] != t_shape[1]:
            raise ValueError(
                f"{type(self).__name__}: widths differ ({s_shape[1]} vs {t_shape[1]}) and this "
                f"loss compares features element-wise; {both} (use an adapter)"
            )

    @abc.abstractmethod
    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The loss on validated float32/float64 tensors (teacher already detached)."""


class LogitMSELoss(KDLoss):
    r"""Eq. 1: ``mean_i ||z_t,i - z_s,i||²₂`` (sum over the dimension, mean over samples).

    The paper's baseline; unlike ``F.mse_loss`` the squared error is summed over the
    D dimensions, as the squared L2 norm of Eq. 1 is.
    """

    paper_eq = "Eq. 1"
    summary = "squared L2 distance of teacher and student vectors"

    def compute(self, student, teacher, labels):
        return (teacher - student).pow(2).sum(dim=1).mean()


class NormMSELoss(KDLoss):
    r"""Eq. 2: ``mean_i ||z̄_t,i - z̄_s,i||²₂`` with ``z̄ = z / max(||z||, eps)``.

    Equals 2·(1 − cos) for non-zero vectors; a zero vector is mapped to zero (eps-safe).
    """

    paper_eq = "Eq. 2"
    summary = "squared L2 distance of L2-normalized vectors"

    def compute(self, student, teacher, labels):
        return (l2_normalize(teacher) - l2_normalize(student)).pow(2).sum(dim=1).mean()


class CosineLoss(KDLoss):
    r"""Eq. 3 as a loss: ``mean_i 1 − cos(z_t,i, z_s,i)``.

    The paper minimises the negative cosine; the constant 1 keeps the value in [0, 2]
    without changing the gradient (DESIGN.md §4). Cosine is computed on eps-safe
    normalized vectors, so a zero vector has cosine 0.
    """

    paper_eq = "Eq. 3"
    summary = "1 - cosine similarity of teacher and student vectors"

    def compute(self, student, teacher, labels):
        cos = (l2_normalize(teacher) * l2_normalize(student)).sum(dim=1)
        return (1.0 - cos).mean()


class GramLoss(KDLoss):
    r"""Eq. 4: ``||Z_t Z_tᵀ − Z_s Z_sᵀ||²_F / B²`` with Z the B×D batch matrix.

    ``mode="sample"`` (default) compares the B×B Gram matrices of pairwise sample
    similarities, so student and teacher widths may differ; /B² makes it the mean over
    the B² entries. ``mode="channel"`` compares the D×D Gram ``ZᵀZ`` (Yim et al., 2017
    style inter-channel correlations; widths must match), also divided by B² so that the
    value does not grow with the batch (each entry is a sum over B samples).
    ``normalize=True`` L2-normalizes each sample's row first, as similarity-preserving KD
    (Tung & Mori, 2019) does, making the loss invariant to per-sample scale.

    Args:
        normalize: L2-normalize rows of Z before forming the Gram matrix.
        mode: ``"sample"`` (B×B) or ``"channel"`` (D×D).
    """

    paper_eq = "Eq. 4"
    summary = "squared Frobenius distance of Gram matrices / B^2"
    # True in both modes: a D×D Gram is a sum over the batch and the loss is not additive
    # over samples, so under DDP the exact value also needs the global batch.
    compares_samples = True
    same_width = False

    MODES: ClassVar[tuple[str, ...]] = ("sample", "channel")

    def __init__(self, normalize: bool = False, mode: str = "sample") -> None:
        super().__init__()
        self.normalize = check_flag(normalize, "normalize")
        if mode not in self.MODES:
            raise ValueError(f"argument 'mode': expected one of {list(self.MODES)}, got {mode!r}")
        self.mode = mode
        # Instance attribute: the D×D channel Gram needs equal widths, the B×B one does not.
        self.same_width = mode == "channel"

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, mode={self.mode!r}"

    def compute(self, student, teacher, labels):
        if self.normalize:
            student, teacher = l2_normalize(student), l2_normalize(teacher)
        if self.mode == "sample":
            g_s, g_t = student @ student.T, teacher @ teacher.T
        else:
            g_s, g_t = student.T @ student, teacher.T @ teacher
        batch = student.shape[0]
        return (g_t - g_s).pow(2).sum() / (batch * batch)


class SupConKDLoss(KDLoss):
    r"""Eq. 5: SupCon-style distillation with teacher anchors and student contrasts.

    For each teacher sample t (anchor) the contrast set S is all B student samples of the
    batch and P(t) = {s : y_s = y_t} (it always contains the student view of the same
    image; with ``labels=None`` it is exactly that one):

        L = mean_t  −1/|P(t)| Σ_{p∈P(t)} log( exp(z_t·z_p/τ) / Σ_{s∈S} exp(z_t·z_s/τ) )

    The paper sums over anchors; the mean keeps the scale independent of B (α absorbs
    the constant, DESIGN.md §4). Defaults follow the paper's best row of Table V:
    normalize the student only. The log-softmax is max-shifted (``torch.log_softmax``)
    and computed in float32, so un-normalized logits of magnitude 1e4 stay finite.

    Args:
        temperature: τ > 0.
        normalize_student: L2-normalize z_s (eps-safe) before the dot products.
        normalize_teacher: L2-normalize z_t (eps-safe) before the dot products.
    """

    paper_eq = "Eq. 5"
    summary = "SupCon: teacher anchors, student contrasts, same-label positives"
    needs_labels = True
    compares_samples = True
    same_width = True

    def __init__(
        self,
        temperature: float = 0.1,
        normalize_student: bool = True,
        normalize_teacher: bool = False,
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature, "temperature")
        self.normalize_student = check_flag(normalize_student, "normalize_student")
        self.normalize_teacher = check_flag(normalize_teacher, "normalize_teacher")

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, normalize_student={self.normalize_student}, "
            f"normalize_teacher={self.normalize_teacher}"
        )

    def compute(self, student, teacher, labels):
        if self.normalize_student:
            student = l2_normalize(student)
        if self.normalize_teacher:
            teacher = l2_normalize(teacher)
        # Row t: anchor teacher sample t against every student sample s.
        log_prob = torch.log_softmax((teacher @ student.T) / self.temperature, dim=1)
        batch = student.shape[0]
        if labels is None:
            pos = torch.eye(batch, dtype=torch.bool, device=student.device)
        else:
            pos = labels[:, None] == labels[None, :]
        # |P(t)| >= 1 always (the diagonal), so no division by zero.
        pos_count = pos.sum(dim=1).to(log_prob.dtype)
        pos_sum = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
        return -(pos_sum / pos_count).mean()


class HintonKLLoss(KDLoss):
    r"""Hinton et al. (2015) KD: ``T² · mean_i KL(softmax(z_t,i/T) ‖ softmax(z_s,i/T))``.

    The KL is summed over classes and averaged over samples ("batchmean"); T² keeps the
    gradient scale independent of T, as in the original paper. Both distributions are
    handled as log-probabilities (``log_target=True``) so that classes with vanishing
    teacher probability contribute exactly 0 instead of 0·log 0.

    Args:
        temperature: T > 0 (4 in the public CIFAR KD recipes).
    """

    paper_eq = "Hinton et al. 2015"
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

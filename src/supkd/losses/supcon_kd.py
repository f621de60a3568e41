"""``supcon_kd``: Eq. 5, SupCon-style distillation (teacher anchors, student contrasts)."""

from __future__ import annotations

from typing import ClassVar

import torch

from supkd.losses.base import PAPER, KDLoss
from supkd.losses.common import check_choice, check_flag, check_temperature, l2_normalize
from supkd.losses.registry import register_loss

__all__ = ["SupConKDLoss"]


@register_loss("supcon_kd")
class SupConKDLoss(KDLoss):
    r"""Eq. 5: SupCon-style distillation with teacher anchors and student contrasts.

    For each teacher sample t (anchor) the contrast set S is all B student samples of the
    batch and P(t) = {s : y_s = y_t} (it always contains the student view of the same
    image; with ``labels=None`` it is exactly that one):

        L = mean_t  −1/|P(t)| Σ_{p∈P(t)} log( exp(z_t·z_p/τ) / Σ_{s∈S} exp(z_t·z_s/τ) )

    The paper sums over anchors; the mean keeps the scale independent of B (α absorbs
    the constant, docs/design.md §4). Defaults follow the paper's best row of Table V:
    normalize the student only. The log-softmax is max-shifted (``torch.log_softmax``)
    and computed in float32, so un-normalized logits of magnitude 1e4 stay finite.

    ``positives="instance"`` is the ablation without label information: the only positive
    of teacher anchor t is the student view of the same image, P(t) = {t}, so the loss is
    InfoNCE over the batch (labels are ignored; the same as ``labels=None``).

    Shapes: student (B, D), teacher (B, D) (equal widths), labels (B,) or None; returns a
    scalar.

    Args:
        temperature: τ > 0.
        normalize_student: L2-normalize z_s (eps-safe) before the dot products.
        normalize_teacher: L2-normalize z_t (eps-safe) before the dot products.
        positives: ``"label"`` (Eq. 5: same-label students) or ``"instance"`` (same image).
    """

    label = "SupConKD (Eq. 5)"
    paper_eq = "Eq. 5"
    reference = PAPER
    kd_table_row = True
    summary = "SupCon: teacher anchors, student contrasts, same-label positives"
    needs_labels = True
    compares_samples = True
    same_width = True

    POSITIVES: ClassVar[tuple[str, ...]] = ("label", "instance")

    def __init__(
        self,
        temperature: float = 0.1,
        normalize_student: bool = True,
        normalize_teacher: bool = False,
        positives: str = "label",
    ) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature, "temperature")
        self.normalize_student = check_flag(normalize_student, "normalize_student")
        self.normalize_teacher = check_flag(normalize_teacher, "normalize_teacher")
        self.positives = check_choice(positives, "positives", self.POSITIVES)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, normalize_student={self.normalize_student}, "
            f"normalize_teacher={self.normalize_teacher}, positives={self.positives!r}"
        )

    def compute(self, student, teacher, labels):
        if self.normalize_student:
            student = l2_normalize(student)
        if self.normalize_teacher:
            teacher = l2_normalize(teacher)
        # Row t: anchor teacher sample t against every student sample s.
        log_prob = torch.log_softmax((teacher @ student.T) / self.temperature, dim=1)
        batch = student.shape[0]
        if labels is None or self.positives == "instance":
            pos = torch.eye(batch, dtype=torch.bool, device=student.device)
        else:
            pos = labels[:, None] == labels[None, :]
        # |P(t)| >= 1 always (the diagonal), so no division by zero.
        pos_count = pos.sum(dim=1).to(log_prob.dtype)
        pos_sum = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(dim=1)
        return -(pos_sum / pos_count).mean()

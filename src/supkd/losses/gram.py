"""``gram``: Eq. 4, the squared Frobenius distance of Gram matrices (sample or channel)."""

from __future__ import annotations

from typing import ClassVar

from supkd.losses.base import PAPER, KDLoss
from supkd.losses.common import check_flag, l2_normalize
from supkd.losses.registry import register_loss

__all__ = ["GramLoss"]


@register_loss("gram")
class GramLoss(KDLoss):
    r"""Eq. 4: ``||Z_t Z_tᵀ − Z_s Z_sᵀ||²_F / B²`` with Z the B×D batch matrix.

    ``mode="sample"`` (default) compares the B×B Gram matrices of pairwise sample
    similarities, so student and teacher widths may differ; /B² makes it the mean over
    the B² entries. ``mode="channel"`` compares the D×D Gram ``ZᵀZ`` (Yim et al., 2017
    style inter-channel correlations; widths must match), also divided by B² so that the
    value does not grow with the batch (each entry is a sum over B samples).
    ``normalize=True`` L2-normalizes each sample's feature row *before* the product, so the
    sample Gram's entries are cosine similarities and the loss is invariant to per-sample
    scale. This is not similarity-preserving KD (Tung & Mori, ICCV 2019), which forms the
    Gram of the raw features and L2-normalizes each row of the *Gram* after the product;
    that loss is ``sp`` (:class:`supkd.losses.sp.SPLoss`). The two give different values on
    the same batch (tests/losses/test_loss_reference.py).

    Shapes: student (B, D_s), teacher (B, D_t) (D_s = D_t in channel mode); returns a scalar.

    Args:
        normalize: L2-normalize the feature rows of Z before forming the Gram matrix.
        mode: ``"sample"`` (B×B) or ``"channel"`` (D×D).
    """

    label = "Gram KD (Eq. 4)"
    paper_eq = "Eq. 4"
    reference = PAPER
    kd_table_row = True
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

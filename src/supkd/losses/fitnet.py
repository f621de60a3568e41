"""``fitnet``: FitNets hints (Romero et al., ICLR 2015), a feature KD baseline with a
trained convolutional regressor per hint stage."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from supkd.losses.base import StageArg, StageKDLoss, stage_error
from supkd.losses.registry import register_loss
from supkd.losses.stage_ops import check_maps

__all__ = ["FitNetLoss", "hint_regressor"]


def hint_regressor(s_shape: Sequence[int], t_shape: Sequence[int], loss: object = None,
                   k: int = 0) -> nn.Module:
    """The regressor r from a student map (C_s, H_s, W_s) to a teacher map (C_t, H_t, W_t):
    a convolution chosen by the spatial ratio (mdistiller's ConvReg: stride-2 3x3 when the
    student is twice as large, a stride-2 transposed 4x4 when half as large, else a valid
    convolution of kernel 1 + H_s − H_t), then BatchNorm and ReLU (the teacher's hint is a
    post-ReLU map). ValueError naming both shapes when the student map is smaller (other
    than half) in a side."""
    check_maps(loss, k, s_shape, t_shape)
    (cs, hs, ws), (ct, ht, wt) = s_shape, t_shape
    if (hs, ws) == (2 * ht, 2 * wt):
        conv: nn.Module = nn.Conv2d(cs, ct, kernel_size=3, stride=2, padding=1)
    elif (2 * hs, 2 * ws) == (ht, wt):
        conv = nn.ConvTranspose2d(cs, ct, kernel_size=4, stride=2, padding=1)
    elif hs >= ht and ws >= wt:
        conv = nn.Conv2d(cs, ct, kernel_size=(1 + hs - ht, 1 + ws - wt))
    else:
        raise stage_error(loss, k, s_shape, t_shape,
                          "cannot be matched by the hint regressor (the student map is "
                          "smaller than the teacher's, and not by half)")
    return nn.Sequential(conv, nn.BatchNorm2d(ct), nn.ReLU())


@register_loss("fitnet")
class FitNetLoss(StageKDLoss):
    r"""FitNets hint training (Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR
    2015, Eq. 3), trained jointly with the task as in mdistiller (the paper's stage-wise
    pre-training is left out):

        L = Σ_hints mean_{b, c, h, w} (u_t[b, c, h, w] − r(v_s)[b, c, h, w])²,

    u_t the teacher's hint stage, v_s the student's guided stage, r a trained regressor
    (:func:`hint_regressor`, built by :meth:`bind_stages`). The mean over all elements (the
    paper's ½‖·‖² up to a constant) and the hint stage (mdistiller ``HINT_LAYER`` 2: conv
    stage 2, ``layer2`` of supkd's ResNets and the CIFAR zoo; post-ReLU) follow mdistiller;
    its weight 100 is ``task.alpha``.

    Shapes: lists of (B, C_k, H_k, W_k); labels unused; returns a scalar.
    """

    label = "FitNet (Romero et al. 2015)"
    paper_eq = "Romero et al. 2015, Eq. 3"
    reference = 'Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015'
    summary = "regress the teacher's hint stage from the student's through a trained conv"
    default_stages = (2,)

    def __init__(self, stages: StageArg = None) -> None:
        super().__init__(stages)
        self.regressors = nn.ModuleList()

    def bind_stages(self, student_shapes, teacher_shapes, num_samples=None, seed=0,
                    teacher_bn=None):
        self.regressors = nn.ModuleList(
            hint_regressor(s, t, self, k)
            for k, (s, t) in enumerate(zip(student_shapes, teacher_shapes, strict=True))
        )

    def compute(self, student, teacher, labels):
        if len(self.regressors) != len(student):
            raise ValueError(f"FitNetLoss: bound for {len(self.regressors)} stages, called with "
                             f"{len(student)} (call bind_stages(...) first)")
        total = student[0].new_zeros(())
        for k, (r, s, t) in enumerate(zip(self.regressors, student, teacher, strict=True)):
            out = r(s.to(next(r.parameters()).dtype)).to(s.dtype)
            if out.shape != t.shape:
                raise stage_error(self, k, tuple(out.shape), tuple(t.shape),
                                  "(regressed student, teacher) differ: bound for other shapes")
            total = total + (out - t).pow(2).mean()
        return total

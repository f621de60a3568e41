"""``reviewkd``: knowledge review (Chen et al., CVPR 2021), a feature KD baseline with
trained attention-based fusion (ABF) modules and the hierarchical context loss (HCL)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from supkd.losses.base import StageArg, StageKDLoss, stage_error
from supkd.losses.common import check_flag
from supkd.losses.registry import register_loss

__all__ = ["ABF", "ReviewKDLoss", "hcl"]

#: The pyramid of HCL (the authors' levels): 4x4, 2x2, 1x1 average pools.
HCL_LEVELS = (4, 2, 1)


def _as_map(x: torch.Tensor) -> torch.Tensor:
    """(B, F) -> (B, F, 1, 1); a map stays as it is."""
    return x[:, :, None, None] if x.dim() == 2 else x


def hcl(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Hierarchical context loss of one stage, (B, C, H, W) each: the MSE of the maps and of
    their 4x4, 2x2, 1x1 average pools (the levels smaller than H), weighted 1, ½, ¼, ...
    and divided by the weights' sum (Chen et al., Sec. 3.3, and the authors' code)."""
    loss = F.mse_loss(s, t)
    weight, total = 1.0, 1.0
    for level in HCL_LEVELS:
        if level >= s.shape[2]:
            continue
        weight /= 2.0
        pooled_s = F.adaptive_avg_pool2d(s, (level, level))
        pooled_t = F.adaptive_avg_pool2d(t, (level, level))
        loss = loss + weight * F.mse_loss(pooled_s, pooled_t)
        total += weight
    return loss / total


class ABF(nn.Module):
    """Attention-based fusion of one student stage with the fused result of the deeper ones.

    ``conv1`` (1x1 conv + BN) maps the stage (B, C_in, H, W) to ``mid`` channels; with a
    deeper result ``y`` (resized to H x W, nearest), a 1x1 conv + sigmoid gives two spatial
    weights and the fusion is x·a₀ + y·a₁; the fused map, resized (nearest) to the teacher
    stage's size, goes on to the next (shallower) ABF, and ``conv2`` (3x3 conv + BN) maps it
    to the teacher's channels: the output compared with the teacher.
    """

    def __init__(self, c_in: int, mid: int, c_out: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid))
        self.conv2 = nn.Sequential(nn.Conv2d(mid, c_out, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(c_out))
        self.att = (nn.Sequential(nn.Conv2d(2 * mid, 2, 1), nn.Sigmoid()) if fuse else None)
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor | None, out_size: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(output (B, C_out, *out_size), fused map (B, mid, *out_size))."""
        x = self.conv1(x)
        if self.att is not None and y is not None:
            y = F.interpolate(y, size=tuple(x.shape[-2:]), mode="nearest")
            a = self.att(torch.cat([x, y], dim=1))
            x = x * a[:, 0:1] + y * a[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


@register_loss("reviewkd")
class ReviewKDLoss(StageKDLoss):
    r"""Knowledge review (Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge
    Review", CVPR 2021, Eqs. 4-6): the student's stages, from the deepest to the shallowest,
    are fused by ABF modules (each stage with the fused result of all deeper ones), and
    each fused output is compared with the teacher's same stage by the HCL (:func:`hcl`):

        L = Σ_k HCL(ABF_k(s_k, fused_{k+1}), t_k).

    As mdistiller's CIFAR setting: the stages are every conv stage but the stem plus the
    pooled ``embedding`` (as a 1x1 map); the student's are post-ReLU, the teacher's
    pre-ReLU (``student_preact=True``: the student's too, mdistiller's ImageNet setting); the
    ABFs' middle width is min(512, the student's embedding width); weight 1, with a 20-epoch
    linear warm-up of the weight (``task.alpha_warmup_epochs: 20``). The
    ABFs are built by :meth:`bind_stages` (one per stage, output channels and size those of
    the teacher's stage) and trained with the student.

    Shapes: lists of (B, C_k, H_k, W_k) or (B, F) per stage; labels unused; a scalar.
    """

    label = "ReviewKD (Chen et al. 2021)"
    paper_eq = "Chen et al. 2021, Eq. 6"
    reference = 'Chen, Liu, Zhao & Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021'
    summary = "attention-based fusion of the student's stages, hierarchical context loss"
    default_stages = (slice(1, None), "embedding")
    teacher_preact = True

    def __init__(self, stages: StageArg = None, max_mid_channels: int = 512,
                 student_preact: bool = False) -> None:
        super().__init__(stages)
        # Per instance: mdistiller's ImageNet setting reads the student before its ReLUs.
        self.student_preact = check_flag(student_preact, "student_preact")
        if isinstance(max_mid_channels, bool) or not isinstance(max_mid_channels, int) \
                or max_mid_channels < 1:
            raise ValueError("argument 'max_mid_channels': expected an integer >= 1, got "
                             f"{max_mid_channels!r}")
        self.max_mid_channels = max_mid_channels
        self.abfs = nn.ModuleList()  # shallowest stage first
        self.out_sizes: list[tuple[int, int]] = []

    def bind_stages(self, student_shapes, teacher_shapes, num_samples=None, seed=0,
                    teacher_bn=None):
        s_maps = [tuple(s) if len(s) == 3 else (s[0], 1, 1) for s in student_shapes]
        t_maps = [tuple(t) if len(t) == 3 else (t[0], 1, 1) for t in teacher_shapes]
        for k, (s, t) in enumerate(zip(s_maps, t_maps, strict=True)):
            if len(s) != 3 or len(t) != 3:
                raise stage_error(self, k, student_shapes[k], teacher_shapes[k],
                                  "are not conv maps or pooled vectors")
        mid = min(self.max_mid_channels, s_maps[-1][0])
        last = len(s_maps) - 1
        self.abfs = nn.ModuleList(
            ABF(s[0], mid, t[0], fuse=k < last) for k, (s, t) in enumerate(zip(s_maps, t_maps))
        )
        self.out_sizes = [(t[1], t[2]) for t in t_maps]

    def compute(self, student, teacher, labels):
        if len(self.abfs) != len(student):
            raise ValueError(f"ReviewKDLoss: bound for {len(self.abfs)} stages, called with "
                             f"{len(student)} (call bind_stages(...) first)")
        dtype = self.abfs[0].conv1[0].weight.dtype
        fused: torch.Tensor | None = None
        total = student[0].new_zeros(())
        for k in reversed(range(len(student))):
            out, fused = self.abfs[k](_as_map(student[k]).to(dtype), fused, self.out_sizes[k])
            t = _as_map(teacher[k])
            if out.shape != t.shape:
                raise stage_error(self, k, tuple(out.shape[1:]), tuple(t.shape[1:]),
                                  "(fused student, teacher) differ: bound for other shapes")
            total = total + hcl(out.to(t.dtype), t)
        return total

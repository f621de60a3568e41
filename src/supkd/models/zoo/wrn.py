"""Wide ResNets of the KD benchmark: ``wrn_16_1``, ``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2``.

Zagoruyko & Komodakis (2016), "Wide Residual Networks": WRN-d-k has a 16-channel 3x3 stem
and three groups of n = (d - 4) / 6 pre-activation blocks (BN-ReLU-conv-BN-ReLU-conv) at
16k, 32k, 64k channels, strides 1, 2, 2, then BN-ReLU, global average pool and a Linear.
As in RepDistiller's ``models/wrn.py``: a 1x1 conv shortcut (``convShortcut``) on the
activated input where the width changes, no dropout, no conv biases.

Stages: ``stem`` (the stem conv), ``layer1..layer3`` (the groups ``block1..block3``). A
pre-activation network's stage output has no ReLU of its own; its pre-activation is the
BatchNorm the next ReLU reads (mdistiller's ``preact_feats`` for WRN: ``block2``'s first
``bn1`` of layer1's output, ``block3``'s of layer2's, the final ``bn1`` of layer3's; the stem
likewise ``block1``'s first ``bn1``). ``bn_before_relu`` names those BatchNorms.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from supkd.models.zoo.base import (
    StageItem,
    ZooEncoder,
    batch_norm_like,
    global_pool,
    register_zoo,
)

#: name -> (depth, widen factor)
ARCHS: dict[str, tuple[int, int]] = {
    "wrn_16_1": (16, 1), "wrn_16_2": (16, 2), "wrn_40_1": (40, 1), "wrn_40_2": (40, 2),
}


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the input (or a 1x1 conv of the activated
    input when the width changes): (B, C_in, H, W) -> (B, C, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.same = c_in == c_out
        self.convShortcut: nn.Module | None = (
            None if self.same else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return (x if self.convShortcut is None else self.convShortcut(a)) + y


class Group(nn.Module):
    """n blocks in ``layer`` (the published ``NetworkBlock``, whose key is ``blockK.layer``)."""

    def __init__(self, n: int, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[
            PreActBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
            for i in range(n)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNetEncoder(ZooEncoder):
    def __init__(self, depth: int, k: int, in_channels: int,
                 input_affine: Mapping[str, Sequence[float]] | None) -> None:
        super().__init__(in_channels, input_affine)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        ch = (16, 16 * k, 32 * k, 64 * k)
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, 1, 1, bias=False)
        self.block1 = Group(n, ch[0], ch[1], 1)
        self.block2 = Group(n, ch[1], ch[2], 2)
        self.block3 = Group(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.out_dim = ch[3]
        self.stage_names = ("stem", "layer1", "layer2", "layer3")
        # The WRN code's initialization: conv weights N(0, 2 / (k*k*C_out)), BN 1/0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def walk(self, x: torch.Tensor, preact: bool) -> Iterator[StageItem]:
        bns = self.stage_bns()
        x = self.conv1(x)
        yield "stem", x, batch_norm_like(bns["stem"], x) if preact else None
        for name, group in zip(self.stage_names[1:], (self.block1, self.block2, self.block3)):
            x = group(x)
            yield name, x, batch_norm_like(bns[name], x) if preact else None

    def embed(self, last: torch.Tensor) -> torch.Tensor:
        return global_pool(F.relu(self.bn1(last)))

    def stage_bns(self) -> dict[str, nn.BatchNorm2d]:
        return {
            "stem": self.block1.layer[0].bn1,
            "layer1": self.block2.layer[0].bn1,
            "layer2": self.block3.layer[0].bn1,
            "layer3": self.bn1,
        }


def _zero_bias(linear: nn.Linear) -> None:
    nn.init.zeros_(linear.bias)  # the WRN code zeroes the classifier's bias


build_wrn = register_zoo({n: partial(WideResNetEncoder, d, k) for n, (d, k) in ARCHS.items()},
                         family="wide ResNet", classifier_init=_zero_bias,
                         doc="``wrn_16_1``, ``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2`` (see the "
                             "module docstring).")

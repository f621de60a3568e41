"""``MobileNetV2``: the half-width MobileNetV2 of the KD benchmark (mdistiller's ``mobile_half``).

Sandler et al. (2018), "MobileNetV2: Inverted Residuals and Linear Bottlenecks", Table 2,
as RepDistiller's ``models/mobilenetv2.py`` sizes it for CIFAR: expansion 6, width x0.5
(8, 12, 16, 32, 48, 80, 160 channels), a 16-channel stride-2 3x3 stem, strides 1, 1, 2, 2,
1, 2, 1 for the seven groups, every block with its 1x1 expansion conv (also at t = 1), a
1x1 conv to 1280 channels, global average pool and one Linear.

Stages (mdistiller's ``feats``): ``stem`` (conv1), ``layer1`` (groups 0-1), ``layer2``
(group 2), ``layer3`` (groups 3-4), ``layer4`` (groups 5-6). A linear bottleneck ends
without a ReLU, so a layer's pre-activation is its output; the stem's is its BatchNorm's
output. ``bn_before_relu``: the stem's BatchNorm and, per layer, its last block's last
BatchNorm (mdistiller's ``get_bn_before_relu``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from supkd.models.zoo.base import StageItem, ZooEncoder, global_pool, register_zoo

#: (expansion t, channels c, blocks n, stride s) per group, Sandler et al. (2018), Table 2.
GROUPS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
          (6, 160, 3, 2), (6, 320, 1, 1))
WIDTH = 0.5
LAST = 1280
#: stage name -> the groups it spans
STAGE_GROUPS = {"layer1": (0, 1), "layer2": (2,), "layer3": (3, 4), "layer4": (5, 6)}


def conv_bn_relu(c_in: int, c_out: int, k: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, k // 2, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise (stride s) -> 1x1 linear projection, plus the input when
    the shape is kept: (B, C_in, H, W) -> (B, C_out, H/s, W/s)."""

    def __init__(self, c_in: int, c_out: int, stride: int, t: int) -> None:
        super().__init__()
        mid = c_in * t
        self.residual = stride == 1 and c_in == c_out
        self.conv = nn.Sequential(
            nn.Conv2d(c_in, mid, 1, 1, 0, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, c_out, 1, 1, 0, bias=False), nn.BatchNorm2d(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2Encoder(ZooEncoder):
    def __init__(self, in_channels: int,
                 input_affine: Mapping[str, Sequence[float]] | None) -> None:
        super().__init__(in_channels, input_affine)
        c = int(32 * WIDTH)
        self.conv1 = conv_bn_relu(in_channels, c, 3, 2)
        self.blocks = nn.ModuleList()
        for t, width, n, s in GROUPS:
            out = int(width * WIDTH)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
            self.blocks.append(nn.Sequential(*layers))
        self.conv2 = conv_bn_relu(c, LAST, 1, 1)
        self.out_dim = LAST
        self.stage_names = ("stem", *STAGE_GROUPS)
        for m in self.modules():  # RepDistiller's MobileNetV2 initialization
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def walk(self, x: torch.Tensor, preact: bool) -> Iterator[StageItem]:
        pre = self.conv1[1](self.conv1[0](x))
        x = F.relu(pre)
        yield "stem", x, pre
        for name, groups in STAGE_GROUPS.items():
            for g in groups:
                x = self.blocks[g](x)
            yield name, x, x

    def embed(self, last: torch.Tensor) -> torch.Tensor:
        return global_pool(self.conv2(last))

    def stage_bns(self) -> dict[str, nn.BatchNorm2d]:
        bns = {"stem": self.conv1[1]}
        bns.update({name: self.blocks[g[-1]][-1].conv[-1] for name, g in STAGE_GROUPS.items()})
        return bns


def _small_normal(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, 0.0, 0.01)
    nn.init.zeros_(linear.bias)


build_mobilenetv2 = register_zoo({"MobileNetV2": MobileNetV2Encoder}, family="MobileNetV2",
                                 classifier_init=_small_normal,
                                 doc="mdistiller's ``mobile_half`` (see the module docstring).")

"""``ShuffleV1``: ShuffleNet (g = 3) for CIFAR, as in the KD benchmark.

Zhang et al. (2018), "ShuffleNet: An Extremely Efficient Convolutional Neural Network for
Mobile Devices", Sec. 3.2-3.3 (Table 1, g = 3: 240, 480, 960 channels, 4, 8, 4 units), as
RepDistiller's ``models/ShuffleNetv1.py`` sizes it for 32x32: a 1x1 stem to 24 channels (no
max-pool), the first unit of each stage strided with a 3x3 average-pool shortcut whose
output is concatenated, grouped 1x1 convs (the first one ungrouped when its input has 24
channels) with a channel shuffle between them, global average pool, one Linear.

Stages: ``stem``, ``layer1..layer3``; pre-activation: the stem's BatchNorm output and each
stage's last unit's sum before the ReLU (mdistiller's ``preact_feats``). There is no single
BatchNorm before a stage's ReLU (the residual sum is), so ``bn_before_relu`` raises
ValueError, as mdistiller's ``get_bn_before_relu`` does for this network.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from supkd.models.zoo.base import StageItem, ZooEncoder, global_pool, register_zoo

OUT_PLANES = (240, 480, 960)
UNITS = (4, 8, 4)
GROUPS = 3
STEM = 24


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """(B, g*c, H, W) -> (B, c*g, H, W): channel j of group i goes to position j*g + i
    (Zhang et al. 2018, Fig. 1c)."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """Grouped 1x1 -> shuffle -> 3x3 depthwise (stride s) -> grouped 1x1, plus the input
    (stride 1) or concatenated with its 3x3 average pool (stride 2): returns (out, pre)."""

    def __init__(self, c_in: int, c_out: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = c_out // 4
        self.stride = stride
        self.g1 = 1 if c_in == STEM else groups
        self.conv1 = nn.Conv2d(c_in, mid, 1, groups=self.g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, c_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = channel_shuffle(F.relu(self.bn1(self.conv1(x))), self.g1)
        y = self.bn3(self.conv3(F.relu(self.bn2(self.conv2(y)))))
        if self.stride == 2:
            pre = torch.cat([y, F.avg_pool2d(x, 3, 2, 1)], 1)
        else:
            pre = y + x
        return F.relu(pre), pre


class ShuffleV1Encoder(ZooEncoder):
    def __init__(self, in_channels: int,
                 input_affine: Mapping[str, Sequence[float]] | None) -> None:
        super().__init__(in_channels, input_affine)
        self.conv1 = nn.Conv2d(in_channels, STEM, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM)
        c = STEM
        for i, (planes, n) in enumerate(zip(OUT_PLANES, UNITS), start=1):
            # The strided first unit concatenates its c input channels: it adds planes - c.
            units = [ShuffleUnit(c, planes - c, 2, GROUPS)]
            units += [ShuffleUnit(planes, planes, 1, GROUPS) for _ in range(1, n)]
            self.add_module(f"layer{i}", nn.Sequential(*units))
            c = planes
        self.out_dim = c
        self.stage_names = ("stem", "layer1", "layer2", "layer3")

    def walk(self, x: torch.Tensor, preact: bool) -> Iterator[StageItem]:
        pre = self.bn1(self.conv1(x))
        x = F.relu(pre)
        yield "stem", x, pre
        for name in self.stage_names[1:]:
            for unit in getattr(self, name):
                x, pre = unit(x)
            yield name, x, pre

    def embed(self, last: torch.Tensor) -> torch.Tensor:
        return global_pool(last)

    def stage_bns(self) -> dict[str, nn.BatchNorm2d]:
        raise ValueError("model 'ShuffleV1': no BatchNorm before its stages' ReLUs (a residual "
                         "sum or concatenation is), so no bn_before_relu")


build_shufflev1 = register_zoo({"ShuffleV1": ShuffleV1Encoder}, family="ShuffleNet",
                               doc="ShuffleNet g = 3 for CIFAR (see the module docstring).")

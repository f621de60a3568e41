"""``ShuffleV2``: ShuffleNet V2 1x for CIFAR, as in the KD benchmark.

Ma et al. (2018), "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture
Design", Fig. 3c-d and Table 5 (1x: 116, 232, 464 channels, then a 1x1 conv to 1024), as
RepDistiller's ``models/ShuffleNetv2.py`` sizes it for 32x32: a 1x1 stem to 24 channels (no
max-pool), each stage a downsampling unit (two strided branches, concatenated and
shuffled) then 3, 7, 3 basic units (channel split in halves, one half through 1x1 -> 3x3
depthwise -> 1x1, concatenated back and shuffled), global average pool, one Linear.

Stages: ``stem``, ``layer1..layer3``. Pre-activation of a stage, as mdistiller's
``preact_feats``: its last unit's ``cat([kept half, branch before its ReLU])``, taken before
the channel shuffle (so its channels are in the unshuffled order); the stem's BatchNorm
output. ``bn_before_relu`` raises ValueError, as mdistiller's does for this network.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from supkd.models.zoo.base import StageItem, ZooEncoder, global_pool, register_zoo
from supkd.models.zoo.shufflenetv1 import channel_shuffle

CHANNELS = (116, 232, 464)
UNITS = (3, 7, 3)
LAST = 1024
STEM = 24


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1
             ) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)
    return conv, nn.BatchNorm2d(c_out)


class DownUnit(nn.Module):
    """Left: 3x3 depthwise s2 -> 1x1; right: 1x1 -> 3x3 depthwise s2 -> 1x1; concatenated
    and shuffled: (B, C_in, H, W) -> (B, C_out, H/2, W/2)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        mid = c_out // 2
        self.conv1, self.bn1 = _conv_bn(c_in, c_in, 3, 2, c_in)
        self.conv2, self.bn2 = _conv_bn(c_in, mid, 1)
        self.conv3, self.bn3 = _conv_bn(c_in, mid, 1)
        self.conv4, self.bn4 = _conv_bn(mid, mid, 3, 2, mid)
        self.conv5, self.bn5 = _conv_bn(mid, mid, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class SplitUnit(nn.Module):
    """Channel split; the second half through 1x1 -> 3x3 depthwise -> 1x1; concatenated
    with the first and shuffled: returns (out, pre) of (B, C, H, W)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        half = c // 2
        self.conv1, self.bn1 = _conv_bn(half, half, 1)
        self.conv2, self.bn2 = _conv_bn(half, half, 3, 1, half)
        self.conv3, self.bn3 = _conv_bn(half, half, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c = x.shape[1] // 2
        kept, x2 = x[:, :c], x[:, c:]
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))
        y = self.bn3(self.conv3(y))
        out = channel_shuffle(torch.cat([kept, F.relu(y)], 1), 2)
        return out, torch.cat([kept, y], 1)


class ShuffleV2Encoder(ZooEncoder):
    def __init__(self, in_channels: int,
                 input_affine: Mapping[str, Sequence[float]] | None) -> None:
        super().__init__(in_channels, input_affine)
        self.conv1 = nn.Conv2d(in_channels, STEM, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM)
        c = STEM
        for i, (width, n) in enumerate(zip(CHANNELS, UNITS), start=1):
            units: list[nn.Module] = [DownUnit(c, width)]
            units += [SplitUnit(width) for _ in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*units))
            c = width
        self.conv2, self.bn2 = _conv_bn(c, LAST, 1)
        self.out_dim = LAST
        self.stage_names = ("stem", "layer1", "layer2", "layer3")

    def walk(self, x: torch.Tensor, preact: bool) -> Iterator[StageItem]:
        pre = self.bn1(self.conv1(x))
        x = F.relu(pre)
        yield "stem", x, pre
        for name in self.stage_names[1:]:
            layer = getattr(self, name)
            x = layer[0](x)
            for unit in layer[1:]:
                x, pre = unit(x)
            yield name, x, pre

    def embed(self, last: torch.Tensor) -> torch.Tensor:
        return global_pool(F.relu(self.bn2(self.conv2(last))))

    def stage_bns(self) -> dict[str, nn.BatchNorm2d]:
        raise ValueError("model 'ShuffleV2': no single BatchNorm before its stages' outputs "
                         "(a concatenation is), so no bn_before_relu")


build_shufflev2 = register_zoo({"ShuffleV2": ShuffleV2Encoder}, family="ShuffleNet V2",
                               doc="ShuffleNet V2 1x for CIFAR (see the module docstring).")

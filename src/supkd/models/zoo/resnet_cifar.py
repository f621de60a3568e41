"""The CIFAR ResNets of the KD benchmark: ``resnet8 .. resnet110``, ``resnet8x4``, ``resnet32x4``.

He et al. (2016), "Deep Residual Learning for Image Recognition", Sec. 4.2: a 3x3 stem and
three stages of n BasicBlocks each (depth = 6n + 2) at 16, 32, 64 channels, strides 1, 2,
2; the ``x4`` variants (CRD, Tian et al. 2020) have a 32-channel stem and 64, 128, 256
channels. As in RepDistiller's ``models/resnet.py`` (and mdistiller's copy): projection
shortcuts (1x1 conv + BN, ``downsample``) wherever the shape changes, no bias in convs.

Stages: ``stem`` (ReLU(BN(conv))), ``layer1..layer3``. Pre-activation of a stage: its last
block's ``bn2(conv2(.)) + shortcut`` before the ReLU (mdistiller's ``preact_feats``); the
stem's: ``bn1(conv1(x))``. ``bn_before_relu``: ``bn1`` for the stem, the last block's ``bn2``
for each layer (mdistiller's ``get_bn_before_relu``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from supkd.models.zoo.base import StageItem, ZooEncoder, global_pool, register_zoo

#: name -> (depth, (stem, layer1, layer2, layer3) channels)
ARCHS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    **{f"resnet{d}": (d, (16, 16, 32, 64)) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN with a residual: x (B, C_in, H, W) -> (out, pre) of (B, C, H/s, W/s),
    ``out = relu(pre)``."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        pre = y + (x if self.downsample is None else self.downsample(x))
        return F.relu(pre), pre


class CifarResNetEncoder(ZooEncoder):
    def __init__(self, depth: int, channels: tuple[int, int, int, int], in_channels: int,
                 input_affine: Mapping[str, Sequence[float]] | None) -> None:
        super().__init__(in_channels, input_affine)
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        c = channels[0]
        for i, (width, stride) in enumerate(zip(channels[1:], (1, 2, 2)), start=1):
            blocks = [BasicBlock(c if j == 0 else width, width, stride if j == 0 else 1)
                      for j in range(n)]
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
            c = width
        self.out_dim = channels[3]
        self.stage_names = ("stem", "layer1", "layer2", "layer3")
        # RepDistiller's initialization (He et al. 2015 fan-out for convs, BN 1/0).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def walk(self, x: torch.Tensor, preact: bool) -> Iterator[StageItem]:
        pre = self.bn1(self.conv1(x))
        x = F.relu(pre)
        yield "stem", x, pre
        for name in self.stage_names[1:]:
            for block in getattr(self, name):
                x, pre = block(x)
            yield name, x, pre

    def embed(self, last: torch.Tensor) -> torch.Tensor:
        return global_pool(last)

    def stage_bns(self) -> dict[str, nn.BatchNorm2d]:
        bns = {"stem": self.bn1}
        bns.update({name: getattr(self, name)[-1].bn2 for name in self.stage_names[1:]})
        return bns


build_cifar_resnet = register_zoo(
    {n: partial(CifarResNetEncoder, d, c) for n, (d, c) in ARCHS.items()},
    family="CIFAR ResNet",
    doc="``resnet8 .. resnet110``, ``resnet8x4``, ``resnet32x4`` (see the module docstring).")

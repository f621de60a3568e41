"""``MobileNetV1``: the ImageNet student of the KD benchmark (ResNet-50 -> MobileNetV1).

Howard et al. (2017), "MobileNets: Efficient Convolutional Neural Networks for Mobile
Vision Applications", Table 1 (width 1.0): a stride-2 3x3 conv to 32 channels, thirteen
depthwise-separable blocks (3x3 depthwise conv-BN-ReLU, 1x1 conv-BN-ReLU) up to 1024
channels, global average pool and one Linear; as mdistiller's
``models/imagenet/mobilenetv1.py`` lays it out (one ``model`` Sequential, ``fc``),
4,231,976 parameters at 1,000 classes.

Stages: ``stem`` (the first conv), ``layer1..layer4`` ending where mdistiller reads its four
features (blocks 1-3, 4-5, 6-11, 12-13). Pre-activation: each stage's last BatchNorm output
(mdistiller's ``preact_feats``); ``bn_before_relu`` names those BatchNorms.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from supkd.models.zoo.base import StageItem, ZooEncoder, global_pool, register_zoo

#: (output channels, stride) of the 13 depthwise-separable blocks, Howard et al. Table 1.
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
          (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
#: stage name -> indices into ``model`` (0 is the stem conv)
STAGES = {"stem": (0,), "layer1": (1, 2, 3), "layer2": (4, 5), "layer3": tuple(range(6, 12)),
          "layer4": (12, 13)}


def _conv_bn_relu(c_in: int, c_out: int, k: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class MobileNetV1Encoder(ZooEncoder):
    def __init__(self, in_channels: int,
                 input_affine: Mapping[str, Sequence[float]] | None) -> None:
        super().__init__(in_channels, input_affine)
        layers = [nn.Sequential(*_conv_bn_relu(in_channels, 32, 3, 2))]
        c = 32
        for out, stride in BLOCKS:
            layers.append(nn.Sequential(*_conv_bn_relu(c, c, 3, stride, groups=c),
                                        *_conv_bn_relu(c, out, 1, 1)))
            c = out
        self.model = nn.Sequential(*layers)
        self.out_dim = c
        self.stage_names = tuple(STAGES)

    def walk(self, x: torch.Tensor, preact: bool) -> Iterator[StageItem]:
        for name, idx in STAGES.items():
            for i in idx[:-1]:
                x = self.model[i](x)
            last = self.model[idx[-1]]
            pre = last[:-1](x)
            x = F.relu(pre)  # not the inplace ReLU module: pre is kept
            yield name, x, pre

    def embed(self, last: torch.Tensor) -> torch.Tensor:
        return global_pool(last)

    def stage_bns(self) -> dict[str, nn.BatchNorm2d]:
        return {name: self.model[idx[-1]][-2] for name, idx in STAGES.items()}


build_mobilenetv1 = register_zoo({"MobileNetV1": MobileNetV1Encoder}, family="MobileNetV1",
                                 num_classes=1000,
                                 doc="MobileNetV1 for ImageNet (see the module docstring).")

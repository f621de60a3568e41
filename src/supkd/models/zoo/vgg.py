"""VGG with BatchNorm for CIFAR: ``vgg8``, ``vgg11``, ``vgg13``, ``vgg16``, ``vgg19``.

Simonyan & Zisserman (2015), "Very Deep Convolutional Networks for Large-Scale Image
Recognition", configurations A (11), B (13), D (16), E (19), with BatchNorm after every
conv (Ioffe & Szegedy 2015), and CRD's (Tian et al. 2020) 8-layer configuration S, as
RepDistiller's ``models/vgg.py`` (``vgg*_bn``) builds them for 32x32 inputs: five blocks of
3x3 conv-BN-ReLU (conv biases kept), 2x2 max-pools after the first three, none before the
last block unless the input is 64 pixels high (their Tiny-ImageNet variant), global average
pool, one Linear 512 -> classes.

Stages: ``stem`` (block0), ``layer1..layer4`` (block1..block4), each ReLU(block(.)). The
block's last layer is its BatchNorm, so a stage's pre-activation is that BatchNorm's output
(mdistiller's ``preact_feats``) and ``bn_before_relu`` is each block's last module.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from supkd.models.zoo.base import StageItem, ZooEncoder, global_pool, register_zoo

#: name -> conv widths of block0..block4
ARCHS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3),
    "vgg19": ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4),
}


def conv_block(c_in: int, widths: Sequence[int]) -> nn.Sequential:
    """conv-BN-ReLU per width, the last ReLU left out (the stage applies it): layer indices
    0, 1, (2 = ReLU), 3, 4, ... as the published ``blockK`` keys."""
    mods: list[nn.Module] = []
    for w in widths:
        mods += [nn.Conv2d(c_in, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        c_in = w
    return nn.Sequential(*mods[:-1])


class VGGEncoder(ZooEncoder):
    def __init__(self, cfg: tuple[tuple[int, ...], ...], in_channels: int,
                 input_affine: Mapping[str, Sequence[float]] | None) -> None:
        super().__init__(in_channels, input_affine)
        c = in_channels
        for i, widths in enumerate(cfg):
            self.add_module(f"block{i}", conv_block(c, widths))
            c = widths[-1]
        self.out_dim = c
        self.stage_names = ("stem", "layer1", "layer2", "layer3", "layer4")
        for m in self.modules():  # RepDistiller's VGG initialization
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def walk(self, x: torch.Tensor, preact: bool) -> Iterator[StageItem]:
        pool_before_last = x.shape[2] == 64
        for i, name in enumerate(self.stage_names):
            if 1 <= i <= 3 or (i == 4 and pool_before_last):
                x = F.max_pool2d(x, 2, 2)
            pre = getattr(self, f"block{i}")(x)
            x = F.relu(pre)
            yield name, x, pre

    def embed(self, last: torch.Tensor) -> torch.Tensor:
        return global_pool(last)

    def stage_bns(self) -> dict[str, nn.BatchNorm2d]:
        return {name: getattr(self, f"block{i}")[-1] for i, name in enumerate(self.stage_names)}


def _small_normal(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, 0.0, 0.01)  # RepDistiller's VGG classifier init
    nn.init.zeros_(linear.bias)


build_vgg = register_zoo({n: partial(VGGEncoder, cfg) for n, cfg in ARCHS.items()},
                         family="VGG", classifier_init=_small_normal,
                         doc="``vgg8|11|13|16|19`` with BatchNorm (see the module docstring).")

"""A stand-in for the public SupContrast code's networks (Khosla et al., 2020,
github.com/HobbitLong/SupContrast, ``networks/resnet_big.py``), written for the tests from
that file's architecture (not copied) so that nothing is downloaded.

What every checkpoint that code saves looks like, and so what the modules here produce:

- the encoder (``ResNet``: resnet18/34 with BasicBlock, resnet50/101 with Bottleneck, widths
  64-128-256-512, embedding 512 or 2048): ``encoder.conv1`` (3x3, stride 1: CIFAR stem, no
  max-pool), ``encoder.bn1``, ``encoder.layerL.B.{conv1,bn1,conv2,bn2[,conv3,bn3]}``,
  projection shortcuts as ``encoder.layerL.B.shortcut.{0,1}``;
- ``SupConResNet(name, head='mlp')``: head ``head.0`` (Linear d->d), ReLU, ``head.2``
  (Linear d->feat_dim); ``head='linear'``: ``head.weight``/``head.bias`` (Linear
  d->feat_dim); the output is L2-normalized;
- ``SupCEResNet(name, num_classes)``: the CE baseline, ``encoder.*`` + ``fc.*``;
- ``LinearClassifier(name, num_classes)``: ``fc`` on the frozen encoder, saved alone.

The forward pass is the standard post-activation ResNet, so outputs are comparable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _Bottle(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int) -> None:
        super().__init__()
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        # stride on the 3x3 conv (ResNet v1.5), as in the public code and torchvision
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


_ARCHS = {
    "resnet18": (_Basic, [2, 2, 2, 2]),
    "resnet34": (_Basic, [3, 4, 6, 3]),
    "resnet50": (_Bottle, [3, 4, 6, 3]),
    "resnet101": (_Bottle, [3, 4, 23, 3]),
}
#: embedding width of each encoder (the code's ``model_dict``)
DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}


class Encoder(nn.Module):
    def __init__(self, arch: str, in_channels: int = 3) -> None:
        super().__init__()
        block, counts = _ARCHS[arch]
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        cin = 64
        for i, (planes, n) in enumerate(zip([64, 128, 256, 512], counts)):
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, (1 if i == 0 else 2) if j == 0 else 1))
                cin = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        for i in range(1, 5):
            out = getattr(self, f"layer{i}")(out)
        return torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)


class SupConResNet(nn.Module):
    """encoder + projection head (``head='mlp'`` or ``'linear'``); ``forward`` returns the
    L2-normalized projection."""

    def __init__(self, name: str = "resnet50", head: str = "mlp", feat_dim: int = 128) -> None:
        super().__init__()
        self.encoder = Encoder(name)
        d = self.encoder.dim
        if head == "linear":
            self.head: nn.Module = nn.Linear(d, feat_dim)
        elif head == "mlp":
            self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True),
                                      nn.Linear(d, feat_dim))
        else:
            raise ValueError(f"head {head!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(x)), dim=1)


def SupConNet(arch: str = "resnet50", feat_dim: int = 128) -> SupConResNet:  # noqa: N802
    """The default (MLP head) SupConResNet, as older tests name it."""
    return SupConResNet(arch, "mlp", feat_dim)


class LinearClassifierNet(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)


class LinearClassifier(LinearClassifierNet):
    """``LinearClassifier(name, num_classes)``: the width comes from the encoder's name."""

    def __init__(self, name: str = "resnet50", num_classes: int = 10) -> None:
        super().__init__(DIMS[name], num_classes)


class SupCENet(nn.Module):
    """The public code's CE baseline: encoder + ``fc`` in one state dict."""

    def __init__(self, arch: str = "resnet50", num_classes: int = 10) -> None:
        super().__init__()
        self.encoder = Encoder(arch)
        self.fc = nn.Linear(self.encoder.dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.encoder(x))


def randomize_bn(module: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine weights, so a mapping that
    swaps or drops BN buffers changes the outputs (fresh BN would hide such a bug)."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(n, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


SupCEResNet = SupCENet  # the public code's name

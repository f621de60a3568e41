"""A stand-in for the public SupContrast code's networks (Khosla et al., 2020), written for
the tests from its published parameter layout so that nothing is downloaded.

Only the *state-dict key names and shapes* must match the public checkpoints:
``encoder.conv1`` (3x3, stride 1: CIFAR stem, no max-pool), ``encoder.bn1``,
``encoder.layerL.B.{conv1,bn1,conv2,bn2[,conv3,bn3]}``, projection shortcuts as
``encoder.layerL.B.shortcut.{0,1}``, an MLP head ``head.0`` (Linear d->d), ReLU,
``head.2`` (Linear d->feat_dim), and a separately saved linear classifier ``fc``.
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
}


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


class SupConNet(nn.Module):
    """encoder + MLP projection head; ``forward`` returns the L2-normalized projection."""

    def __init__(self, arch: str = "resnet50", feat_dim: int = 128) -> None:
        super().__init__()
        self.encoder = Encoder(arch)
        d = self.encoder.dim
        self.head = nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, feat_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.encoder(x)), dim=1)


class LinearClassifierNet(nn.Module):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.fc(feats)


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

"""ResNet-18/34/50 with CIFAR or ImageNet stems, exposing embedding, projection and logits.

Built from torchvision's residual blocks (``BasicBlock``, ``Bottleneck``) so that the weights
are the same modules torchvision uses (He et al., 2016, "Deep Residual Learning for Image
Recognition"). Stems:

- ``imagenet``: torchvision's 7x7 conv, stride 2, + 3x3 max-pool, stride 2.
- ``cifar``: 3x3 conv, stride 1, no max-pool (the variant used by the SupCon and KD code on
  32x32 images, and by the paper's CIFAR-10 students).

``width`` is the number of channels of the first stage (64 in the paper's networks); stage i
has ``width * 2**i`` channels (times 4 for the Bottleneck's expansion), so ``width=8`` gives a
ResNet-18 with ~1/64 of the parameters for CPU demos.

``input_affine`` (optional) maps supkd-normalized images onto the normalization an imported
teacher was trained with (:class:`InputAffine`); a network trained by supkd has none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from supkd.models.base import EncoderModel
from supkd.models.heads import HEAD_KINDS, ProjectionHead, make_classifier
from supkd.models.input_affine import (  # re-exported: they lived here before timm models
    InputAffine,
    check_input_affine,
)
from supkd.models.registry import register_model

#: name -> (block type, blocks per stage), He et al. (2016), Table 1.
ARCHS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}
STEMS = ("cifar", "imagenet")
STAGES = ("stem", "layer1", "layer2", "layer3", "layer4")


def block_preact(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision ``BasicBlock`` / ``Bottleneck`` on x, without its final ReLU: the same
    modules in the same order as the block's own ``forward``, so ``relu`` of the result is
    that forward's output bit for bit."""
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    if isinstance(block, Bottleneck):
        out = block.relu(block.bn2(block.conv2(out)))
        out = block.bn3(block.conv3(out))
    else:
        out = block.bn2(block.conv2(out))
    return out + identity


class ResNetEncoder(nn.Module):
    """Image (B, in_channels, H, W) -> embedding (B, F) with F = 8 * width * expansion.

    Submodule names follow torchvision's ``ResNet`` (``conv1, bn1, layer1..layer4``), so a
    torchvision state dict maps onto ``encoder.<name>`` one to one. ``input_affine``
    (:class:`InputAffine`, or None) is applied first, in ``forward`` and ``stages``: every
    caller of the encoder (the model's ``forward`` and ``forward_intermediates``, the linear
    stage's ``encoder(x)``, CKA, the teacher cache) then feeds the weights the inputs they
    were trained on.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        stem: str = "cifar",
        width: int = 64,
        in_channels: int = 3,
        input_affine: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise ValueError(f"stem must be one of {list(STEMS)}, got {stem!r}")
        if width <= 0:
            raise ValueError(f"width must be a positive number of channels, got {width}")
        if in_channels <= 0:
            raise ValueError(f"in_channels must be > 0, got {in_channels}")
        affine = check_input_affine(input_affine, in_channels)
        # None keeps the module tree (and so any hooks or names users rely on) unchanged.
        self.input_affine: InputAffine | None = (
            InputAffine(affine["scale"], affine["shift"]) if affine is not None else None
        )
        self.inplanes = width
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        else:
            self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(block, width, layers[0], stride=1)
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_dim = width * 8 * block.expansion
        # torchvision's initialization (torchvision/models/resnet.py, ResNet.__init__).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(
        self, block: type[BasicBlock] | type[Bottleneck], planes: int, blocks: int, stride: int
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        # Bottleneck's inner width is planes * base_width / 64; base_width=64 keeps it `planes`
        # for every `width`, as in the paper's networks.
        mods: list[nn.Module] = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def stages(self, x: torch.Tensor, *, preact: bool = False) -> dict[str, torch.Tensor]:
        """Named stage outputs ``stem, layer1..layer4``, each (B, C, H, W).

        ``preact``: each entry is the stage's output before its final ReLU (the stem's
        BatchNorm output, max-pooled for the ImageNet stem: max-pool and ReLU commute, so
        ReLU of it is the stem's output exactly; a residual stage's last block's sum of
        branch and shortcut); the next stage reads the ReLU of it, as without ``preact``.
        """
        out: dict[str, torch.Tensor] = {}
        if self.input_affine is not None:
            x = self.input_affine(x)
        if not preact:
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            out["stem"] = x
            for name in STAGES[1:]:
                x = getattr(self, name)(x)
                out[name] = x
            return out
        pre = self.maxpool(self.bn1(self.conv1(x)))
        out["stem"] = pre
        x = F.relu(pre)
        for name in STAGES[1:]:
            blocks = list(getattr(self, name))
            for block in blocks[:-1]:
                x = block(x)
            pre = block_preact(blocks[-1], x)
            out[name] = pre
            x = F.relu(pre)
        return out

    def bn_before_relu(self) -> dict[str, nn.BatchNorm2d]:
        """For each stage, the BatchNorm whose output is (the branch of) that stage's
        pre-activation output: ``bn1`` for the stem, the last block's last BatchNorm
        (``bn2`` of a BasicBlock, ``bn3`` of a Bottleneck) for ``layer1..layer4``."""
        out: dict[str, nn.BatchNorm2d] = {"stem": self.bn1}
        for name in STAGES[1:]:
            last = getattr(self, name)[-1]
            out[name] = last.bn3 if isinstance(last, Bottleneck) else last.bn2
        return out

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """Global average pool: (B, C, H, W) -> (B, C)."""
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_affine is not None:
            x = self.input_affine(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.pool(x)


class SupKDResNet(EncoderModel):
    """Encoder + optional projection head + linear classifier.

    ``forward(x)``: x (B, in_channels, H, W) -> ``ModelOutput(logits (B, C), embedding (B, F),
    projection (B, P) | None)``; the classifier reads the embedding (not the projection), as
    in SupCon's linear evaluation and in a plain CE network. x is normalized with supkd's
    statistics of the data set; an imported teacher trained with other statistics carries an
    ``input_affine`` (``spec["input_affine"]``, applied inside ``encoder``) that converts them.
    """

    encoder: ResNetEncoder

    def forward_intermediates(
        self, x: torch.Tensor, *, preact: bool = False
    ) -> dict[str, torch.Tensor]:
        """Ordered dict ``stem, layer1, layer2, layer3, layer4`` (B, C, H, W), ``embedding``
        (B, F), ``logits`` (B, C): the stages compared by layer-wise CKA (paper Fig. 2).
        ``preact``: the conv stages before their final ReLU (:meth:`ResNetEncoder.stages`);
        ``embedding`` and ``logits`` are the same either way."""
        out = self.encoder.stages(x, preact=preact)
        last = F.relu(out["layer4"]) if preact else out["layer4"]
        out["embedding"] = self.encoder.pool(last)
        out["logits"] = self.classifier(out["embedding"])
        return out

    def bn_before_relu(self) -> dict[str, nn.BatchNorm2d]:
        """Per conv stage, the BatchNorm before its final ReLU (OFD's margins)."""
        return self.encoder.bn_before_relu()


@register_model("resnet50")
@register_model("resnet34")
@register_model("resnet18")
def build_resnet(
    name: str,
    stem: str = "cifar",
    num_classes: int = 10,
    projection_dim: int | None = None,
    width: int = 64,
    in_channels: int = 3,
    input_affine: Mapping[str, Sequence[float]] | None = None,
    projection_head: str = "mlp",
) -> SupKDResNet:
    """Build a ResNet (``resnet18|resnet34|resnet50``) with the given stem and heads.

    ``projection_dim``: add a SupCon projection head with this output size (None: no head).
    ``projection_head``: ``mlp`` (Linear-ReLU-Linear, the paper's) or ``linear`` (one
    Linear, SupContrast's ``head='linear'``); kept in ``spec`` only when not ``mlp``.
    ``width``: channels of the first stage (64 = the standard network).
    ``input_affine``: None, or ``{"scale": [C floats > 0], "shift": [C floats]}`` with
    ``C = in_channels``: the network computes ``x * scale + shift`` per channel (scale and
    shift as (1, C, 1, 1)) before its first convolution, to give a teacher trained with other
    input statistics the inputs it expects (see :class:`InputAffine` for the derivation). It
    is kept in ``spec`` (only when given, so specs without it are unchanged) and so
    survives ``save_model``/``load_model``; it adds no ``state_dict`` keys.
    Unknown names or bad values raise ValueError listing what is valid. Registered as
    each name of :data:`ARCHS`: ``create_model(name, ...)`` calls it.
    """
    if name not in ARCHS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(sorted(ARCHS))}")
    if stem not in STEMS:
        raise ValueError(f"unknown stem {stem!r}; valid stems: {', '.join(STEMS)}")
    if not isinstance(num_classes, int) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if projection_dim is not None and (not isinstance(projection_dim, int) or projection_dim <= 0):
        raise ValueError(f"projection_dim must be a positive int or None, got {projection_dim!r}")
    if not isinstance(width, int) or width <= 0:
        raise ValueError(f"width must be a positive int, got {width!r}")
    affine = check_input_affine(input_affine, in_channels)
    block, layers = ARCHS[name]
    encoder = ResNetEncoder(
        block, layers, stem=stem, width=width, in_channels=in_channels, input_affine=affine
    )
    if projection_head not in HEAD_KINDS:
        raise ValueError(f"projection_head must be one of {', '.join(HEAD_KINDS)}, "
                         f"got {projection_head!r}")
    head = (ProjectionHead(encoder.out_dim, projection_dim, kind=projection_head)
            if projection_dim else None)
    classifier = make_classifier(encoder.out_dim, num_classes)
    spec = {
        "name": name,
        "stem": stem,
        "num_classes": num_classes,
        "projection_dim": projection_dim,
        "width": width,
        "in_channels": in_channels,
    }
    if affine is not None:
        spec["input_affine"] = affine
    if projection_head != "mlp" and head is not None:
        spec["projection_head"] = projection_head
    return SupKDResNet(encoder, classifier, head, spec)

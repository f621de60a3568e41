"""``ResNet18`` and ``ResNet50`` of the KD benchmark: RepDistiller's ``models/resnetv2.py``.

Their CIFAR ResNet-18/50 are He et al.'s (2016) ImageNet ResNets with a 3x3 stride-1 stem
and no max-pool, the same network (and parameter count: 11,220,132 and 23,705,252 at 100
classes) as supkd's ``resnet18`` / ``resnet50`` with ``stem="cifar"``, ``width=64``. So these
names build that :class:`~supkd.models.SupKDResNet`, with the zoo's name in ``spec``
(``create_model(**net.spec)`` rebuilds it through this builder). Their checkpoints name the
projection shortcut ``shortcut`` (supkd: torchvision's ``downsample``) and the classifier
``linear``; :mod:`supkd.importers.repdistiller` renames them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from supkd.models.registry import register_model
from supkd.models.resnet import SupKDResNet, build_resnet

#: zoo name -> supkd's ResNet
ALIASES = {"ResNet18": "resnet18", "ResNet50": "resnet50"}


@register_model("ResNet50")
@register_model("ResNet18")
def build_resnet_alias(
    name: str,
    num_classes: int = 100,
    projection_dim: int | None = None,
    in_channels: int = 3,
    input_affine: Mapping[str, Sequence[float]] | None = None,
    projection_head: str = "mlp",
) -> SupKDResNet:
    """supkd's CIFAR-stem ``resnet18`` / ``resnet50`` under RepDistiller's name."""
    if name not in ALIASES:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(ALIASES)}")
    net = build_resnet(ALIASES[name], stem="cifar", num_classes=num_classes,
                       projection_dim=projection_dim, width=64, in_channels=in_channels,
                       input_affine=input_affine, projection_head=projection_head)
    spec = {k: v for k, v in net.spec.items() if k not in ("stem", "width")}
    spec["name"] = name
    net.spec = spec
    return net

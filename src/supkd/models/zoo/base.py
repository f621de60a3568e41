"""What every zoo model shares: the encoder protocol, the model class and one builder.

A zoo encoder (:class:`ZooEncoder`) walks its conv stages once and yields, per stage,
``(name, output, pre_activation)``; the model (:class:`ZooModel`) turns that into
``forward``'s embedding, ``forward_intermediates`` (stage outputs, or with ``preact=True``
the pre-activation outputs mdistiller's ``preact_feats`` hold) and ``bn_before_relu()``.

Parameter names inside each encoder are those of the published definitions
(HobbitLong/RepDistiller ``models/``, megvii-research/mdistiller ``mdistiller/models/``),
so that a checkpoint of theirs maps onto ``encoder.<their key>`` one to one; only their
final Linear becomes supkd's ``classifier``.

Pooling: the published networks pool with a fixed kernel sized for 32x32 inputs
(``AvgPool2d(8)`` for the ResNets, ``avg_pool2d(out, 4)`` for the ShuffleNets, ...), which is
the global mean at that size. The zoo pools with ``AdaptiveAvgPool2d(1)``: identical at
32x32 (224x224 for MobileNetV1), and it also runs on smaller images (the 8x8 digits).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from supkd.models.base import EncoderModel
from supkd.models.heads import HEAD_KINDS, ProjectionHead, make_classifier
from supkd.models.input_affine import InputAffine, check_input_affine
from supkd.models.registry import register_model

__all__ = ["ZooEncoder", "ZooModel", "batch_norm_like", "build_zoo_model", "register_zoo"]

#: (stage name, stage output (B, C, H, W), its pre-activation (B, C', H, W) or None)
StageItem = tuple[str, torch.Tensor, torch.Tensor | None]


def batch_norm_like(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(x)`` without touching ``bn``'s running statistics: batch statistics in training
    mode, running ones in eval mode, exactly what ``bn`` itself computes on ``x``.

    Why: a pre-activation read through a BatchNorm that the next block applies anyway
    (the wide ResNets') must not update that BatchNorm twice per step.
    """
    if bn.training or bn.running_mean is None:
        return F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                        training=False, eps=bn.eps)


class ZooEncoder(nn.Module, ABC):
    """Image (B, C_in, H, W) -> embedding (B, ``out_dim``).

    A subclass sets ``out_dim``, ``stage_names`` and implements :meth:`walk` (the conv
    stages; ``preact`` asks it to compute pre-activations a stage does not get for free),
    :meth:`embed` (last stage output -> pooled embedding) and :meth:`stage_bns` (the
    BatchNorm before each stage's last ReLU, or ValueError when the network has none).
    ``input_affine`` (see :class:`supkd.models.InputAffine`) is applied first.
    """

    out_dim: int
    stage_names: tuple[str, ...]
    arch: str = "zoo"

    def __init__(self, in_channels: int, input_affine: Mapping[str, Sequence[float]] | None):
        super().__init__()
        if not isinstance(in_channels, int) or in_channels <= 0:
            raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")
        affine = check_input_affine(input_affine, in_channels)
        self.input_affine: InputAffine | None = (
            InputAffine(affine["scale"], affine["shift"]) if affine is not None else None
        )

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return self.input_affine(x) if self.input_affine is not None else x

    @abstractmethod
    def walk(self, x: torch.Tensor, preact: bool) -> Iterator[StageItem]:
        ...

    @abstractmethod
    def embed(self, last: torch.Tensor) -> torch.Tensor:
        ...

    @abstractmethod
    def stage_bns(self) -> dict[str, nn.BatchNorm2d]:
        ...

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *_, (_, last, _) = self.walk(self.prepare(x), False)
        return self.embed(last)


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C): the mean over the spatial positions."""
    return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class ZooModel(EncoderModel):
    """A zoo network: :class:`ZooEncoder` + optional projection head + linear classifier.

    ``forward(x)`` -> ``ModelOutput(logits (B, K), embedding (B, F), projection)`` as every
    supkd model; the classifier is the published network's final Linear.
    """

    encoder: ZooEncoder

    def forward_intermediates(
        self, x: torch.Tensor, *, preact: bool = False
    ) -> dict[str, torch.Tensor]:
        """Ordered dict ``stem, layer1..layerN`` (B, C, H, W), ``embedding`` (B, F),
        ``logits`` (B, K). ``preact=True``: each stage entry is its output before the
        stage's final ReLU (mdistiller's ``preact_feats``; a stage without a final ReLU
        gives its output); ValueError naming the model and stage where none exists."""
        out: dict[str, torch.Tensor] = {}
        last = x
        for name, last, pre in self.encoder.walk(self.encoder.prepare(x), preact):
            if preact and pre is None:
                raise ValueError(f"model {self.spec['name']!r}: stage {name!r} has no "
                                 "pre-activation output")
            out[name] = pre if preact else last
        out["embedding"] = self.encoder.embed(last)
        out["logits"] = self.classifier(out["embedding"])
        return out

    def bn_before_relu(self) -> dict[str, nn.BatchNorm2d]:
        """Stage name -> the BatchNorm whose output feeds the stage's last ReLU (OFD's
        margins; mdistiller's ``get_bn_before_relu``). ValueError for a network without
        one (the ShuffleNets, as in mdistiller)."""
        return self.encoder.stage_bns()


def build_zoo_model(
    name: str,
    encoder: ZooEncoder,
    *,
    num_classes: int,
    projection_dim: int | None,
    in_channels: int,
    projection_head: str,
    classifier_init: Any = None,
) -> ZooModel:
    """Wrap ``encoder`` with supkd's head and classifier; ``spec`` rebuilds it.

    ``classifier_init(linear)``: the published family's initialization of its final Linear
    (None: PyTorch's default, as RepDistiller's ResNets and ShuffleNets).
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes <= 0:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if projection_dim is not None and (
        not isinstance(projection_dim, int) or projection_dim <= 0
    ):
        raise ValueError(f"projection_dim must be a positive int or None, got {projection_dim!r}")
    if projection_head not in HEAD_KINDS:
        raise ValueError(f"projection_head must be one of {', '.join(HEAD_KINDS)}, "
                         f"got {projection_head!r}")
    head = (ProjectionHead(encoder.out_dim, projection_dim, kind=projection_head)
            if projection_dim else None)
    classifier = make_classifier(encoder.out_dim, num_classes)
    if classifier_init is not None:
        classifier_init(classifier)
    spec: dict[str, Any] = {
        "name": name,
        "num_classes": num_classes,
        "projection_dim": projection_dim,
        "in_channels": in_channels,
    }
    if encoder.input_affine is not None:
        scale, shift = encoder.input_affine.values
        spec["input_affine"] = {"scale": list(scale), "shift": list(shift)}
    if projection_head != "mlp" and head is not None:
        spec["projection_head"] = projection_head
    return ZooModel(encoder, classifier, head, spec)


#: (in_channels, input_affine) -> the encoder of one zoo name
EncoderFactory = Callable[[int, "Mapping[str, Sequence[float]] | None"], ZooEncoder]


def register_zoo(
    archs: Mapping[str, EncoderFactory],
    *,
    family: str,
    doc: str,
    num_classes: int = 100,
    classifier_init: Any = None,
) -> Callable[..., ZooModel]:
    """Register one builder under every name of ``archs`` (zoo name -> encoder factory) and
    return it: ``builder(name, num_classes, projection_dim, in_channels, input_affine,
    projection_head)``, the signature every supkd model builder has. ``num_classes`` is the
    family's default (1000 for the ImageNet MobileNetV1); ``classifier_init`` as in
    :func:`build_zoo_model`."""
    default_classes = num_classes

    def build(
        name: str,
        num_classes: int = default_classes,
        projection_dim: int | None = None,
        in_channels: int = 3,
        input_affine: Mapping[str, Sequence[float]] | None = None,
        projection_head: str = "mlp",
    ) -> ZooModel:
        if name not in archs:
            raise ValueError(f"unknown {family} {name!r}; valid: {', '.join(archs)}")
        enc = archs[name](in_channels, input_affine)
        return build_zoo_model(name, enc, num_classes=num_classes,
                               projection_dim=projection_dim, in_channels=in_channels,
                               projection_head=projection_head,
                               classifier_init=classifier_init)

    build.__doc__ = doc
    build.__name__ = build.__qualname__ = f"build_{family.lower().replace(' ', '_')}"
    for name in archs:
        register_model(name)(build)
    return build

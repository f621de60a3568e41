"""The KD benchmark's model zoo, named as RepDistiller and mdistiller name it.

CIFAR-100 (Tian et al. 2020, "Contrastive Representation Distillation", Table 1-2; Zhao et
al. 2022, "Decoupled Knowledge Distillation"): ``resnet8 .. resnet110``, ``resnet8x4``,
``resnet32x4`` (:mod:`.resnet_cifar`), ``wrn_16_1 .. wrn_40_2`` (:mod:`.wrn`), ``vgg8 ..
vgg19`` with BatchNorm (:mod:`.vgg`), ``MobileNetV2`` (mdistiller's ``mobile_half``),
``ShuffleV1``, ``ShuffleV2``, ``ResNet18``, ``ResNet50`` (:mod:`.resnet_big`); ImageNet:
``MobileNetV1``. Each is registered with :func:`supkd.models.register_model`, so
``create_model("resnet32x4", num_classes=100)`` builds it; every one is an
:class:`~supkd.models.EncoderModel` (encoder + projection head + classifier) with
``forward_intermediates(x, *, preact=False)`` over ``stem, layer1..layerN``.

Their parameter counts (:data:`PUBLISHED_PARAMS`, measured from mdistiller's code at 100
classes, MobileNetV1 at 1,000) hold for the classifier included, the projection head
(``projection_dim``) excluded.
"""

from __future__ import annotations

from supkd.models.zoo import (  # noqa: F401  (each registers its names)
    mobilenetv1,
    mobilenetv2,
    resnet_big,
    resnet_cifar,
    shufflenetv1,
    shufflenetv2,
    vgg,
    wrn,
)
from supkd.models.zoo.base import ZooEncoder, ZooModel

__all__ = ["PUBLISHED_PARAMS", "ZOO_CLASSES", "ZooEncoder", "ZooModel", "zoo_names"]

#: name -> parameters at ZOO_CLASSES[name] classes (mdistiller's models, counted with torch)
PUBLISHED_PARAMS: dict[str, int] = {
    "resnet8": 83_892, "resnet14": 181_108, "resnet20": 278_324, "resnet32": 472_756,
    "resnet44": 667_188, "resnet56": 861_620, "resnet110": 1_736_564,
    "resnet8x4": 1_233_540, "resnet32x4": 7_433_860,
    "wrn_16_1": 180_916, "wrn_16_2": 703_284, "wrn_40_1": 569_780, "wrn_40_2": 2_255_156,
    "vgg8": 3_965_028, "vgg11": 9_277_284, "vgg13": 9_462_180, "vgg16": 14_774_436,
    "vgg19": 20_086_692,
    "MobileNetV2": 812_836, "ShuffleV1": 949_258, "ShuffleV2": 1_355_528,
    "ResNet18": 11_220_132, "ResNet50": 23_705_252,
    "MobileNetV1": 4_231_976,
}
#: classes the count above is for: CIFAR-100's, ImageNet's for MobileNetV1
ZOO_CLASSES: dict[str, int] = {name: 100 for name in PUBLISHED_PARAMS} | {"MobileNetV1": 1000}


def zoo_names() -> list[str]:
    """The zoo's model names, in the order of :data:`PUBLISHED_PARAMS`."""
    return list(PUBLISHED_PARAMS)

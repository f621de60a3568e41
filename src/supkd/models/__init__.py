"""Models: ResNet-18/34/50 (CIFAR and ImageNet stems) with embedding, projection and logits.

>>> net = create_model("resnet18", stem="cifar", num_classes=10, projection_dim=128)
>>> out = net(x)   # ModelOutput(logits (B, 10), embedding (B, 512), projection (B, 128))

One registry (:mod:`supkd.models.registry`): ``create_model(name, **kwargs)`` calls the
builder registered for ``name`` with ``@register_model(name)``, or for a whole family
(``"timm/<arch>"``) with ``@register_model_family("timm")``; ``list_models()`` lists the exact
names. A model family is its own file registering its builder (``resnet.py`` for ResNets,
``timm_models.py`` for ``timm/<arch>``: timm's CNNs and ViTs, timm imported only then).

``create_model(..., input_affine={"scale": [...], "shift": [...]})`` builds a network that
first maps supkd-normalized inputs onto another normalization (:class:`InputAffine`): how an
imported teacher sees the inputs it was trained on.
"""

from __future__ import annotations

import torch

from supkd.models.base import EncoderModel, ModelOutput
from supkd.models.files import ModelRecord, load_model, load_model_record, save_model
from supkd.models.heads import ProjectionHead, make_classifier
from supkd.models.registry import (
    MODEL_FAMILIES,
    MODELS,
    create_model,
    list_model_families,
    list_models,
    register_model,
    register_model_family,
)
from supkd.models.resnet import InputAffine, ResNetEncoder, SupKDResNet
from supkd.models.timm_models import TimmModel  # registers the "timm" family (timm lazily)
from supkd.models.weights import load_torchvision_state_dict, to_torchvision_state_dict
from supkd.models.zoo import ZooModel  # registers the KD benchmark's zoo (resnet8x4, ...)


def as_model_output(out: ModelOutput | torch.Tensor | tuple) -> ModelOutput:
    """Normalize what a model returns into a :class:`ModelOutput`.

    A plain logits tensor (B, C) from a user's model becomes ``ModelOutput(logits, logits,
    None)`` (the logits double as the embedding); a ModelOutput passes through; a tuple of
    two or three tensors is read as ``(logits, embedding[, projection])``.
    """
    if isinstance(out, ModelOutput):
        return out
    if isinstance(out, torch.Tensor):
        if out.dim() != 2:
            raise ValueError(f"expected model logits of shape (B, C), got {tuple(out.shape)}")
        return ModelOutput(out, out, None)
    if isinstance(out, tuple | list) and len(out) in (2, 3):
        proj = out[2] if len(out) == 3 else None
        return ModelOutput(out[0], out[1], proj)
    raise ValueError(
        f"model output must be a ModelOutput, a logits tensor or a (logits, embedding[, "
        f"projection]) tuple, got {type(out).__name__}"
    )


__all__ = [
    "MODELS",
    "MODEL_FAMILIES",
    "EncoderModel",
    "InputAffine",
    "ModelOutput",
    "ModelRecord",
    "ProjectionHead",
    "ResNetEncoder",
    "SupKDResNet",
    "TimmModel",
    "ZooModel",
    "as_model_output",
    "create_model",
    "list_model_families",
    "list_models",
    "load_model",
    "load_model_record",
    "load_torchvision_state_dict",
    "make_classifier",
    "register_model",
    "register_model_family",
    "save_model",
    "to_torchvision_state_dict",
]

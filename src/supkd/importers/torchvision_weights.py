"""torchvision ResNet weights: an ImageNet ResNet state dict (``conv1``,
``layerL.B.downsample.{0,1}``, ``fc``), as saved by ``torch.save(model.state_dict())`` or
shipped by torchvision."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from supkd.errors import CheckpointError
from supkd.importers.common import (
    ImportedTeacher,
    build_resnet,
    check_request,
    embedding_dim,
    fc_from,
    infer_layout,
    load_encoder_and_fc,
    num_classes_of,
    read_checkpoint,
    unwrap_state_dict,
)


def import_torchvision(
    source: str | Path,
    *,
    arch: str | None = None,
    stem: str | None = None,
    num_classes: int | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> ImportedTeacher:
    """Build a :class:`SupKDResNet` from a torchvision ResNet state dict (ImageNet stem:
    7x7 stride-2 conv + max-pool). ``logits`` equal torchvision's ``model(x)``."""
    what = str(source)
    if state is None:
        state = unwrap_state_dict(read_checkpoint(source), what)
    enc = {k: v for k, v in state.items() if not k.startswith("fc.")}
    fc = {k[3:]: v for k, v in state.items() if k.startswith("fc.")}
    layout = infer_layout(enc, what)
    check_request(layout, arch, stem, what)
    dim = embedding_dim(enc, layout)
    if not fc:
        raise CheckpointError(f"{what}: missing keys 'fc.weight', 'fc.bias' (the classifier)")
    fc_sd = fc_from(fc, dim, what)
    n = num_classes_of(fc_sd, num_classes, what)
    net = build_resnet(layout, n, None, what)
    load_encoder_and_fc(net, enc, fc_sd, what)
    net.eval()
    return ImportedTeacher(
        model=net,
        format="torchvision",
        arch=layout.arch,
        stem=layout.stem,
        num_classes=n,
        has_classifier=True,
        has_head=False,
        sources=[what],
    )

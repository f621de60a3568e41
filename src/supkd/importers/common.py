"""What every importer shares: the record of an import, the safe file read, state-dict
unwrapping and the ResNet layout read from torchvision-named weights."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from supkd.errors import CheckpointError
from supkd.models import create_model, load_torchvision_state_dict
from supkd.models.files import read_torch_file

# (bottleneck?, blocks per stage) -> supkd model name (He et al., 2016, Table 1)
ARCH_BY_LAYOUT: dict[tuple[bool, tuple[int, ...]], str] = {
    (False, (2, 2, 2, 2)): "resnet18",
    (False, (3, 4, 6, 3)): "resnet34",
    (True, (3, 4, 6, 3)): "resnet50",
    (True, (3, 4, 23, 3)): "resnet101",
    (True, (3, 8, 36, 3)): "resnet152",
}

_FOREIGN_META_KEYS = ("opt", "optimizer", "epoch", "amp", "args", "best_acc1", "arch")


@dataclass
class ImportedTeacher:
    """What :func:`import_teacher` returns: the model plus a record of where it came from."""

    model: nn.Module
    format: str
    arch: str
    stem: str
    num_classes: int
    has_classifier: bool
    has_head: bool
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: ``{"mean": [C] | None, "std": [C] | None, "source": str}``: the statistics the teacher
    #: was trained with and where they were read (None: no correction asked for).
    input_norm: dict[str, Any] | None = None
    #: the supkd data set (``NORMALIZATION`` key) the correction targets, or None
    data: str | None = None
    #: ``{"scale": [C], "shift": [C]}`` the model applies to its inputs, or None
    input_affine: dict[str, list[float]] | None = None
    #: one line saying what correction was applied (printed by ``supkd import-teacher``)
    input_note: str = ""
    #: what the file itself records (RepDistiller's ``accuracy`` and ``epoch``), or None
    recorded: dict[str, Any] | None = None


def read_checkpoint(path: str | Path) -> Any:
    """A foreign checkpoint through the one safe reader: ``weights_only``, with
    SupContrast's ``argparse.Namespace`` options object the one extra class allowed."""
    return read_torch_file(path, "checkpoint", allow=(argparse.Namespace,), expect_dict=False)


def strip_module_prefix(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the ``module.`` path segments that DataParallel/DDP insert anywhere in a key
    (SupContrast wraps only ``model.encoder``, giving ``encoder.module.conv1.weight``)."""
    out: dict[str, Any] = {}
    for k, v in state.items():
        nk = ".".join(part for part in k.split(".") if part != "module")
        if nk in out:
            raise CheckpointError(f"duplicate key {nk!r} after removing 'module.' prefixes")
        out[nk] = v
    return out


def _tensor_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{what}: expected a non-empty state dict, got {type(obj).__name__}")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise CheckpointError(f"{what}: expected name -> tensor entries, bad key {bad[0]!r}")
    return strip_module_prefix(obj)


def unwrap_state_dict(obj: Any, what: str) -> dict[str, torch.Tensor]:
    """The tensor state dict inside a checkpoint: the object itself, or its ``model`` /
    ``state_dict`` entry (SupContrast, timm and Lightning-style wrappers)."""
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                return _tensor_dict(obj[key], f"{what} ['{key}']")
        if any(k in obj for k in _FOREIGN_META_KEYS) and not any(
            torch.is_tensor(v) for v in obj.values()
        ):
            raise CheckpointError(f"{what}: no 'model' or 'state_dict' entry with the weights")
    return _tensor_dict(obj, what)


@dataclass
class Layout:
    arch: str
    stem: str
    width: int
    in_channels: int


def infer_layout(enc: Mapping[str, torch.Tensor], what: str) -> Layout:
    """Read architecture, stem, base width and input channels from torchvision-named keys."""
    w = enc.get("conv1.weight")
    if w is None or w.dim() != 4:
        raise CheckpointError(f"{what}: missing key 'conv1.weight' (the stem convolution)")
    counts = []
    for stage in range(1, 5):
        idx = {
            int(m.group(1))
            for k in enc
            if (m := re.match(rf"layer{stage}\.(\d+)\.", k)) is not None
        }
        if not idx:
            raise CheckpointError(f"{what}: missing keys 'layer{stage}.*' (ResNet stage {stage})")
        counts.append(max(idx) + 1)
    bottleneck = "layer1.0.conv3.weight" in enc
    arch = ARCH_BY_LAYOUT.get((bottleneck, tuple(counts)))
    if arch is None:
        kind = "Bottleneck" if bottleneck else "BasicBlock"
        raise CheckpointError(f"{what}: unrecognized ResNet layout ({kind}, blocks {counts})")
    k = int(w.shape[-1])
    stem = {3: "cifar", 7: "imagenet"}.get(k)
    if stem is None:
        raise CheckpointError(f"{what}: stem conv of size {k}x{k}, expected 3x3 or 7x7")
    return Layout(arch=arch, stem=stem, width=int(w.shape[0]), in_channels=int(w.shape[1]))


def check_request(layout: Layout, arch: str | None, stem: str | None, what: str) -> None:
    if arch is not None and arch != layout.arch:
        raise CheckpointError(f"{what}: holds a {layout.arch}, but --arch {arch} was asked for")
    if stem is not None and stem != layout.stem:
        raise CheckpointError(
            f"{what}: has a {layout.stem} stem ({'3x3' if layout.stem == 'cifar' else '7x7'} "
            f"conv1), but --stem {stem} was asked for"
        )


def fc_from(classifier: Mapping[str, torch.Tensor], dim: int, what: str) -> dict[str, torch.Tensor]:
    sd = {k[3:] if k.startswith("fc.") else k: v for k, v in classifier.items()}
    if set(sd) != {"weight", "bias"}:
        raise CheckpointError(
            f"{what}: expected a linear classifier with keys fc.weight and fc.bias, "
            f"got {sorted(classifier)[:4]}"
        )
    w, b = sd["weight"], sd["bias"]
    if w.dim() != 2 or w.shape[1] != dim or tuple(b.shape) != (w.shape[0],):
        raise CheckpointError(
            f"{what}: classifier of shape {tuple(w.shape)} does not fit the encoder's "
            f"{dim}-dim embedding"
        )
    return {"weight": w, "bias": b}


def build_resnet(
    layout: Layout, num_classes: int, projection_dim: int | None, what: str,
    projection_head: str = "mlp",
) -> nn.Module:
    try:
        return create_model(
            layout.arch,
            stem=layout.stem,
            num_classes=num_classes,
            projection_dim=projection_dim,
            width=layout.width,
            in_channels=layout.in_channels,
            projection_head=projection_head,
        )
    except ValueError as exc:  # e.g. a resnet101 file: a layout supkd has no model for
        raise CheckpointError(f"{what}: {exc}") from None


def load_encoder_and_fc(
    net: nn.Module, enc: dict[str, torch.Tensor], fc: dict[str, torch.Tensor], what: str
) -> None:
    full = dict(enc)
    full["fc.weight"], full["fc.bias"] = fc["weight"], fc["bias"]
    # Files saved before PyTorch 0.4.1 (some published ImageNet weights) have no BatchNorm
    # num_batches_tracked buffers; nn.BatchNorm's own loader treats them as 0 (it is only
    # used when momentum=None), so do the same instead of reporting them missing.
    for k in list(enc):
        if k.endswith(".running_mean"):
            nbt = k[: -len("running_mean")] + "num_batches_tracked"
            full.setdefault(nbt, torch.tensor(0, dtype=torch.long))
    try:
        load_torchvision_state_dict(net, full)
    except CheckpointError as exc:
        raise CheckpointError(f"{what}: {exc}") from None


def embedding_dim(enc: Mapping[str, torch.Tensor], layout: Layout) -> int:
    last = max(
        (k for k in enc if re.match(r"layer4\.\d+\.bn\d\.weight$", k)),
        key=lambda k: (int(k.split(".")[1]), k),
    )
    return int(enc[last].shape[0])


def num_classes_of(fc: Mapping[str, torch.Tensor] | None, requested: int | None, what: str) -> int:
    if fc is not None:
        n = int(fc["weight"].shape[0])
        if requested is not None and requested != n:
            raise CheckpointError(
                f"{what}: classifier has {n} classes, but --num-classes {requested} was given"
            )
        return n
    if requested is None:
        raise CheckpointError(
            f"{what}: no classifier in the checkpoint; give --classifier FILE "
            "(SupContrast's main_linear.py output) or --num-classes N"
        )
    if requested < 1:
        raise CheckpointError(f"--num-classes: expected an integer >= 1, got {requested}")
    return requested

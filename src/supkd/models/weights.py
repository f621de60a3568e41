"""Load torchvision-format ResNet state dicts (e.g. torchvision's pretrained ResNet-50).

torchvision names the parameters ``conv1.*, bn1.*, layer1..4.*, fc.*``; a
:class:`~supkd.models.resnet.SupKDResNet` keeps the same modules under ``encoder.*`` and the
classifier under ``classifier.*``, so the mapping is a prefix rename.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from supkd.errors import CheckpointError
from supkd.models.resnet import SupKDResNet

_SHOW = 5  # how many keys of each kind an error message lists


def _from_torchvision_key(key: str) -> str:
    if key.startswith("fc."):
        return "classifier." + key[len("fc.") :]
    return "encoder." + key


def _to_torchvision_key(key: str) -> str:
    if key.startswith("classifier."):
        return "fc." + key[len("classifier.") :]
    return key.removeprefix("encoder.")


def _strip_wrappers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Checkpoints saved from DDP or torch.compile carry "module." / "_orig_mod." prefixes.
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def _head(items: list[str]) -> str:
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def state_dict_mismatch(
    target: Mapping[str, Any],
    source: Mapping[str, Any],
    name: Callable[[str], str] = str,
) -> str | None:
    """How ``source`` (weights from a file) fails to fit ``target`` (a model's state dict):
    ``"missing N: ...; unexpected N: ...; shape mismatches N: ..."`` with the first few keys
    of each (shown through ``name``, e.g. under the file's own naming), or None when every
    key is present on both sides with the same shape. One report for every loader of
    weights, so that all of them name the problem the same way."""
    missing = [name(k) for k in target if k not in source]
    unexpected = [name(k) for k in source if k not in target]
    mismatched = [
        f"{name(k)} (checkpoint {tuple(source[k].shape)}, model {tuple(v.shape)})"
        for k, v in target.items()
        if k in source
        and hasattr(source[k], "shape")
        and tuple(source[k].shape) != tuple(v.shape)
    ]
    parts = [
        f"{label} {len(items)}: {_head(items)}"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape mismatches", mismatched),
        )
        if items
    ]
    return "; ".join(parts) or None


def load_torchvision_state_dict(
    net: SupKDResNet,
    state_dict: Mapping[str, torch.Tensor],
    *,
    load_classifier: bool = True,
) -> SupKDResNet:
    """Copy a torchvision ResNet state dict into ``net`` (in place; returns ``net``).

    ``load_classifier=False`` skips ``fc.*`` (fine-tuning a 1000-class network on fewer
    classes). The projection head, which torchvision has no counterpart for, is left as is.
    Raises :class:`CheckpointError` on one line listing the first missing keys, unexpected
    keys and shape mismatches when the architectures differ; nothing is copied then.
    """
    if isinstance(state_dict.get("state_dict"), Mapping):
        state_dict = state_dict["state_dict"]  # a {"state_dict": ...} checkpoint wrapper
    source = {
        _from_torchvision_key(k): v
        for k, v in _strip_wrappers(state_dict).items()
        if load_classifier or not k.startswith("fc.")
    }
    target = {
        k: v
        for k, v in net.state_dict().items()
        if k.startswith("encoder.") or (load_classifier and k.startswith("classifier."))
    }
    # Keys are reported under torchvision's names, the ones the user's file carries.
    problem = state_dict_mismatch(target, source, _to_torchvision_key)
    if problem is not None:
        spec = net.spec
        raise CheckpointError(
            f"torchvision state dict does not fit {spec.get('name')} "
            f"(stem={spec.get('stem')}, width={spec.get('width')}, "
            f"num_classes={spec.get('num_classes')}); {problem}"
        )
    with torch.no_grad():
        for k, v in net.state_dict().items():
            if k in source:
                v.copy_(source[k])
    return net


def to_torchvision_state_dict(net: SupKDResNet) -> dict[str, torch.Tensor]:
    """The inverse mapping: ``net``'s encoder and classifier under torchvision's names.

    An input correction (``net.spec["input_affine"]``, set by ``supkd import-teacher``) is not
    a weight and is not exported: the returned weights expect inputs normalized with the
    statistics the network was trained with, not supkd's.
    """
    return {
        _to_torchvision_key(k): v
        for k, v in net.state_dict().items()
        if k.startswith(("encoder.", "classifier."))
    }

"""SupContrast checkpoints (Khosla et al., 2020, github.com/HobbitLong/SupContrast,
``networks/resnet_big.py``): ``{"model": state_dict, "opt": argparse.Namespace, ...}`` with
``encoder.*`` keys (a CIFAR-stem ResNet; projection shortcuts ``shortcut.0`` / ``shortcut.1``),
and one of: an MLP head ``head.0`` (Linear d->d), ReLU, ``head.2`` (Linear d->feat_dim)
(``SupConResNet(head='mlp')``, the default); a linear head ``head.weight``/``head.bias``
(``head='linear'``); or the CE baseline's ``fc.*`` (``SupCEResNet``). DataParallel inserts
``module.``. The linear classifier trained on the frozen encoder (``main_linear.py``,
``LinearClassifier``) is a separate file ``{"model": {"fc.weight", "fc.bias"}}``. Its
``resnet101`` has no supkd model and is refused with one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

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


def supcontrast_to_torchvision(
    state: Mapping[str, torch.Tensor], what: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a SupContrast state dict into (encoder in torchvision naming, head, fc).

    ``encoder.X`` -> ``X`` with ``shortcut`` -> ``downsample`` (same Conv1x1+BN pair);
    ``head.*`` and ``fc.*`` are returned with their prefix removed.
    """
    enc: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    fc: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith("encoder."):
            enc[re.sub(r"\.shortcut\.", ".downsample.", k[len("encoder.") :])] = v
        elif k.startswith("head."):
            head[k[len("head.") :]] = v
        elif k.startswith("fc."):
            fc[k[len("fc.") :]] = v
        else:
            raise CheckpointError(
                f"{what}: unexpected key {k!r} for a SupContrast checkpoint "
                "(expected encoder.*, head.* or fc.*)"
            )
    if not enc:
        raise CheckpointError(f"{what}: no 'encoder.*' weights (not a SupContrast checkpoint?)")
    return enc, head, fc


def head_layout(head: Mapping[str, torch.Tensor], what: str) -> tuple[str, list[str], int]:
    """(kind, Linear prefixes in order, output width) of a SupContrast projection head:
    ``("linear", [""], P)`` for ``head.weight``/``head.bias``, ``("mlp", ["0.", "2."], P)``
    for ``head.0``/``head.2``. CheckpointError for any other key set."""
    if set(head) == {"weight", "bias"}:
        prefixes = [""]
    else:
        idx = sorted({int(k.split(".")[0]) for k in head if k.split(".")[0].isdigit()})
        prefixes = [f"{i}." for i in idx]
        expected = {f"{p}{n}" for p in prefixes for n in ("weight", "bias")}
        if not idx or set(head) != expected:
            bad = sorted(set(head) ^ expected) or sorted(head)
            raise CheckpointError(
                f"{what}: unexpected projection head (key 'head.{bad[0]}'); expected "
                "SupContrast's head='mlp' (head.0, head.2) or head='linear' (head.weight, "
                "head.bias)")
        if len(idx) != 2:
            raise CheckpointError(
                f"{what}: projection head has {len(idx)} Linear layers "
                f"(head.{', head.'.join(map(str, idx))}); expected SupContrast's 'mlp' "
                "(2: Linear-ReLU-Linear) or 'linear' (1) head")
    last = head[f"{prefixes[-1]}weight"]
    if last.dim() != 2:
        raise CheckpointError(f"{what}: 'head.{prefixes[-1]}weight' is not a Linear weight")
    return ("linear" if prefixes == [""] else "mlp"), prefixes, int(last.shape[0])


def _copy_head(net: nn.Module, head: Mapping[str, torch.Tensor], prefixes: list[str],
               what: str) -> None:
    """Copy the SupContrast head's Linear layers (``prefixes``, in order) into the model's
    projection head, matched by order of its Linear layers (whatever their attribute names);
    shapes are checked one by one."""
    linears = [m for m in net.head.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == len(prefixes), (len(linears), prefixes)  # built from head_layout
    with torch.no_grad():
        for prefix, lin in zip(prefixes, linears):
            for p in ("weight", "bias"):
                src, dst = head[f"{prefix}{p}"], getattr(lin, p)
                if tuple(src.shape) != tuple(dst.shape):
                    raise CheckpointError(
                        f"{what}: 'head.{prefix}{p}' has shape {tuple(src.shape)}, "
                        f"expected {tuple(dst.shape)}"
                    )
                dst.copy_(src)


def import_supcontrast(
    source: str | Path,
    *,
    arch: str | None = None,
    stem: str | None = None,
    classifier: str | Path | None = None,
    num_classes: int | None = None,
    state: Mapping[str, torch.Tensor] | None = None,
) -> ImportedTeacher:
    """Build a :class:`SupKDResNet` from a SupContrast checkpoint (+ linear classifier file).

    The model's ``forward(x)`` then gives ``projection`` = the SupConResNet output
    (L2-normalized head output), ``embedding`` = ``encoder(x)``, and ``logits`` =
    ``LinearClassifier(encoder(x))`` (or the CE baseline's ``fc``). Without any classifier the
    logits are zeros (the classifier is zero-initialized) and a note says so.
    """
    what = str(source)
    if state is None:
        state = unwrap_state_dict(read_checkpoint(source), what)
    enc, head, fc = supcontrast_to_torchvision(state, what)
    layout = infer_layout(enc, what)
    check_request(layout, arch, stem, what)
    dim = embedding_dim(enc, layout)
    notes: list[str] = []
    sources = [str(source)]
    fc_sd: dict[str, torch.Tensor] | None = fc_from(fc, dim, what) if fc else None
    if classifier is not None:
        cls_what = str(classifier)
        cls_state = unwrap_state_dict(read_checkpoint(classifier), cls_what)
        if fc_sd is not None:
            notes.append(f"classifier from {cls_what} replaces the fc.* found in {what}")
        fc_sd = fc_from(cls_state, dim, cls_what)
        sources.append(cls_what)
    n = num_classes_of(fc_sd, num_classes, what)
    has_classifier = fc_sd is not None
    if fc_sd is None:
        notes.append("no classifier given: logits are zeros; distill from embedding/projection")
        fc_sd = {"weight": torch.zeros(n, dim), "bias": torch.zeros(n)}
    proj_dim, kind, prefixes = None, "mlp", []
    if head:
        kind, prefixes, proj_dim = head_layout(head, what)
    net = build_resnet(layout, n, proj_dim, what, projection_head=kind)
    load_encoder_and_fc(net, enc, fc_sd, what)
    if head:
        _copy_head(net, head, prefixes, what)
    net.eval()
    return ImportedTeacher(
        model=net,
        format="supcontrast",
        arch=layout.arch,
        stem=layout.stem,
        num_classes=n,
        has_classifier=has_classifier,
        has_head=bool(head),
        sources=sources,
        notes=notes,
    )

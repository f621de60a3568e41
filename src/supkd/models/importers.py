"""Import teachers trained elsewhere into supkd models.

Three sources are understood:

- ``supcontrast``: checkpoints of the public SupContrast code (Khosla et al., 2020,
  github.com/HobbitLong/SupContrast, ``networks/resnet_big.py``): ``{"model": state_dict,
  "opt": argparse.Namespace, "optimizer": ..., "epoch": ...}`` with ``encoder.*`` keys (a
  CIFAR-stem ResNet: 3x3 stride-1 ``conv1``, no max-pool; projection shortcuts named
  ``shortcut.0`` / ``shortcut.1``), an MLP head ``head.0`` (Linear d->d), ReLU, ``head.2``
  (Linear d->feat_dim), or the CE baseline's ``fc.*``. DataParallel inserts ``module.``
  (``encoder.module.conv1.weight`` when only the encoder was wrapped). The linear classifier
  trained on the frozen encoder (``main_linear.py``) is a separate file
  ``{"model": {"fc.weight", "fc.bias"}}``.
- ``torchvision``: an ImageNet ResNet state dict (``conv1``, ``layerL.B.downsample.{0,1}``,
  ``fc``), as saved by ``torch.save(model.state_dict())`` or shipped by torchvision.
- ``run``: a supkd run directory (or its ``model.pt``), loaded by the engine.

Both foreign formats are translated to torchvision naming, which
:func:`supkd.models.load_torchvision_state_dict` maps onto a :class:`SupKDResNet`; the
projection head is copied Linear by Linear. The architecture, stem, width and class count
are read from the weights, so a mismatch with what the user asked for is reported before
any copying, naming the file and both values.
"""

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

FORMATS = ("auto", "supcontrast", "torchvision", "run")

# (bottleneck?, blocks per stage) -> supkd model name (He et al., 2016, Table 1)
_ARCH_BY_LAYOUT: dict[tuple[bool, tuple[int, ...]], str] = {
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


def load_checkpoint_file(path: str | Path) -> Any:
    """``torch.load`` a file safely (``weights_only``; SupContrast's ``argparse.Namespace``
    options object is the one extra class allowed) and turn every failure into a
    one-line :class:`CheckpointError` naming the file."""
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, expected a checkpoint file")
    if not p.is_file():
        raise CheckpointError(f"{p}: file not found")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{p}: empty file (0 bytes), expected a torch checkpoint")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(p, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError) as exc:
        first = str(exc).splitlines()[0].split(". ")[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{p}: truncated or corrupt checkpoint ({size} bytes; {first})"
        ) from None
    except Exception as exc:  # pickle errors, refused globals, bad magic numbers
        text = str(exc)
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if refused:
            raise CheckpointError(
                f"{p}: holds a pickled Python object ({refused.group(1)}) that a safe load "
                "refuses; save the model's state_dict() instead"
            ) from None
        raise CheckpointError(
            f"{p}: not a torch checkpoint (torch.load cannot read it: {type(exc).__name__})"
        ) from None


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


@dataclass
class _Layout:
    arch: str
    stem: str
    width: int
    in_channels: int


def infer_layout(enc: Mapping[str, torch.Tensor], what: str) -> _Layout:
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
    arch = _ARCH_BY_LAYOUT.get((bottleneck, tuple(counts)))
    if arch is None:
        kind = "Bottleneck" if bottleneck else "BasicBlock"
        raise CheckpointError(f"{what}: unrecognized ResNet layout ({kind}, blocks {counts})")
    k = int(w.shape[-1])
    stem = {3: "cifar", 7: "imagenet"}.get(k)
    if stem is None:
        raise CheckpointError(f"{what}: stem conv of size {k}x{k}, expected 3x3 or 7x7")
    return _Layout(arch=arch, stem=stem, width=int(w.shape[0]), in_channels=int(w.shape[1]))


def _check_request(layout: _Layout, arch: str | None, stem: str | None, what: str) -> None:
    if arch is not None and arch != layout.arch:
        raise CheckpointError(f"{what}: holds a {layout.arch}, but --arch {arch} was asked for")
    if stem is not None and stem != layout.stem:
        raise CheckpointError(
            f"{what}: has a {layout.stem} stem ({'3x3' if layout.stem == 'cifar' else '7x7'} "
            f"conv1), but --stem {stem} was asked for"
        )


def _copy_head(net: nn.Module, head: Mapping[str, torch.Tensor], what: str) -> None:
    """Copy SupContrast's ``head.0`` / ``head.2`` Linears into the model's projection head.

    Matching is by order of the Linear layers, so it holds whatever the head's attribute
    names are; shapes are checked one by one.
    """
    target = getattr(net, "head", None)
    linears = [m for m in target.modules() if isinstance(m, nn.Linear)] if target else []
    src_idx = sorted({int(k.split(".")[0]) for k in head if k.split(".")[0].isdigit()})
    if set(head) - {f"{i}.{p}" for i in src_idx for p in ("weight", "bias")}:
        extra = sorted(set(head) - {f"{i}.{p}" for i in src_idx for p in ("weight", "bias")})
        raise CheckpointError(f"{what}: unexpected projection-head key 'head.{extra[0]}'")
    if len(src_idx) != len(linears):
        raise CheckpointError(
            f"{what}: projection head has {len(src_idx)} Linear layers "
            f"(head.{', head.'.join(map(str, src_idx))}), supkd's has {len(linears)} "
            "(Linear-ReLU-Linear, as SupContrast's 'mlp' head)"
        )
    with torch.no_grad():
        for i, lin in zip(src_idx, linears):
            for p in ("weight", "bias"):
                src = head.get(f"{i}.{p}")
                dst = getattr(lin, p)
                if src is None or dst is None:
                    raise CheckpointError(f"{what}: missing key 'head.{i}.{p}'")
                if tuple(src.shape) != tuple(dst.shape):
                    raise CheckpointError(
                        f"{what}: 'head.{i}.{p}' has shape {tuple(src.shape)}, "
                        f"expected {tuple(dst.shape)}"
                    )
                dst.copy_(src)


def _fc_from(
    classifier: Mapping[str, torch.Tensor], dim: int, what: str
) -> dict[str, torch.Tensor]:
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


def _build(layout: _Layout, num_classes: int, projection_dim: int | None, what: str) -> nn.Module:
    from supkd.models import create_model

    try:
        return create_model(
            layout.arch,
            stem=layout.stem,
            num_classes=num_classes,
            projection_dim=projection_dim,
            width=layout.width,
            in_channels=layout.in_channels,
        )
    except ValueError as exc:  # e.g. a resnet101 file: a layout supkd has no model for
        raise CheckpointError(f"{what}: {exc}") from None


def _load_encoder_and_fc(
    net: nn.Module, enc: dict[str, torch.Tensor], fc: dict[str, torch.Tensor], what: str
) -> None:
    from supkd.models import load_torchvision_state_dict

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


def _embedding_dim(enc: Mapping[str, torch.Tensor], layout: _Layout) -> int:
    last = max(
        (k for k in enc if re.match(r"layer4\.\d+\.bn\d\.weight$", k)),
        key=lambda k: (int(k.split(".")[1]), k),
    )
    return int(enc[last].shape[0])


def _num_classes(fc: Mapping[str, torch.Tensor] | None, requested: int | None, what: str) -> int:
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
        state = unwrap_state_dict(load_checkpoint_file(source), what)
    enc, head, fc = supcontrast_to_torchvision(state, what)
    layout = infer_layout(enc, what)
    _check_request(layout, arch, stem, what)
    dim = _embedding_dim(enc, layout)
    notes: list[str] = []
    sources = [str(source)]
    fc_sd: dict[str, torch.Tensor] | None = _fc_from(fc, dim, what) if fc else None
    if classifier is not None:
        cls_what = str(classifier)
        cls_state = unwrap_state_dict(load_checkpoint_file(classifier), cls_what)
        if fc_sd is not None:
            notes.append(f"classifier from {cls_what} replaces the fc.* found in {what}")
        fc_sd = _fc_from(cls_state, dim, cls_what)
        sources.append(cls_what)
    n = _num_classes(fc_sd, num_classes, what)
    has_classifier = fc_sd is not None
    if fc_sd is None:
        notes.append("no classifier given: logits are zeros; distill from embedding/projection")
        fc_sd = {"weight": torch.zeros(n, dim), "bias": torch.zeros(n)}
    proj_dim = None
    if head:
        last = max(int(k.split(".")[0]) for k in head if k.split(".")[0].isdigit())
        proj_dim = int(head[f"{last}.weight"].shape[0]) if f"{last}.weight" in head else None
        if proj_dim is None:
            raise CheckpointError(f"{what}: missing key 'head.{last}.weight'")
    net = _build(layout, n, proj_dim, what)
    _load_encoder_and_fc(net, enc, fc_sd, what)
    if head:
        _copy_head(net, head, what)
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
        state = unwrap_state_dict(load_checkpoint_file(source), what)
    enc = {k: v for k, v in state.items() if not k.startswith("fc.")}
    fc = {k[3:]: v for k, v in state.items() if k.startswith("fc.")}
    layout = infer_layout(enc, what)
    _check_request(layout, arch, stem, what)
    dim = _embedding_dim(enc, layout)
    if not fc:
        raise CheckpointError(f"{what}: missing keys 'fc.weight', 'fc.bias' (the classifier)")
    fc_sd = _fc_from(fc, dim, what)
    n = _num_classes(fc_sd, num_classes, what)
    net = _build(layout, n, None, what)
    _load_encoder_and_fc(net, enc, fc_sd, what)
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


def import_run(
    source: str | Path, *, arch: str | None = None, stem: str | None = None
) -> ImportedTeacher:
    """Load a supkd run directory, ``model.pt`` or ``last.pt`` through the engine."""
    from supkd.train.checkpoint import load_model_record

    rec = load_model_record(source)
    net = rec.model
    spec = dict(net.spec)
    layout = _Layout(
        arch=str(spec["name"]),
        stem=str(spec["stem"]),
        width=int(spec["width"]),
        in_channels=int(spec["in_channels"]),
    )
    _check_request(layout, arch, stem, str(source))
    net.eval()
    parts = rec.trained_parts
    return ImportedTeacher(
        model=net,
        format="run",
        arch=layout.arch,
        stem=layout.stem,
        num_classes=int(spec["num_classes"]),
        has_classifier="classifier" in parts,
        has_head=net.head is not None and "head" in parts,
        sources=[str(rec.path)],
    )


def detect_format(source: str | Path) -> tuple[str, dict[str, torch.Tensor] | None]:
    """Guess the format of ``source``: a folder is a supkd run; a file's keys decide
    between SupContrast (``encoder.*``) and torchvision (``conv1.weight`` at top level)."""
    p = Path(source)
    if p.is_dir():
        return "run", None
    obj = load_checkpoint_file(p)
    if isinstance(obj, Mapping) and "spec" in obj:
        return "run", None
    state = unwrap_state_dict(obj, str(p))
    if any(k.startswith("encoder.") for k in state):
        return "supcontrast", state
    if "conv1.weight" in state:
        return "torchvision", state
    raise CheckpointError(
        f"{p}: cannot tell the format (no 'encoder.*' or 'conv1.weight' keys); "
        "give --format supcontrast|torchvision|run"
    )


def import_teacher(
    source: str | Path,
    *,
    arch: str | None = None,
    stem: str | None = None,
    fmt: str = "auto",
    classifier: str | Path | None = None,
    num_classes: int | None = None,
) -> ImportedTeacher:
    """Import a teacher from ``source`` in format ``fmt`` (see the module docstring)."""
    if fmt not in FORMATS:
        raise CheckpointError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    if not Path(source).exists():
        raise CheckpointError(f"{source}: no such file or folder")
    state = None
    if fmt == "auto":
        fmt, state = detect_format(source)
    if classifier is not None and fmt != "supcontrast":
        raise CheckpointError(f"--classifier: only used with --format supcontrast, not {fmt}")
    if fmt == "supcontrast":
        return import_supcontrast(
            source,
            arch=arch,
            stem=stem,
            classifier=classifier,
            num_classes=num_classes,
            state=state,
        )
    if fmt == "torchvision":
        return import_torchvision(
            source, arch=arch, stem=stem, num_classes=num_classes, state=state
        )
    return import_run(source, arch=arch, stem=stem)

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

Input normalization: a foreign teacher was trained on images normalized with its own
statistics (mu_t, sigma_t), while supkd's loaders normalize with the statistics of the data
set it is distilled on (mu_d, sigma_d; ``supkd.data.datasets.NORMALIZATION``). When they
differ, the imported model gets ``input_affine`` (scale = sigma_d / sigma_t, shift =
(mu_d - mu_t) / sigma_t per channel; :class:`supkd.models.InputAffine`), so on supkd's
inputs it computes exactly what it computed in its own training. The teacher's statistics
come from ``input_norm``: ``auto`` reads them from a SupContrast checkpoint's ``opt`` (as its
``set_loader`` does), takes ImageNet's for torchvision weights, and none for a supkd run.
"""

from __future__ import annotations

import argparse
import ast
import math
import numbers
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from supkd.errors import CheckpointError, UserError

FORMATS = ("auto", "supcontrast", "torchvision", "run")

#: Named input statistics ``name -> (mean, std)`` per RGB channel that teachers from
#: elsewhere were trained with.
INPUT_NORMS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    # SupContrast (github.com/HobbitLong/SupContrast), main_supcon.py set_loader (also
    # main_ce.py and main_linear.py): transforms.Normalize(mean=mean, std=std) with these.
    "supcontrast-cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "supcontrast-cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    # torchvision's ImageNet weights (ResNet*_Weights.IMAGENET1K_*.transforms()).
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
#: The supkd data set (a ``NORMALIZATION`` key) a teacher with these statistics is
#: distilled on when ``data`` is not given.
_DEFAULT_DATA = {
    "supcontrast-cifar10": "cifar10",
    "supcontrast-cifar100": "cifar100",
    "imagenet": "imagefolder",
}
#: SupContrast's ``opt.dataset`` -> the statistics its ``set_loader`` used.
_SUPCONTRAST_DATASETS = {"cifar10": "supcontrast-cifar10", "cifar100": "supcontrast-cifar100"}
INPUT_NORM_CHOICES = ("auto", "none", *INPUT_NORMS)
_INPUT_NORM_EXPECTED = (
    f"expected {', '.join(INPUT_NORM_CHOICES)} or the teacher's statistics as "
    "'m1,m2,m3/s1,s2,s3' (mean/std per channel, std > 0)"
)
#: Teacher and data statistics closer than this are the same: no correction.
STATS_ATOL = 1e-6

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
    #: ``{"mean": [C] | None, "std": [C] | None, "source": str}``: the statistics the teacher
    #: was trained with and where they were read (None: no correction asked for).
    input_norm: dict[str, Any] | None = None
    #: the supkd data set (``NORMALIZATION`` key) the correction targets, or None
    data: str | None = None
    #: ``{"scale": [C], "shift": [C]}`` the model applies to its inputs, or None
    input_affine: dict[str, list[float]] | None = None
    #: one line saying what correction was applied (printed by ``supkd import-teacher``)
    input_note: str = ""


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


# ---------------------------------------------------------------------------------------------
# input normalization


@dataclass(frozen=True)
class InputStats:
    """Per-channel ``mean`` and ``std`` (C,) a teacher's inputs were normalized with in its
    training (``x = (p - mean) / std`` for pixels p in [0, 1]), and where they were read."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    default_data: str | None = None  # the supkd data set they belong to, when known
    from_flag: bool = True  # errors name --input-norm (else the checkpoint's opt)


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values) + ")"


def _check_stats(mean: Sequence[Any], std: Sequence[Any], where: str, got: str) -> None:
    """Raise ``UserError`` (or ``CheckpointError`` for a checkpoint's opt) unless mean and std
    are equally long, non-empty, finite numbers with std > 0."""
    flag = where == "--input-norm"
    error = UserError if flag else CheckpointError
    values = [*mean, *std]
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        expected = _INPUT_NORM_EXPECTED if flag else "expected numbers"
        raise error(f"{where}: {expected}, got {got}")
    if not mean or len(mean) != len(std):
        raise error(
            f"{where}: mean and std need one value per channel each, got {len(mean)} and "
            f"{len(std)} ({got})"
        )
    if not all(math.isfinite(v) for v in values) or not all(v > 0 for v in std):
        raise error(f"{where}: expected finite means and stds > 0, got {got}")


def parse_input_norm(value: str | tuple[Sequence[float], Sequence[float]]) -> str | InputStats:
    """``auto`` | ``none`` | a name in :data:`INPUT_NORMS` | ``"m1,m2,m3/s1,s2,s3"`` | a
    ``(mean, std)`` pair -> ``"auto"``, ``"none"`` or the statistics. ``UserError`` naming
    ``--input-norm`` on anything else."""
    if not isinstance(value, str):
        if not isinstance(value, Sequence) or len(value) != 2:
            raise UserError(f"--input-norm: {_INPUT_NORM_EXPECTED}, got {value!r}")
        mean, std = (list(v) if isinstance(v, Sequence) else [v] for v in value)
        _check_stats(mean, std, "--input-norm", repr(value))
        return InputStats(
            tuple(map(float, mean)),
            tuple(map(float, std)),
            f"--input-norm {_fmt(mean)}/{_fmt(std)}",
        )
    text = value.strip()
    if text in ("auto", "none"):
        return text
    if text in INPUT_NORMS:
        mean, std = INPUT_NORMS[text]
        return InputStats(mean, std, f"--input-norm {text}", _DEFAULT_DATA[text])
    parts = text.split("/")
    if len(parts) != 2:
        raise UserError(f"--input-norm: {_INPUT_NORM_EXPECTED}, got {value!r}")
    try:
        mean, std = ([float(v) for v in part.strip().strip("()[]").split(",")] for part in parts)
    except ValueError:
        raise UserError(f"--input-norm: {_INPUT_NORM_EXPECTED}, got {value!r}") from None
    _check_stats(mean, std, "--input-norm", repr(value))
    return InputStats(tuple(mean), tuple(std), f"--input-norm {text}")


def _opt_value(opt: Any, name: str) -> Any:
    if isinstance(opt, Mapping):
        return opt.get(name)
    return getattr(opt, name, None)


def supcontrast_input_norm(opt: Any, in_channels: int, what: str) -> InputStats:
    """The statistics SupContrast's ``set_loader`` (main_supcon.py) normalized with, read
    from a checkpoint's ``opt``: fixed CIFAR-10/100 values, or for ``--dataset path``
    ``eval(opt.mean)`` / ``eval(opt.std)`` (read here with ``ast.literal_eval``; a single
    number, as ``transforms.Normalize`` broadcasts it, counts for every channel)."""
    dataset = _opt_value(opt, "dataset") if opt is not None else None
    if dataset in _SUPCONTRAST_DATASETS:
        name = _SUPCONTRAST_DATASETS[dataset]
        mean, std = INPUT_NORMS[name]
        return InputStats(mean, std, f"opt.dataset={dataset}", _DEFAULT_DATA[name], from_flag=False)
    if dataset != "path":
        found = "no opt.dataset" if dataset is None else f"opt.dataset={dataset!r}"
        raise CheckpointError(
            f"{what}: cannot tell which input normalization the teacher was trained with "
            f"({found}; expected cifar10, cifar100 or path); give --input-norm "
            f"{'|'.join(INPUT_NORMS)}|m1,m2,m3/s1,s2,s3 (or none)"
        )
    stats = []
    for key in ("mean", "std"):
        raw = _opt_value(opt, key)
        try:
            value = ast.literal_eval(raw) if isinstance(raw, str) else raw
        except (ValueError, SyntaxError):
            value = None
        # transforms.Normalize broadcasts a single number (or a 1-tuple) over the channels.
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            value = (value,)
        if isinstance(value, tuple | list) and len(value) == 1:
            value = tuple(value) * in_channels
        if not isinstance(value, tuple | list):
            raise CheckpointError(
                f"{what}: opt.{key} = {raw!r} is not a tuple of numbers (opt.dataset=path); "
                "give --input-norm m1,m2,m3/s1,s2,s3"
            )
        stats.append(list(value))
    mean, std = stats
    _check_stats(mean, std, f"{what}: opt.mean/opt.std", f"{mean}/{std}")
    return InputStats(
        tuple(map(float, mean)),
        tuple(map(float, std)),
        f"opt.dataset=path, opt.mean={_opt_value(opt, 'mean')}, opt.std={_opt_value(opt, 'std')}",
        from_flag=False,
    )


def check_data_name(data: str | None) -> None:
    """``UserError`` naming ``--data`` unless ``data`` is None or a key of supkd's
    ``NORMALIZATION`` (the data sets with fixed statistics)."""
    from supkd.data.datasets import NORMALIZATION

    if data is not None and data not in NORMALIZATION:
        raise UserError(
            f"--data: expected the supkd data set the teacher will be distilled on, one of "
            f"{', '.join(NORMALIZATION)}, got {data!r}"
        )


def input_affine_between(
    teacher_mean: Sequence[float],
    teacher_std: Sequence[float],
    data_mean: Sequence[float],
    data_std: Sequence[float],
) -> dict[str, list[float]] | None:
    """``{"scale", "shift"}`` turning data-normalized inputs into teacher-normalized ones:
    ``scale = std_d / std_t``, ``shift = (mean_d - mean_t) / std_t`` per channel (see
    :class:`supkd.models.InputAffine`); None when the statistics agree within 1e-6."""
    if all(
        abs(a - b) <= STATS_ATOL
        for a, b in zip([*teacher_mean, *teacher_std], [*data_mean, *data_std])
    ):
        return None
    return {
        "scale": [sd / st for sd, st in zip(data_std, teacher_std)],
        "shift": [(md - mt) / st for md, mt, st in zip(data_mean, teacher_mean, teacher_std)],
    }


def _compose(
    outer: dict[str, list[float]] | None, inner: dict[str, list[float]] | None
) -> dict[str, list[float]] | None:
    """``outer(inner(x))`` as one affine: a supkd run that already corrects its inputs
    (outer) re-targeted to another data set (inner)."""
    if outer is None or inner is None:
        return outer if inner is None else inner
    return {
        "scale": [so * si for so, si in zip(outer["scale"], inner["scale"])],
        "shift": [
            so * bi + bo for so, bo, bi in zip(outer["scale"], outer["shift"], inner["shift"])
        ],
    }


def _with_input_affine(net: nn.Module, affine: dict[str, list[float]] | None) -> nn.Module:
    """The same network rebuilt with ``input_affine`` (weights copied strictly)."""
    from supkd.models import create_model

    spec = {k: v for k, v in net.spec.items() if k != "input_affine"}
    if affine is not None:
        spec["input_affine"] = affine
    new = create_model(**spec)
    new.load_state_dict(net.state_dict())
    return new.eval()


def _apply_input_norm(
    imp: ImportedTeacher, norm: str | InputStats, opt: Any, data: str | None, what: str
) -> ImportedTeacher:
    """Resolve ``norm`` for ``imp`` and give its model the matching ``input_affine``."""
    from supkd.data.datasets import NORMALIZATION

    net = imp.model
    spec = net.spec
    in_channels = int(spec.get("in_channels", 3))
    own = spec.get("input_affine")  # a supkd run that was itself imported and corrected
    if norm == "auto":
        if imp.format == "supcontrast":
            norm = supcontrast_input_norm(opt, in_channels, what)
        elif imp.format == "torchvision":
            mean, std = INPUT_NORMS["imagenet"]
            norm = InputStats(mean, std, "torchvision weights: imagenet", "imagefolder", False)
    if not isinstance(norm, InputStats):
        source = "--input-norm none" if norm == "none" else "supkd run (auto)"
        imp.input_norm = {"mean": None, "std": None, "source": source}
        imp.data = data
        imp.input_affine = own
        why = (
            "a supkd run is trained on supkd's normalization"
            if norm == "auto"
            else "--input-norm none: the teacher sees supkd's normalization of the data"
        )
        kept = f"; keeps its own x * {_fmt(own['scale'])} + {_fmt(own['shift'])}" if own else ""
        imp.input_note = f"input normalization: not corrected ({why}){kept}"
        return imp
    if len(norm.mean) != in_channels:
        where = "--input-norm" if norm.from_flag else f"{what}: {norm.source}"
        error = UserError if norm.from_flag else CheckpointError
        raise error(
            f"{where}: gives {len(norm.mean)} values per statistic, the teacher takes "
            f"{in_channels}-channel images"
        )
    target = data or norm.default_data
    if target is None:
        raise UserError(
            f"--data: needed to correct the teacher's input normalization (mean "
            f"{_fmt(norm.mean)}, std {_fmt(norm.std)} from {norm.source}); expected the supkd "
            f"data set it will be distilled on, one of {', '.join(NORMALIZATION)}"
        )
    data_mean, data_std = NORMALIZATION[target]
    if len(data_mean) != in_channels:
        raise UserError(
            f"--data {target}: has {len(data_mean)}-channel images, the teacher takes "
            f"{in_channels}-channel images"
        )
    step = input_affine_between(norm.mean, norm.std, data_mean, data_std)
    affine = _compose(own, step)
    imp.input_norm = {"mean": list(norm.mean), "std": list(norm.std), "source": norm.source}
    imp.data = target
    imp.input_affine = affine
    if step is None:
        kept = f"; keeps its own x * {_fmt(own['scale'])} + {_fmt(own['shift'])}" if own else ""
        imp.input_note = (
            f"input normalization: no correction needed, the teacher's statistics "
            f"({norm.source}) equal supkd's {target}{kept}"
        )
    else:
        imp.model = _with_input_affine(net, affine)
        imp.input_note = (
            f"input normalization: teacher trained with mean {_fmt(norm.mean)} std "
            f"{_fmt(norm.std)} ({norm.source}), supkd's {target} uses mean {_fmt(data_mean)} "
            f"std {_fmt(data_std)}: inputs corrected by x * {_fmt(affine['scale'])} + "
            f"{_fmt(affine['shift'])}"
        )
    return imp


def _detect(source: str | Path) -> tuple[str, dict[str, torch.Tensor] | None, Any]:
    """(format, state dict or None, the loaded object or None); see :func:`detect_format`."""
    p = Path(source)
    if p.is_dir():
        return "run", None, None
    obj = load_checkpoint_file(p)
    if isinstance(obj, Mapping) and "spec" in obj:
        return "run", None, obj
    state = unwrap_state_dict(obj, str(p))
    if any(k.startswith("encoder.") for k in state):
        return "supcontrast", state, obj
    if "conv1.weight" in state:
        return "torchvision", state, obj
    raise CheckpointError(
        f"{p}: cannot tell the format (no 'encoder.*' or 'conv1.weight' keys); "
        "give --format supcontrast|torchvision|run"
    )


def detect_format(source: str | Path) -> tuple[str, dict[str, torch.Tensor] | None]:
    """Guess the format of ``source``: a folder is a supkd run; a file's keys decide
    between SupContrast (``encoder.*``) and torchvision (``conv1.weight`` at top level)."""
    fmt, state, _ = _detect(source)
    return fmt, state


def import_teacher(
    source: str | Path,
    *,
    arch: str | None = None,
    stem: str | None = None,
    fmt: str = "auto",
    classifier: str | Path | None = None,
    num_classes: int | None = None,
    input_norm: str | tuple[Sequence[float], Sequence[float]] = "auto",
    data: str | None = None,
) -> ImportedTeacher:
    """Import a teacher from ``source`` in format ``fmt`` (see the module docstring).

    ``input_norm``: the statistics the teacher was trained with: ``auto`` (SupContrast: from
    the checkpoint's ``opt.dataset``; torchvision: ``imagenet``; run: none), ``none`` (no
    correction), a name in :data:`INPUT_NORMS`, ``"m1,m2,m3/s1,s2,s3"`` or a ``(mean, std)``
    pair. ``data``: the supkd data set (a ``NORMALIZATION`` key) it will be distilled on;
    default: the one the named statistics belong to. When the two differ the model gets the
    ``input_affine`` that converts supkd's inputs into the teacher's. Bad files raise
    ``CheckpointError``; bad ``input_norm`` / ``data`` values ``UserError`` naming the flag.
    """
    if fmt not in FORMATS:
        raise CheckpointError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    norm = parse_input_norm(input_norm)
    check_data_name(data)
    if not Path(source).exists():
        raise CheckpointError(f"{source}: no such file or folder")
    state = None
    obj = None
    if fmt == "auto":
        fmt, state, obj = _detect(source)
    if classifier is not None and fmt != "supcontrast":
        raise CheckpointError(f"--classifier: only used with --format supcontrast, not {fmt}")
    if fmt == "supcontrast":
        if state is None:
            obj = load_checkpoint_file(source)
            state = unwrap_state_dict(obj, str(source))
        imp = import_supcontrast(
            source,
            arch=arch,
            stem=stem,
            classifier=classifier,
            num_classes=num_classes,
            state=state,
        )
    elif fmt == "torchvision":
        imp = import_torchvision(source, arch=arch, stem=stem, num_classes=num_classes, state=state)
    else:
        imp = import_run(source, arch=arch, stem=stem)
    opt = obj.get("opt") if isinstance(obj, Mapping) else None
    return _apply_input_norm(imp, norm, opt, data, str(source))

"""Input normalization of imported teachers.

A foreign teacher was trained on images normalized with its own statistics (mu_t,
sigma_t), while supkd's loaders normalize with the statistics of the data set it is
distilled on (mu_d, sigma_d; ``supkd.data.datasets.NORMALIZATION``). When they differ, the
imported model gets ``input_affine`` (scale = sigma_d / sigma_t, shift = (mu_d - mu_t) /
sigma_t per channel; :class:`supkd.models.InputAffine`), so on supkd's inputs it computes
exactly what it computed in its own training. The teacher's statistics come from
``input_norm``: ``auto`` reads them from a SupContrast checkpoint's ``opt`` (as its
``set_loader`` does), takes ImageNet's for torchvision weights, and none for a supkd run.
"""

from __future__ import annotations

import ast
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from supkd.data.datasets import NORMALIZATION
from supkd.errors import CheckpointError, UserError
from supkd.importers.common import ImportedTeacher
from supkd.models import create_model
from supkd.models.input_affine import (  # one formula for every importer and model family
    STATS_ATOL,  # noqa: F401  (re-exported: it was defined here)
    input_affine_between,
)

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
    if data is not None and data not in NORMALIZATION:
        raise UserError(
            f"--data: expected the supkd data set the teacher will be distilled on, one of "
            f"{', '.join(NORMALIZATION)}, got {data!r}"
        )


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
    spec = {k: v for k, v in net.spec.items() if k != "input_affine"}
    if affine is not None:
        spec["input_affine"] = affine
    new = create_model(**spec)
    new.load_state_dict(net.state_dict())
    return new.eval()


def apply_input_norm(
    imp: ImportedTeacher, norm: str | InputStats, opt: Any, data: str | None, what: str
) -> ImportedTeacher:
    """Resolve ``norm`` for ``imp`` and give its model the matching ``input_affine``."""
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

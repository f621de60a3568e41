"""Import teachers trained elsewhere into supkd models (the importers floor, beside train).

These sources are understood:

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
- ``repdistiller``: a teacher of RepDistiller / mdistiller (``{"model", "epoch",
  "accuracy", "optimizer"}``, ``<arch>_vanilla/ckpt_epoch_240.pth``) for a model of the KD
  zoo (:mod:`supkd.models.zoo`; :mod:`supkd.importers.repdistiller`).
- ``timm``: a timm model's weights file (``.safetensors`` / ``.pth``) for a named timm
  architecture (:func:`import_timm`; ``supkd import-teacher --timm NAME --weights FILE``),
  its normalization read from timm's pretrained config.

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

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from supkd.errors import CheckpointError
from supkd.importers.common import (
    ImportedTeacher,
    read_checkpoint,
    strip_module_prefix,
    unwrap_state_dict,
)
from supkd.importers.input_norm import (
    INPUT_NORM_CHOICES,
    INPUT_NORMS,
    InputStats,
    apply_input_norm,
    check_data_name,
    input_affine_between,
    parse_input_norm,
    supcontrast_input_norm,
)
from supkd.importers.repdistiller import (
    import_repdistiller,
    looks_like_repdistiller,
    repdistiller_input_norm,
)
from supkd.importers.run import import_run
from supkd.importers.supcontrast import import_supcontrast, supcontrast_to_torchvision
from supkd.importers.timm_weights import import_timm
from supkd.importers.torchvision_weights import import_torchvision

__all__ = [
    "FORMATS",
    "INPUT_NORMS",
    "INPUT_NORM_CHOICES",
    "ImportedTeacher",
    "InputStats",
    "detect_format",
    "import_repdistiller",
    "import_run",
    "import_supcontrast",
    "import_teacher",
    "import_timm",
    "import_torchvision",
    "input_affine_between",
    "parse_input_norm",
    "strip_module_prefix",
    "supcontrast_input_norm",
    "supcontrast_to_torchvision",
    "unwrap_state_dict",
]

FORMATS = ("auto", "supcontrast", "torchvision", "run", "repdistiller")


def _detect(source: str | Path) -> tuple[str, dict[str, torch.Tensor] | None, Any]:
    """(format, state dict or None, the loaded object or None); see :func:`detect_format`."""
    p = Path(source)
    if p.is_dir():
        return "run", None, None
    obj = read_checkpoint(p)
    if isinstance(obj, Mapping) and "spec" in obj:
        return "run", None, obj
    state = unwrap_state_dict(obj, str(p))
    if any(k.startswith("encoder.") for k in state):
        return "supcontrast", state, obj
    if looks_like_repdistiller(obj, state):
        return "repdistiller", state, obj
    if "conv1.weight" in state:
        return "torchvision", state, obj
    raise CheckpointError(
        f"{p}: cannot tell the format (no 'encoder.*' or 'conv1.weight' keys); "
        "give --format supcontrast|torchvision|run|repdistiller"
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
            obj = read_checkpoint(source)
            state = unwrap_state_dict(obj, str(source))
        imp = import_supcontrast(
            source,
            arch=arch,
            stem=stem,
            classifier=classifier,
            num_classes=num_classes,
            state=state,
        )
    elif fmt == "repdistiller":
        if stem is not None:
            raise CheckpointError("--stem: not used with --format repdistiller (the zoo "
                                  "architecture fixes it)")
        imp = import_repdistiller(source, arch=arch, num_classes=num_classes, obj=obj)
        if norm == "auto":
            norm = repdistiller_input_norm()
    elif fmt == "torchvision":
        imp = import_torchvision(source, arch=arch, stem=stem, num_classes=num_classes, state=state)
    else:
        imp = import_run(source, arch=arch, stem=stem)
    opt = obj.get("opt") if isinstance(obj, Mapping) else None
    return apply_input_norm(imp, norm, opt, data, str(source))

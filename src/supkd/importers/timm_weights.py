"""timm weights as a teacher: ``supkd import-teacher --timm NAME --weights FILE``.

The weights file (``.safetensors`` or ``.pth``: a timm model's ``state_dict()``, e.g. a
``model.safetensors`` from the Hugging Face Hub or the user's own fine-tuned network) is
loaded into ``create_model("timm/NAME", pretrained=FILE)`` (timm's pretrained-config file
override, :mod:`supkd.models.timm_models`). Its classifier is kept when the file has one
(``--num-classes`` may only confirm its size; another size gets a fresh classifier, and the
teacher then has no trained logits). Its input normalization is, with ``--input-norm auto``,
the one in timm's pretrained config of the architecture (``pretrained_cfg["mean"/"std"]``:
ImageNet's for most CNNs, 0.5 for many ViTs), corrected exactly onto ``--data``'s statistics
by :func:`supkd.importers.input_norm.apply_input_norm`, as for the other importers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from supkd.data.spec import DATASETS
from supkd.errors import CheckpointError, UserError
from supkd.importers.common import ImportedTeacher
from supkd.importers.input_norm import (
    _DEFAULT_DATA,
    INPUT_NORMS,
    InputStats,
    apply_input_norm,
    check_data_name,
    parse_input_norm,
)
from supkd.models import create_model
from supkd.models.files import read_torch_file
from supkd.models.input_affine import STATS_ATOL
from supkd.models.timm_models import pretrained_stats, weights_num_classes

__all__ = ["import_timm"]


def _check_architecture(model: str, weights: Path, timm_args: dict[str, Any]) -> None:
    """CheckpointError naming --weights and --timm when the file's tensors are not those
    of ``model`` (a file without the architecture's classifier may be a file of another
    architecture: then "has no classifier" would point the wrong way)."""
    if weights.suffix.lower() == ".safetensors":
        try:
            from safetensors import safe_open  # a dependency of timm

            with safe_open(str(weights), framework="pt") as f:
                keys = set(f.keys())
        except Exception:
            return  # unreadable: the load that follows says so
    else:
        state = read_torch_file(weights, "--weights")
        state = state.get("state_dict", state.get("model", state))
        keys = set(state) if isinstance(state, dict) else set()
    keys = {k.removeprefix("module.") for k in keys}
    try:
        net = create_model(model, num_classes=1, in_channels=3, timm_args=timm_args)
    except ValueError:
        return  # the build that follows names the argument
    # supkd's wrapper holds timm's network as encoder.net (its own head and classifier
    # around it); the file holds timm's names.
    own = {k.removeprefix("encoder.net.") for k in net.state_dict()
           if k.startswith("encoder.net.")} or set(net.state_dict())
    common = keys & own
    if keys and len(common) < 0.5 * min(len(keys), len(own)):
        example = sorted(keys - own)[:1]
        raise CheckpointError(
            f"--weights {weights}: does not hold weights of --timm {model.partition('/')[2]} "
            f"({len(common)} of its {len(keys)} tensors have that network's names"
            + (f", e.g. it has {example[0]!r}" if example else "")
            + "); pass the --timm architecture the file was saved from")


def _model_name(name: str) -> str:
    return name if name.startswith("timm/") else f"timm/{name}"


def _auto_stats(net: Any, arch: str, in_channels: int) -> InputStats:
    """The statistics in timm's pretrained config of ``arch``, with the supkd data set they
    belong to when they are ImageNet's (so ``--data`` may be left out then)."""
    try:
        mean, std = pretrained_stats(net.encoder.net, in_channels)
    except ValueError as exc:
        raise UserError(f"--input-norm auto: {exc}") from None
    known = None
    for key, (m, s) in INPUT_NORMS.items():
        if len(m) == len(mean) and all(
            abs(a - b) <= STATS_ATOL for a, b in zip([*m, *s], [*mean, *std])
        ):
            known = _DEFAULT_DATA[key]
    return InputStats(tuple(mean), tuple(std), f"timm pretrained_cfg of {arch}", known,
                      from_flag=False)


def import_timm(
    name: str,
    weights: str | Path,
    *,
    num_classes: int | None = None,
    timm_args: Mapping[str, Any] | None = None,
    input_norm: str | tuple = "auto",
    data: str | None = None,
) -> ImportedTeacher:
    """A teacher from timm weights: ``create_model("timm/NAME", pretrained=weights)`` with
    the file's classifier, its input normalization corrected onto ``data``'s.

    ``num_classes``: required when the file has no classifier; else it must equal the
    file's, or the classifier is replaced by a fresh one (noted). ``data``: the supkd data
    set it will be distilled on (its channels are the model's ``in_channels``). Raises
    CheckpointError (file) or UserError (flags).
    """
    model = _model_name(name)
    norm = parse_input_norm(input_norm)
    check_data_name(data)
    what = str(weights)
    try:
        file_classes = weights_num_classes(model, weights)
    except ValueError as exc:
        raise UserError(f"--timm {name}: {exc}") from None
    if num_classes is not None and num_classes < 1:
        raise UserError(f"--num-classes: expected an integer >= 1, got {num_classes}")
    n = num_classes or file_classes
    if not file_classes:
        _check_architecture(model, Path(weights), dict(timm_args or {}))
    if not n:
        raise CheckpointError(f"--weights {what}: has no classifier; give --num-classes N")
    in_channels = DATASETS[data].channels if data is not None else 3
    try:
        net = create_model(model, num_classes=n, in_channels=in_channels,
                           timm_args=dict(timm_args or {}), pretrained=str(weights))
    except ValueError as exc:
        raise UserError(f"--timm {name}: {exc}") from None
    except CheckpointError as exc:  # the model layer names its config field; here a flag
        raise CheckpointError(str(exc).replace("model.pretrained", "--weights", 1)) from None
    net.eval()
    notes = []
    if file_classes and file_classes != n:
        notes.append(f"{what}: its classifier has {file_classes} classes, --num-classes is "
                     f"{n}: the teacher got a fresh (untrained) classifier")
    imp = ImportedTeacher(
        model=net,
        format="timm",
        arch=model,
        stem="",
        num_classes=n,
        has_classifier=file_classes == n,
        has_head=False,
        sources=[what],
        notes=notes,
    )
    if norm == "auto":
        norm = _auto_stats(net, model.partition("/")[2], in_channels)
    return apply_input_norm(imp, norm, None, data, what)

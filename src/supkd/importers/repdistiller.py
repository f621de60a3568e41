"""Teachers of the KD benchmark's code bases: RepDistiller (HobbitLong/RepDistiller,
``train_teacher.py``) and mdistiller (megvii-research/mdistiller, which loads the same files).

Format: ``torch.save({"epoch": int, "model": state_dict, "accuracy": test top-1 (a float or
0-d tensor), "optimizer": ...})``, published as ``<arch>_vanilla/ckpt_epoch_240.pth``
(mdistiller's own runs: ``best_acc`` instead of ``accuracy``; its ``student_*`` files hold
``{"model": ...}`` only, a ``latest`` file the distiller's ``student.*`` keys). Read with
``weights_only`` (a file that needs pickled code is refused with one line).

The state dict's keys are those of their model definitions, which the zoo
(:mod:`supkd.models.zoo`) keeps: every key maps to ``encoder.<key>``, except their final
Linear (``fc``, ``linear``, ``classifier``, ``classifier.0``), which maps to supkd's
``classifier``; their ``ResNet18``/``ResNet50`` (supkd's ResNets) also rename the projection
shortcut ``shortcut`` to ``downsample``. The architecture comes from ``arch`` or from the
parent folder's name as both repositories name it (``resnet32x4_vanilla`` -> ``resnet32x4``,
RepDistiller's ``get_teacher_name``).

Inputs: both train on CIFAR-100 normalized with :data:`CIFAR100_STATS` (RepDistiller's
``dataset/cifar100.py``); :func:`supkd.importers.input_norm.apply_input_norm` corrects them
exactly onto supkd's CIFAR-100 statistics.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from supkd.errors import CheckpointError
from supkd.importers.common import ImportedTeacher, read_checkpoint, unwrap_state_dict
from supkd.importers.input_norm import InputStats
from supkd.models import create_model
from supkd.models.weights import state_dict_mismatch
from supkd.models.zoo import ZOO_CLASSES, zoo_names

__all__ = [
    "CIFAR100_STATS",
    "arch_from_path",
    "import_repdistiller",
    "looks_like_repdistiller",
    "repdistiller_input_norm",
    "repdistiller_to_supkd",
]

#: RepDistiller's ``dataset/cifar100.py`` (mdistiller's ``dataset/cifar100.py``): mean, std.
CIFAR100_STATS = ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))

#: zoo name -> the key prefix of their final Linear
_CLASSIFIER = {name: "fc" for name in zoo_names()} | {
    **{f"vgg{d}": "classifier" for d in (8, 11, 13, 16, 19)},
    "MobileNetV2": "classifier.0",
    "ShuffleV1": "linear",
    "ShuffleV2": "linear",
    "ResNet18": "linear",
    "ResNet50": "linear",
}
#: zoo names whose supkd model is supkd's ResNet (torchvision's ``downsample`` naming)
_SHORTCUT_RENAMED = ("ResNet18", "ResNet50")
#: keys only their layouts have (so a file without ``accuracy`` is still recognized)
_TELL_TALE = (r"^block0\.0\.weight$", r"^blocks\.0\.0\.conv\.0\.weight$",
              r"^block1\.layer\.0\.", r"^linear\.weight$", r"^model\.0\.0\.weight$",
              r"^layer3\.", r"\.shortcut\.0\.weight$")


def repdistiller_input_norm() -> InputStats:
    """Their CIFAR-100 statistics, for ``--input-norm auto``."""
    mean, std = CIFAR100_STATS
    return InputStats(mean, std, "RepDistiller/mdistiller CIFAR-100 statistics", "cifar100",
                      from_flag=False)


def arch_from_path(path: str | Path) -> str | None:
    """The zoo name the parent folder starts with (``wrn_40_2_vanilla`` -> ``wrn_40_2``;
    the longest match, so ``resnet8x4_...`` is not ``resnet8``), or None."""
    folder = Path(path).resolve().parent.name
    found = [n for n in zoo_names() if folder == n or folder.startswith(n + "_")]
    return max(found, key=len) if found else None


def _state_of(obj: Any, what: str) -> dict[str, torch.Tensor]:
    state = unwrap_state_dict(obj, what)
    if state and all(k.startswith(("student.", "teacher.")) for k in state):
        # an mdistiller distiller's state dict: the student is the network trained
        state = {k[len("student."):]: v for k, v in state.items() if k.startswith("student.")}
    return state


def looks_like_repdistiller(obj: Any, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a loaded checkpoint is theirs: ``model`` beside ``accuracy``/``best_acc``, or
    keys that only their layouts have (a CIFAR ResNet's three stages, ``linear``, ...)."""
    if isinstance(obj, Mapping) and "model" in obj and ("accuracy" in obj or "best_acc" in obj):
        return True
    if any(k.startswith("encoder.") for k in state):
        return False
    if any(k.startswith("layer4.") for k in state) and "fc.weight" in state:
        return False  # a torchvision ResNet
    return any(re.search(p, k) for p in _TELL_TALE for k in state)


def repdistiller_to_supkd(arch: str, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Their state dict -> the zoo model's (``encoder.*``, ``classifier.*``)."""
    prefix = _CLASSIFIER[arch] + "."
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(prefix):
            out["classifier." + k[len(prefix):]] = v
            continue
        if arch in _SHORTCUT_RENAMED:
            k = k.replace(".shortcut.", ".downsample.")
        out["encoder." + k] = v
    return out


def _recorded(obj: Any) -> dict[str, Any]:
    """The file's own ``accuracy`` (or mdistiller's ``best_acc``) and ``epoch``, as numbers."""
    rec: dict[str, Any] = {"accuracy": None, "epoch": None}
    if not isinstance(obj, Mapping):
        return rec
    for key in ("accuracy", "best_acc"):
        value = obj.get(key)
        if torch.is_tensor(value) and value.numel() == 1:
            value = value.item()
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            rec["accuracy"] = float(value)
            break
    epoch = obj.get("epoch")
    if torch.is_tensor(epoch) and epoch.numel() == 1:
        epoch = epoch.item()
    if isinstance(epoch, numbers.Integral) and not isinstance(epoch, bool):
        rec["epoch"] = int(epoch)
    return rec


def _in_channels(arch: str, mapped: Mapping[str, torch.Tensor], what: str) -> int:
    """Input channels of the file's stem conv (the first 4-d weight of the zoo model)."""
    probe = create_model(arch, num_classes=ZOO_CLASSES[arch])
    first = next(k for k, v in probe.state_dict().items() if v.dim() == 4)
    if first not in mapped or mapped[first].dim() != 4:
        raise CheckpointError(f"{what}: no stem convolution {first.removeprefix('encoder.')!r} "
                              f"for a {arch}; is it a {arch} checkpoint? (--arch)")
    return int(mapped[first].shape[1])


def import_repdistiller(
    source: str | Path,
    *,
    arch: str | None = None,
    num_classes: int | None = None,
    obj: Any = None,
) -> ImportedTeacher:
    """A zoo model from a RepDistiller/mdistiller checkpoint (see the module docstring).

    ``arch``: a zoo name (default: from the parent folder). ``num_classes`` may only confirm
    the classifier's. Raises CheckpointError naming the file for a bad file, an unknown
    architecture or weights that do not fit it (the first missing/unexpected keys).
    """
    what = str(source)
    names = zoo_names()
    if arch is None:
        arch = arch_from_path(source)
        if arch is None:
            raise CheckpointError(
                f"{what}: cannot tell the architecture from the folder name "
                f"{Path(source).resolve().parent.name!r}; give --arch (one of {', '.join(names)})")
    elif arch not in names:
        raise CheckpointError(f"--arch {arch}: not a model of the KD zoo; expected one of "
                              f"{', '.join(names)}")
    if obj is None:
        obj = read_checkpoint(source)
    mapped = repdistiller_to_supkd(arch, _state_of(obj, what))
    weight = mapped.get("classifier.weight")
    if weight is None or weight.dim() != 2:
        raise CheckpointError(f"{what}: no classifier {_CLASSIFIER[arch]}.weight for a {arch}; "
                              "is it a checkpoint of that architecture? (--arch)")
    n = int(weight.shape[0])
    if num_classes is not None and num_classes != n:
        raise CheckpointError(f"{what}: classifier has {n} classes, but --num-classes "
                              f"{num_classes} was given")
    net = create_model(arch, num_classes=n, in_channels=_in_channels(arch, mapped, what))
    target = net.state_dict()
    inner = re.compile(r"^(encoder|classifier)\.")
    problem = state_dict_mismatch(target, mapped, name=lambda k: inner.sub("", k))
    if problem:
        raise CheckpointError(f"{what}: does not fit a {arch} ({problem})")
    net.load_state_dict(mapped, strict=True)
    net.eval()
    rec = _recorded(obj)
    notes = [] if rec["accuracy"] is not None else [f"{what}: records no accuracy"]
    return ImportedTeacher(
        model=net, format="repdistiller", arch=arch, stem="", num_classes=n,
        has_classifier=True, has_head=False, sources=[what], notes=notes, recorded=rec,
    )

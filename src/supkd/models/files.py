"""Model files: ``model.pt`` (what teachers are loaded from) and the one safe ``torch.load``.

``model.pt`` (``format: "supkd-model"``) holds the final weights of a run, the ``spec`` that
rebuilds the network (``supkd.models.create_model(**spec)``) and ``info`` (which task
trained it and which parts are trained: ``{"task": "supcon", "trained": ["encoder",
"head"]}``). A training checkpoint (``checkpoints/last.pt``, ``format:
"supkd-checkpoint"``, written by :mod:`supkd.train.checkpoint`) is also loadable as a model.

Every file is read by :func:`read_torch_file` with ``weights_only=True``: no pickled code
runs when a teacher from elsewhere is loaded, and every way a read can fail is one
:class:`supkd.errors.CheckpointError` line naming the file.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from supkd.errors import CheckpointError
from supkd.models.registry import create_model
from supkd.models.weights import state_dict_mismatch
from supkd.utils.atomic import atomic_torch_save

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODEL_FORMAT",
    "ModelRecord",
    "load_model",
    "load_model_record",
    "load_state_dict_strict",
    "read_torch_file",
    "resolve_model_file",
    "save_model",
]

MODEL_FORMAT = "supkd-model"
CHECKPOINT_FORMAT = "supkd-checkpoint"
FORMAT_VERSION = 1


def _looks_like_torch_file(path: Path) -> bool:
    """Whether the file starts as ``torch.save`` writes: a zip archive (the default since
    torch 1.6), or a pickle (protocol 2-5, the legacy format); random bytes, text or an
    image would otherwise read as a pickle a safe load refuses, a trust problem they are not."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return True  # torch.load reports it
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80
                                              and 2 <= head[1] <= 5)


def read_torch_file(
    path: str | os.PathLike[str],
    what: str = "checkpoint",
    *,
    allow: Sequence[type] = (),
    expect_dict: bool = True,
) -> Any:
    """``torch.load`` a file on CPU with ``weights_only=True`` (``allow``: extra classes a
    safe load may rebuild, e.g. SupContrast's ``argparse.Namespace`` options).

    Raises CheckpointError, one line naming ``what`` and the file: a folder, a missing or
    empty file, a truncated or corrupt one, a pickled object a safe load refuses, or (with
    ``expect_dict``) anything but a dict.
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{what} {p}: is a folder, expected a file")
    if not p.is_file():
        raise CheckpointError(f"{what} {p}: not found")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{what} {p}: cannot be read: empty file (0 bytes)")
    if not _looks_like_torch_file(p):
        raise CheckpointError(f"{what} {p}: is not a checkpoint (neither torch.save's zip "
                              f"format nor a pickle; {size} bytes of something else)")
    try:
        with torch.serialization.safe_globals(list(allow)):
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except (EOFError, RuntimeError, OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        first = str(exc).splitlines()[0].split(". ")[0][:80] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"{what} {p}: cannot be read: truncated or corrupt ({size} bytes; {first})"
        ) from None
    except Exception as exc:  # weights_only refuses pickled objects with UnpicklingError
        refused = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        shown = f" ({refused.group(1)})" if refused else ""
        raise CheckpointError(
            f"{what} {p}: cannot be read safely: it holds a pickled Python object{shown} "
            "that a safe load refuses; save the model's state_dict() instead"
        ) from None
    if expect_dict and not isinstance(obj, dict):
        raise CheckpointError(f"{what} {p}: expected a dict, got {type(obj).__name__}")
    return obj


@dataclass
class ModelRecord:
    """A loaded model with what its file says about it."""

    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the file read
    run_dir: Path | None = None  # the run directory holding it, when there is one
    #: set when the file is a training checkpoint rather than a finished run's model.pt:
    #: ``"checkpoints/last.pt after epoch 3 of 10"`` (what a distillation from it should say)
    unfinished: str | None = None

    @property
    def trained_parts(self) -> set[str]:
        """Parts trained by the run (``encoder``, ``head``, ``classifier``); all of them when
        the file does not say (e.g. a model saved by hand)."""
        parts = self.info.get("trained")
        return set(parts) if parts is not None else {"encoder", "head", "classifier"}


def cpu_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module.state_dict()`` (what files store)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def save_model(path: str | os.PathLike[str], model: nn.Module, info: dict[str, Any]) -> Path:
    """Write ``model.pt``: weights, ``model.spec`` and ``info``. ``model`` must have ``spec``."""
    spec = getattr(model, "spec", None)
    if not isinstance(spec, dict):
        raise ValueError("save_model: the model has no 'spec' dict (not a supkd model)")
    return atomic_torch_save(
        {
            "format": MODEL_FORMAT,
            "version": FORMAT_VERSION,
            "spec": dict(spec),
            "state_dict": cpu_state_dict(model),
            "info": dict(info),
        },
        path,
    )


def load_state_dict_strict(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """``load_state_dict`` that raises CheckpointError listing the first missing/unexpected
    keys and shape mismatches (one line)."""
    problem = state_dict_mismatch(model.state_dict(), state)
    if problem is not None:
        raise CheckpointError(f"{source}: weights do not fit the model: {problem}")
    model.load_state_dict(state)


def resolve_model_file(path: str | os.PathLike[str]) -> tuple[Path, Path | None]:
    """(file to read, run directory or None) for a run directory, ``model.pt`` or ``last.pt``."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "model.pt", p / "checkpoints" / "last.pt"):
            if cand.is_file():
                return cand, p
        raise CheckpointError(
            f"run directory {p}: has no model.pt or checkpoints/last.pt (did the run finish?)"
        )
    if not p.exists():
        raise CheckpointError(f"model file {p}: not found")
    run_dir = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    if not (run_dir / "config.yaml").is_file() and not (run_dir / "model.pt").is_file():
        run_dir = None
    return p, run_dir


def load_model_record(path: str | os.PathLike[str]) -> ModelRecord:
    """Load a supkd model (on CPU) from a run directory, ``model.pt`` or ``last.pt``."""
    file, run_dir = resolve_model_file(path)
    obj = read_torch_file(file, "model file")
    fmt = obj.get("format")
    if fmt == MODEL_FORMAT:
        state, spec = obj.get("state_dict"), obj.get("spec")
    elif fmt == CHECKPOINT_FORMAT:
        state, spec = obj.get("model"), obj.get("spec")
    else:
        raise CheckpointError(
            f"model file {file}: not a supkd model or checkpoint (no supkd 'format' key); "
            "bring weights from elsewhere in with `supkd import-teacher`"
        )
    if not isinstance(spec, dict) or not isinstance(state, dict):
        raise CheckpointError(f"model file {file}: 'spec' or weights missing")
    try:
        model = create_model(**spec)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"model file {file}: bad model spec {spec}: {exc}") from None
    load_state_dict_strict(model, state, f"model file {file}")
    model.eval()
    info = obj.get("info") if isinstance(obj.get("info"), dict) else {}
    unfinished = _checkpoint_progress(obj, file) if fmt == CHECKPOINT_FORMAT else None
    return ModelRecord(model=model, info=info, path=file, run_dir=run_dir, unfinished=unfinished)


def _checkpoint_progress(ck: dict[str, Any], file: Path) -> str:
    """``"<file> after epoch E of N"`` for a training checkpoint (N from its config)."""
    done = ck.get("epoch")
    cfg = ck.get("config") if isinstance(ck.get("config"), dict) else {}
    total = (cfg.get("train") or {}).get("epochs") if isinstance(cfg.get("train"), dict) else None
    where = f"{file.parent.name}/{file.name}" if file.parent.name == "checkpoints" else str(file)
    if isinstance(done, int) and isinstance(total, int):
        return f"{where} after epoch {done} of {total}"
    return f"{where} (a training checkpoint)"


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """The ``SupKDResNet`` stored in a run directory, a ``model.pt`` or a ``last.pt``, on CPU
    in eval mode. Raises CheckpointError (missing, truncated, other architecture)."""
    return load_model_record(path).model

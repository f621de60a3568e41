"""Model files and training checkpoints.

Two formats, both plain ``torch.save`` dicts readable with ``weights_only=True`` (no pickled
code runs when a teacher from elsewhere is loaded):

- ``model.pt`` (``format: "supkd-model"``): the final weights of a run, the ``spec`` that
  rebuilds the network (``supkd.models.create_model(**spec)``) and ``info`` (which task
  trained it and which parts are trained: ``{"task": "supcon", "trained": ["encoder",
  "head"]}``). Teachers are loaded from it.
- ``checkpoints/last.pt`` (``format: "supkd-checkpoint"``): everything a resumed run needs
  (model, optimizer, scheduler, scaler, EMA, task state, RNG states, position in the data);
  also loadable as a model.

Both are written through :func:`supkd.utils.atomic.atomic_torch_save`.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from supkd.errors import CheckpointError
from supkd.utils.atomic import atomic_torch_save

MODEL_FORMAT = "supkd-model"
CHECKPOINT_FORMAT = "supkd-checkpoint"
FORMAT_VERSION = 1


@dataclass
class ModelRecord:
    """A loaded model with what its file says about it."""

    model: nn.Module
    info: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the file read
    run_dir: Path | None = None  # the run directory holding it, when there is one

    @property
    def trained_parts(self) -> set[str]:
        """Parts trained by the run (``encoder``, ``head``, ``classifier``); all of them when
        the file does not say (e.g. a model saved by hand)."""
        parts = self.info.get("trained")
        return set(parts) if parts is not None else {"encoder", "head", "classifier"}


def _state_dict_cpu(module: nn.Module) -> dict[str, torch.Tensor]:
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
            "state_dict": _state_dict_cpu(model),
            "info": dict(info),
        },
        path,
    )


def read_torch_file(path: str | os.PathLike[str], what: str = "checkpoint") -> dict[str, Any]:
    """``torch.load`` a supkd file on CPU with ``weights_only=True``; CheckpointError when it
    is missing, truncated, or not a dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        raise CheckpointError(
            f"{what} {path}: cannot be read (truncated or not a torch file: "
            f"{str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})"
        ) from None
    except Exception as exc:  # weights_only refuses pickled objects with UnpicklingError
        raise CheckpointError(
            f"{what} {path}: cannot be read safely ({type(exc).__name__}); "
            "supkd files hold tensors and plain values only"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{what} {path}: expected a dict, got {type(obj).__name__}")
    return obj


def load_state_dict_strict(model: nn.Module, state: dict[str, Any], source: str) -> None:
    """``load_state_dict`` that raises CheckpointError listing the first missing/unexpected
    keys and shape mismatches (one line)."""
    from supkd.models.weights import state_dict_mismatch

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
    from supkd.models import create_model

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
    return ModelRecord(model=model, info=info, path=file, run_dir=run_dir)


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """The ``SupKDResNet`` stored in a run directory, a ``model.pt`` or a ``last.pt``, on CPU
    in eval mode. Raises CheckpointError (missing, truncated, other architecture)."""
    return load_model_record(path).model


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write a training checkpoint (``state`` as built by the engine) atomically."""
    return atomic_torch_save(
        {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, **state}, path
    )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`save_checkpoint`."""
    obj = read_torch_file(path, "checkpoint")
    if obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a supkd training checkpoint")
    return obj

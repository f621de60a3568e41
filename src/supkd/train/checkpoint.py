"""Training checkpoints: ``checkpoints/last.pt`` (and ``best.pt``).

A checkpoint (``format: "supkd-checkpoint"``) holds everything a resumed run needs (model,
optimizer, scheduler, scaler, EMA, task state, RNG states, position in the data); it is
also loadable as a model (``supkd.models.files.load_model``). Written through
:func:`supkd.utils.atomic.atomic_torch_save`, read by the one safe reader
:func:`supkd.models.files.read_torch_file`. Model files (``model.pt``) live in
:mod:`supkd.models.files`; their names are re-exported here for older imports.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from supkd.errors import CheckpointError
from supkd.models.files import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    MODEL_FORMAT,
    ModelRecord,
    load_model,
    load_model_record,
    load_state_dict_strict,
    read_torch_file,
    resolve_model_file,
    save_model,
)
from supkd.utils.atomic import atomic_torch_save

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODEL_FORMAT",
    "ModelRecord",
    "load_checkpoint",
    "load_model",
    "load_model_record",
    "load_state_dict_strict",
    "read_torch_file",
    "resolve_model_file",
    "save_checkpoint",
    "save_model",
]


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

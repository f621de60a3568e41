"""Training checkpoints: ``checkpoints/last.pt`` (and ``best.pt``).

A checkpoint (``format: "supkd-checkpoint"``) holds everything a resumed run needs (model,
optimizer, scheduler, scaler, EMA, task state, RNG states, position in the data); it is
also loadable as a model (``supkd.models.files.load_model``). Written through
:func:`supkd.utils.atomic.atomic_torch_save`, read by the one safe reader
:func:`supkd.models.files.read_torch_file`. Model files (``model.pt``) live in
:mod:`supkd.models.files`; their names are re-exported here for older imports.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

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
    "TrainCheckpoint",
    "load_checkpoint",
    "load_model",
    "load_model_record",
    "load_state_dict_strict",
    "read_checkpoint",
    "read_torch_file",
    "resolve_model_file",
    "save_checkpoint",
    "save_model",
]


@dataclass
class TrainCheckpoint:
    """Everything a resumed run needs to continue exactly: the state of the objects the
    loop trains, the RNG states, the position in the data and the epoch's meters so far.

    On disk it is one flat mapping (:meth:`to_dict`): these fields, then ``extra`` (e.g. the
    run's ``config``) at the same level, so that a checkpoint also loads as a model file
    (``model``, ``spec``, ``info``) and checkpoints written before this type existed, which
    have the same keys, still resume (:meth:`from_dict`).
    """

    # The objects trained (state dicts; scaler and ema None when the run has none).
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]  # supkd.train.seeding.rng_state()
    # Position: epoch in progress (0-based), optimizer steps done, steps done in the epoch.
    epoch: int
    step: int
    batch_in_epoch: int
    spec: dict[str, Any] | None = None  # supkd models carry one; others not
    info: dict[str, Any] | None = None  # task.model_info()
    task_state: dict[str, Any] = field(default_factory=dict)
    scaler: dict[str, Any] | None = None
    ema: dict[str, Any] | None = None
    # The interrupted epoch's meters: each loss part's sum (CPU tensors), images, seconds.
    epoch_sums: dict[str, torch.Tensor] = field(default_factory=dict)
    epoch_images: int = 0
    epoch_time_s: float = 0.0
    # Accuracies (%) so far and the wall time of the run before this checkpoint.
    best_val_acc: float | None = None
    test_acc: float | None = None
    val_acc: float | None = None
    wall_time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping written to disk (``extra``'s keys at the top level)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extra"}
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "checkpoint") -> TrainCheckpoint:
        """The record of a flat checkpoint mapping; optional keys an older checkpoint lacks
        take their defaults; CheckpointError names a missing required key."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        for f in dataclasses.fields(cls):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and f.name not in data:
                raise CheckpointError(f"{where}: has no '{f.name}' (not a complete checkpoint)")
        known = {k: v for k, v in data.items() if k in names and v is not None}
        extra = {k: v for k, v in data.items()
                 if k not in names and k not in ("format", "version")}
        return cls(**known, extra=extra)


def save_checkpoint(path: str | os.PathLike[str],
                    state: TrainCheckpoint | dict[str, Any]) -> Path:
    """Write a training checkpoint (a :class:`TrainCheckpoint`, or its flat mapping)
    atomically."""
    flat = state.to_dict() if isinstance(state, TrainCheckpoint) else state
    return atomic_torch_save(
        {"format": CHECKPOINT_FORMAT, "version": FORMAT_VERSION, **flat}, path
    )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a training checkpoint written by :func:`save_checkpoint`."""
    obj = read_torch_file(path, "checkpoint")
    if obj.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a supkd training checkpoint")
    return obj


def read_checkpoint(path: str | os.PathLike[str]) -> TrainCheckpoint:
    """:func:`load_checkpoint` as a :class:`TrainCheckpoint`."""
    return TrainCheckpoint.from_dict(load_checkpoint(path), f"checkpoint {path}")

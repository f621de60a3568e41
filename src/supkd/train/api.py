"""Python API for your own models and data: ``distill`` and ``train_classifier``.

Any ``nn.Module`` whose forward returns logits (B, C) or a ``supkd.models.ModelOutput``
works as teacher or student (torchvision, timm, your own), with plain DataLoaders that
yield ``(x, y)``. The same engine as ``supkd train`` runs them (``fit``): AMP and the fast
path on CUDA, divergence guard, optional run directory with checkpoints and metrics.

>>> from supkd.train import distill
>>> result = distill(student, teacher, train_loader, test_loader=test_loader,
...                  loss="supcon_kd", alpha=1.0, epochs=10, lr=0.05)
>>> result["test_acc"]          # % on test_loader after the last epoch

With a plain logits model, ``representation="embedding"`` is the logits as well (there is
no other output to read); ``projection`` needs a model that returns a ``ModelOutput``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from supkd.config import Config, load_config
from supkd.data import Batch
from supkd.losses import build_loss
from supkd.train.engine import fit
from supkd.train.options import FitOptions
from supkd.train.run_dir import RunResult
from supkd.train.tasks import CETask, DistillTask
from supkd.utils.device import resolve_device

__all__ = ["distill", "train_classifier"]


@dataclass
class Recipe:
    """The training recipe and run options both API functions take (their keywords of the
    same names; defaults as there)."""

    test_loader: Iterable[Any] | None = None
    val_loader: Iterable[Any] | None = None
    epochs: int = 10
    lr: float = 0.05
    optimizer: str = "sgd"
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    device: str | torch.device = "auto"
    out: str | Path | None = None
    resume: bool = False
    quiet: bool = False
    train_options: dict[str, Any] | None = None

    def fit_options(self) -> FitOptions:
        """The engine's options. The sections go through the config validation, so that a
        bad value gets the same one-line ConfigError as in a YAML file."""
        cfg: Config = load_config(
            {
                "optim": {
                    "name": self.optimizer,
                    "lr": self.lr,
                    "weight_decay": self.weight_decay,
                    "momentum": self.momentum,
                },
                "schedule": {"name": self.schedule, "warmup_epochs": self.warmup_epochs},
                "train": {"epochs": self.epochs, "progress": not self.quiet,
                          **(self.train_options or {})},
            }
        )
        return FitOptions(
            train=cfg.train, optim=cfg.optim, schedule=cfg.schedule,
            device=resolve_device(self.device, field="device"),
            test_loader=self.test_loader, val_loader=self.val_loader, run_dir=self.out,
            resume=self.resume, quiet=self.quiet,
        )


#: What ``fit``'s result holds for a run on the user's loaders (the run-record fields of a
#: ``supkd train`` run do not apply): the keys of the dict the API functions return.
_FIT_KEYS = ("status", "test_acc", "val_acc", "best_val_acc", "diverged_step", "error",
             "epochs", "steps", "wall_time_s")


def _fit_keys(result: RunResult) -> dict[str, Any]:
    plain = result.to_dict()
    return {k: plain[k] for k in _FIT_KEYS}


def _example(train_loader: Iterable[Any]) -> torch.Tensor:
    """First two inputs of the loader, drawn without disturbing the global RNG (a shuffling
    DataLoader draws its permutation seed from it)."""
    state = torch.get_rng_state()
    try:
        batch = Batch.from_any(next(iter(train_loader)))
    except StopIteration:
        raise ValueError("train_loader is empty") from None
    finally:
        torch.set_rng_state(state)
    return batch.x[:2]


def distill(
    student: nn.Module,
    teacher: nn.Module,
    train_loader: Iterable[Any],
    *,
    test_loader: Iterable[Any] | None = None,
    val_loader: Iterable[Any] | None = None,
    loss: str | nn.Module = "supcon_kd",
    loss_args: dict[str, Any] | None = None,
    alpha: float = 1.0,
    ce_weight: float = 1.0,
    representation: str = "logits",
    label_smoothing: float = 0.0,
    epochs: int = 10,
    lr: float = 0.05,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    schedule: str = "cosine",
    warmup_epochs: float = 0.0,
    device: str | torch.device = "auto",
    out: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    train_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Distill ``teacher`` into ``student`` with ``L = ce_weight·CE + α·L_KD`` (paper Eq. 6).

    Args:
        student: trained in place; forward(x) -> logits (B, C) or ModelOutput.
        teacher: frozen (``requires_grad=False``) and kept in eval mode.
        train_loader: yields ``(x, y)`` (or ``supkd.data.Batch``); x (B, ...), y (B,) long.
        test_loader, val_loader: accuracy (%) is measured on them after each epoch.
        loss: a name in ``supkd.losses.LOSSES`` (with ``loss_args``) or a loss module
            ``(student (B, D_s), teacher (B, D_t), labels (B,)) -> scalar``.
        representation: ``logits | embedding | projection``; a learned linear adapter maps
            the student's width to the teacher's when they differ and the loss needs equal
            widths (returned in ``result["adapter"]``).
        epochs, lr, optimizer (``sgd|adamw``), weight_decay, momentum, schedule
            (``cosine|step|onecycle|constant``), warmup_epochs: the recipe.
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``...
        out: optional run directory for ``metrics.jsonl`` and ``checkpoints/last.pt``
            (with ``resume=True``, continue from it).
        train_options: other ``train.*`` config fields, e.g. ``{"amp": "off",
            "grad_clip": 5.0}``.

    Returns:
        The engine's result dict (``status``, ``test_acc``, ``val_acc``, ``diverged_step``,
        ...) plus ``"adapter"`` (the adapter module or None).
    """
    opts = Recipe(
        test_loader, val_loader, epochs, lr, optimizer, weight_decay, momentum, schedule,
        warmup_epochs, device, out, resume, quiet, train_options,
    ).fit_options()
    dev = opts.device
    student.to(dev)
    teacher.to(dev)
    criterion = build_loss(loss, **(loss_args or {})) if isinstance(loss, str) else loss
    task = DistillTask(
        student,
        teacher,
        criterion,
        example=_example(train_loader),
        alpha=alpha,
        ce_weight=ce_weight,
        representation=representation,
        label_smoothing=label_smoothing,
    )
    result = fit(task, train_loader, opts)
    return {**_fit_keys(result), "adapter": task.adapter}


def train_classifier(
    model: nn.Module,
    train_loader: Iterable[Any],
    *,
    test_loader: Iterable[Any] | None = None,
    val_loader: Iterable[Any] | None = None,
    label_smoothing: float = 0.0,
    epochs: int = 10,
    lr: float = 0.05,
    optimizer: str = "sgd",
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    schedule: str = "cosine",
    warmup_epochs: float = 0.0,
    device: str | torch.device = "auto",
    out: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    train_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model`` (forward -> logits or ModelOutput) with cross-entropy, in place, on
    the user's loaders (e.g. a teacher for :func:`distill`). Arguments as in
    :func:`distill`; returns the engine's result dict."""
    opts = Recipe(
        test_loader, val_loader, epochs, lr, optimizer, weight_decay, momentum, schedule,
        warmup_epochs, device, out, resume, quiet, train_options,
    ).fit_options()
    task = CETask(model, label_smoothing=label_smoothing)
    return _fit_keys(fit(task, train_loader, opts))

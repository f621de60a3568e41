"""What :func:`supkd.train.engine.fit` and :class:`supkd.train.loop.TrainLoop` are given
besides the task and its training loader: one :class:`FitOptions`, and the
:class:`TrainState` its callbacks see."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from supkd.config import OptimConfig, ScheduleConfig, TrainConfig

__all__ = ["FitOptions", "TrainState"]


@dataclass
class TrainState:
    """What callbacks see after every optimizer step. Set ``stop = True`` to stop the run
    as if interrupted (checkpoint saved, :class:`~supkd.train.loop.TrainingInterrupted`
    raised)."""

    epoch: int = 0  # 0-based epoch in progress
    step: int = 0  # optimizer steps done (global)
    batch_in_epoch: int = 0  # steps done in the current epoch
    stop: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FitOptions:
    """How to train (the recipe's config sections), where, on what evaluation loaders, and
    what to write; ``None`` for a config section means its defaults.

    - ``train``, ``optim``, ``schedule``: config sections.
    - ``device``: where to train.
    - ``test_loader``, ``val_loader``: evaluated every ``train.eval_every`` epochs and after
      the last one (accuracy in %).
    - ``run_dir``: when given, ``metrics.jsonl`` (one line per epoch) and
      ``checkpoints/last.pt`` (+ ``best.pt``) are written there (rank 0 only).
    - ``resume``: continue from ``run_dir/checkpoints/last.pt`` when it exists.
    - ``quiet``: no progress bar, no messages.
    - ``callbacks``: called with a :class:`TrainState` after every optimizer step.
    - ``checkpoint_extra``: extra plain values stored in every checkpoint (e.g. the config).
    - ``handle_signals``: install the SIGINT/SIGTERM checkpoint-and-stop handlers.
    """

    # None (what the keyword callers of fit pass for "not given") reads as the defaults.
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    device: torch.device | str = "cpu"
    test_loader: Iterable[Any] | None = None
    val_loader: Iterable[Any] | None = None
    run_dir: str | Path | None = None
    resume: bool = False
    quiet: bool = False
    callbacks: Sequence[Callable[[TrainState], None]] = ()
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)
    handle_signals: bool = True

    def __post_init__(self) -> None:
        self.train = self.train or TrainConfig()
        self.optim = self.optim or OptimConfig()
        self.schedule = self.schedule or ScheduleConfig()
        self.device = torch.device(self.device)
        self.checkpoint_extra = dict(self.checkpoint_extra or {})

    @classmethod
    def of(cls, options: FitOptions | None, overrides: dict[str, Any]) -> FitOptions:
        """``options`` (defaults when None) with the keyword ``overrides`` of a caller
        that takes them one by one; an unknown keyword is a TypeError naming it."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise TypeError(f"fit: unexpected keyword argument {unknown[0]!r}")
        return dataclasses.replace(options or cls(), **overrides)

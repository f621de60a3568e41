"""Tasks: what one training step computes. The engine only sums, logs and steps.

A task is an ``nn.Module`` that owns the trained network (``task.model``) and whatever else
the step needs (a frozen teacher, a KD adapter, a loss). ``task(batch)`` runs
:meth:`Task.training_step` and returns ``{"loss": scalar, part: detached scalar, ...}``.
Adding a method means adding one file here with a ``Task`` subclass decorated with
:func:`register_task` (and its test); the engine and the config loader know no task, loss or
method names (docs/design.md §9, after timm's tasks and mdistiller's distillers). The interface
is in :mod:`.base`; each built-in task is its own module, registered when this package is
imported.

Tasks (paper §III, docs/design.md §5):

- ``ce`` (:mod:`.ce`): cross-entropy training of a teacher or a student baseline.
- ``supcon`` (:mod:`.supcon`): SupCon pre-training (Khosla et al. 2020, Eq. 2,
  ``L^sup_out``) of encoder + projection head on two augmented views.
- ``linear`` (:mod:`.linear`): SupCon's second stage, a linear classifier trained with CE on
  the frozen encoder of a finished run. Its model is the *complete* network (encoder,
  projection head, trained classifier), so the linear run's directory is a SupCon teacher
  with logits.
- ``distill`` (:mod:`.distill`): student trained with ``L = ce_weight·CE + α·L_KD`` (paper
  Eq. 6) from a frozen teacher, for any loss in :data:`supkd.losses.LOSSES` and any
  representation (``logits | embedding | projection``, docs/design.md §4, or a stage of
  ``forward_intermediates`` such as ``layer4``), with an optional linear warm-up of α
  (``alpha_warmup_epochs``, told the epoch position through :meth:`Task.set_progress`).
"""

from __future__ import annotations

from supkd.train.tasks.base import TASKS, Task, build_task, register_task, task_config_fields
from supkd.train.tasks.ce import CEConfig, CETask
from supkd.train.tasks.distill import (
    REPRESENTATIONS,
    DistillConfig,
    DistillTask,
    _teacher_cache,  # noqa: F401  (the cache decision point; tests/data/test_cutout.py)
    distill_task_from_modules,
)
from supkd.train.tasks.linear import LinearConfig, LinearTask
from supkd.train.tasks.supcon import SupConConfig, SupConTask

__all__ = [
    "REPRESENTATIONS",
    "TASKS",
    "CEConfig",
    "CETask",
    "DistillConfig",
    "DistillTask",
    "LinearConfig",
    "LinearTask",
    "SupConConfig",
    "SupConTask",
    "Task",
    "build_task",
    "distill_task_from_modules",
    "register_task",
    "task_config_fields",
]

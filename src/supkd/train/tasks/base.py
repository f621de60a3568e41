"""The ``Task`` interface, the task registry and the helpers the built-in tasks share.

A task is an ``nn.Module`` that owns the trained network (``task.model``) and whatever else
the step needs (a frozen teacher, a KD adapter, a loss). ``task(batch)`` runs
:meth:`Task.training_step` and returns ``{"loss": scalar, part: detached scalar, ...}``.
The engine calls only the methods and attributes defined here, never a task's own names.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supkd.config import TASK_SECTIONS, Config, TaskConfig
from supkd.errors import ConfigError, SupkdWarning
from supkd.models import as_model_output, create_model
from supkd.models.registry import find_model_builder
from supkd.utils.registry import Registry

__all__ = ["TASKS", "Task", "build_task", "register_task", "task_config_fields",
           "warn_if_unfinished"]


class Task(nn.Module, abc.ABC):
    """Base class. Subclasses set ``Config``, ``name`` and implement ``training_step``.

    Attributes:
        model: the network evaluated and saved as the run's model.
        views: images per sample the training loader must produce (2 for SupCon).
        augment: the training augmentation (``standard | supcon | none``).
        has_classifier: False when the model's classifier is not trained by this task, so
            accuracy is not meaningful (SupCon pre-training; the linear stage reports it).
    """

    Config: ClassVar[type[TaskConfig]] = TaskConfig
    name: ClassVar[str] = ""
    views: int = 1
    augment: str = "standard"
    has_classifier: bool = True

    model: nn.Module

    def forward(self, batch: Any) -> dict[str, Tensor]:
        # Calling the task (not training_step directly) lets DDP wrap the whole task.
        return self.training_step(batch)

    @abc.abstractmethod
    def training_step(self, batch: Any) -> dict[str, Tensor]:
        """``batch`` (a ``supkd.data.Batch``) -> ``{"loss": scalar, parts...}``."""

    def set_progress(self, epochs: float) -> None:
        """Told by the loop before each training step: the epochs done when that step ends
        (a fraction, e.g. 2.25), for weights scheduled over training (distill's α warm-up).
        Default: ignored."""

    def predict(self, x: Tensor) -> Tensor:
        """Logits (B, C) for evaluation."""
        return as_model_output(self.model(x)).logits

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def extra_state(self) -> dict[str, Any]:
        """What the task owns beyond ``model`` (saved in checkpoints)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`extra_state`."""

    def networks(self) -> list[nn.Module]:
        """The networks worth ``torch.compile``-ing (the engine compiles them on request)."""
        return [self.model]

    def model_info(self) -> dict[str, Any]:
        """What ``model.pt`` records about the trained model (task, trained parts)."""
        return {"task": self.name, "trained": ["encoder", "classifier"]}

    @classmethod
    @abc.abstractmethod
    def build(cls, cfg: Config, bundle: Any, device: torch.device) -> Task:
        """The task for run config ``cfg`` on data ``bundle`` (models built on CPU)."""


#: Task name -> task class (read-only view; :func:`register_task` adds to it).
TASKS: Registry[type[Task]] = Registry("task")


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding ``cls`` to :data:`TASKS` under ``cls.name`` (an empty or taken
    name is refused with ValueError), and its ``Config`` to
    :data:`supkd.config.TASK_SECTIONS`, which types the ``task:`` section of run configs."""
    TASKS.add(cls.name, cls)
    try:
        TASK_SECTIONS.add(cls.name, cls.Config)
    except ValueError:
        TASKS.remove(cls.name)  # no half-registered task
        raise
    return cls


def build_task(cfg: Config, bundle: Any, device: torch.device | str) -> Task:
    """Build the task named by ``cfg.task.name`` for data ``bundle`` on ``device``.

    Model weights are initialized from the global torch generator: the engine seeds it with
    the run's init seed first. Raises ConfigError / CheckpointError for bad input.
    """
    name = cfg.task.name
    if name not in TASKS:
        raise ConfigError(
            f"config field 'task.name': expected one of {', '.join(sorted(TASKS))}, got {name!r}"
        )
    task = TASKS[name].build(cfg, bundle, torch.device(device))
    return task.to(device)


def task_config_fields(name: str) -> list[str]:
    """Field names of a task's config (for help texts and the grid)."""
    return [f.name for f in dataclasses.fields(TASKS[name].Config)]


# --- helpers shared by the built-in tasks ---------------------------------------------------


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Top-1 accuracy in % (0-100, the unit of every accuracy supkd records: ``train_acc``
    beside ``test_acc``) as a detached device scalar (no host sync)."""
    return (logits.detach().argmax(dim=1) == y).float().mean() * 100


def ce_loss(logits: Tensor, y: Tensor, label_smoothing: float) -> Tensor:
    # Under autocast, cross_entropy already runs in float32 (autocast's fp32 op list).
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing)


#: Model fields every builder was handed before builders said which they take: a user's
#: builder with ``**kwargs`` keeps receiving them.
_ALWAYS_PASSED = ("stem", "width", "projection_dim")


def model_kwargs(cfg: Config, bundle: Any, builder: Any) -> dict[str, Any]:
    """The keyword arguments of ``builder`` for ``cfg.model`` on ``bundle``'s data.

    Each builder takes the ``model:`` fields of its family (the ResNets ``stem`` and
    ``width``, ``timm/`` models ``timm_args`` and ``pretrained``): a field is passed when the
    builder's signature names it (or it has ``**kwargs``); one it does not take must keep its
    default, else ConfigError naming the field. ``data_norm`` (the data's normalization, for
    pretrained weights to be corrected onto) and ``image_size`` go to builders naming them.
    """
    m = cfg.model
    params = inspect.signature(builder).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    defaults = type(m)()
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(m):
        value = getattr(m, f.name)
        if f.name == "name":
            continue
        changed = value != getattr(defaults, f.name)
        if f.name in params or (var_kw and (changed or f.name in _ALWAYS_PASSED)):
            kwargs[f.name] = value
        elif changed:
            taken = [n for n in params if n in {g.name for g in dataclasses.fields(m)}]
            raise ConfigError(
                f"config field 'model.{f.name}': model {m.name!r} does not take it (its "
                f"model fields: {', '.join(taken) or 'none'}); remove it"
            )
    extras = {"data_norm": (tuple(bundle.mean), tuple(bundle.std)),
              "image_size": bundle.image_size}
    kwargs.update({k: v for k, v in extras.items() if k in params})
    return kwargs


def new_model(cfg: Config, bundle: Any, projection_dim: int | None = None) -> nn.Module:
    """A freshly initialized ``cfg.model`` for ``bundle``'s classes and channels (with the
    weights ``model.pretrained`` names, for the models that take them)."""
    m = cfg.model
    try:
        builder = find_model_builder(m.name)
        kwargs = model_kwargs(cfg, bundle, builder)
        if projection_dim is not None:
            kwargs["projection_dim"] = projection_dim
        return create_model(
            m.name,
            num_classes=int(bundle.num_classes),
            in_channels=int(bundle.in_channels),
            **kwargs,
        )
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"config section 'model': {exc}") from None


def warn_if_unfinished(rec: Any, field_name: str) -> None:
    """SupkdWarning when a loaded model is a training checkpoint of a run that never
    finished (no model.pt): what is built on it inherits a partly trained network."""
    if getattr(rec, "unfinished", None):
        where = rec.run_dir if rec.run_dir is not None else rec.path
        warnings.warn(f"config field '{field_name}': run {where} never finished (no model.pt); "
                      f"using its {rec.unfinished}",
                      SupkdWarning, stacklevel=3)


def check_input_shape(spec: dict[str, Any], bundle: Any, field_name: str) -> None:
    """ConfigError naming ``field_name`` when a loaded model takes other channels than the data."""
    in_ch = spec.get("in_channels", 3)
    if int(in_ch) != int(bundle.in_channels):
        raise ConfigError(
            f"config field '{field_name}': the model takes {in_ch}-channel images, the data "
            f"set '{getattr(bundle, 'name', '?')}' has {bundle.in_channels}"
        )

"""Tasks: what one training step computes. The engine only sums, logs and steps.

A task is an ``nn.Module`` that owns the trained network (``task.model``) and whatever else
the step needs (a frozen teacher, a KD adapter, a loss). ``task(batch)`` runs
:meth:`Task.training_step` and returns ``{"loss": scalar, part: detached scalar, ...}``.
Adding a method means adding one class here and registering it in :data:`TASKS`; the
engine and the config loader know no task, loss or method names (DESIGN.md §9, after timm's
tasks and mdistiller's distillers).

Tasks (paper §III, DESIGN.md §5):

- ``ce``: cross-entropy training of a teacher or a student baseline.
- ``supcon``: SupCon pre-training (Khosla et al. 2020, Eq. 2, ``L^sup_out``) of encoder +
  projection head on two augmented views.
- ``linear``: SupCon's second stage, a linear classifier trained with CE on the frozen
  encoder of a finished run. Its model is the *complete* network (encoder, projection head,
  trained classifier), so the linear run's directory is a SupCon teacher with logits.
- ``distill``: student trained with ``L = ce_weight·CE + α·L_KD`` (paper Eq. 6) from a
  frozen teacher, for any loss in :data:`supkd.losses.LOSSES` and any representation
  (``logits | embedding | projection``, DESIGN.md §4).
"""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from supkd.config import TASK_SECTIONS, Config, TaskConfig, bounded
from supkd.errors import CheckpointError, ConfigError, UserError
from supkd.models import ModelOutput, as_model_output, create_model
from supkd.train import distributed as dist_utils

__all__ = [
    "TASKS",
    "CETask",
    "DistillTask",
    "LinearTask",
    "SupConTask",
    "Task",
    "build_task",
    "register_task",
]

REPRESENTATIONS = ("logits", "embedding", "projection")


def _accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """Top-1 accuracy in [0, 1] as a detached device scalar (no host sync)."""
    return (logits.detach().argmax(dim=1) == y).float().mean()


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


TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator adding ``cls`` to :data:`TASKS` under ``cls.name`` (no duplicates),
    and its ``Config`` to :data:`supkd.config.TASK_SECTIONS`, which types the ``task:``
    section of run configs."""
    if not cls.name or cls.name in TASKS:
        raise ValueError(f"task name {cls.name!r} is empty or already registered")
    TASK_SECTIONS.add(cls.name, cls.Config)
    TASKS[cls.name] = cls
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


def _new_model(cfg: Config, bundle: Any, projection_dim: int | None = None) -> nn.Module:
    m = cfg.model
    try:
        return create_model(
            m.name,
            stem=m.stem,
            num_classes=int(bundle.num_classes),
            projection_dim=projection_dim if projection_dim is not None else m.projection_dim,
            width=m.width,
            in_channels=int(bundle.in_channels),
        )
    except ValueError as exc:
        raise ConfigError(f"config section 'model': {exc}") from None


def _ce_loss(logits: Tensor, y: Tensor, label_smoothing: float) -> Tensor:
    # Under autocast, cross_entropy already runs in float32 (autocast's fp32 op list).
    return F.cross_entropy(logits, y, label_smoothing=label_smoothing)


# ---------------------------------------------------------------------------------------
# ce
# ---------------------------------------------------------------------------------------


@dataclass
class CEConfig(TaskConfig):
    name: str = "ce"
    label_smoothing: float = bounded(0.0, ge=0, lt=1)


@register_task
class CETask(Task):
    """Cross-entropy on one augmented view: ``CE(model(x).logits, y)``."""

    Config = CEConfig
    name = "ce"

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing

    @classmethod
    def build(cls, cfg: Config, bundle: Any, device: torch.device) -> Task:
        return cls(_new_model(cfg, bundle), cfg.task.label_smoothing)

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        logits = as_model_output(self.model(batch.x)).logits
        loss = _ce_loss(logits, batch.y, self.label_smoothing)
        return {"loss": loss, "ce": loss.detach(), "acc": _accuracy(logits, batch.y)}

    def model_info(self) -> dict[str, Any]:
        # A projection head, if the config gave one, gets no gradient from CE.
        return {"task": self.name, "trained": ["encoder", "classifier"]}


# ---------------------------------------------------------------------------------------
# supcon
# ---------------------------------------------------------------------------------------


@dataclass
class SupConConfig(TaskConfig):
    name: str = "supcon"
    temperature: float = bounded(0.1, gt=0)
    base_temperature: float | None = bounded(None, gt=0)
    projection_dim: int = bounded(128, gt=0)  # used when model.projection_dim is not set


@register_task
class SupConTask(Task):
    """Two-view SupCon pre-training of encoder + projection head (Khosla et al. 2020, Eq. 2).

    Batch ``x`` is (B, 2, C, H, W); the projections of both views form features (B, 2, P)
    for :class:`supkd.losses.SupConLoss`. Under DDP the features and labels of every rank
    are gathered (with gradients) first, so the loss sees the global batch's negatives.
    The classifier is frozen here (trained by the ``linear`` stage).
    """

    Config = SupConConfig
    name = "supcon"
    views = 2
    augment = "supcon"
    has_classifier = False

    def __init__(self, model: nn.Module, temperature: float, base_temperature: float | None):
        super().__init__()
        from supkd.losses import SupConLoss

        if getattr(model, "head", None) is None:
            raise ConfigError(
                "task 'supcon': the model needs a projection head (model.projection_dim)"
            )
        self.model = model
        for p in model.classifier.parameters():
            p.requires_grad_(False)
        self.criterion = SupConLoss(temperature=temperature, base_temperature=base_temperature)

    @classmethod
    def build(cls, cfg: Config, bundle: Any, device: torch.device) -> Task:
        t = cfg.task
        proj = cfg.model.projection_dim or t.projection_dim
        return cls(_new_model(cfg, bundle, projection_dim=proj), t.temperature, t.base_temperature)

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        x = batch.x
        if x.dim() != 5 or x.shape[1] != 2:
            raise ValueError(
                f"supcon task: expected x of shape (B, 2, C, H, W), got {tuple(x.shape)}"
            )
        B = x.shape[0]
        # One forward over both views: BatchNorm sees the same 2B batch as in SupCon's code.
        out = self.model(x.flatten(0, 1))
        feats = out.projection.reshape(B, 2, -1)
        labels = batch.y
        if dist_utils.world_size() > 1:
            feats = dist_utils.gather_with_grad(feats)
            labels = dist_utils.gather_with_grad(labels)
        loss = self.criterion(feats, labels)
        return {"loss": loss, "supcon": loss.detach()}

    def model_info(self) -> dict[str, Any]:
        return {"task": self.name, "trained": ["encoder", "head"]}


# ---------------------------------------------------------------------------------------
# linear
# ---------------------------------------------------------------------------------------


@dataclass
class LinearConfig(TaskConfig):
    name: str = "linear"
    encoder: str = ""  # run directory (or model.pt / last.pt) whose encoder is frozen
    label_smoothing: float = bounded(0.0, ge=0, lt=1)

    def check(self) -> None:
        if not self.encoder:
            raise ConfigError(
                "config field 'task.encoder': expected the run directory of a trained "
                "encoder (e.g. a SupCon run), got nothing"
            )


@register_task
class LinearTask(Task):
    """Linear classifier on a frozen encoder (SupCon's second stage).

    The encoder (and projection head) are frozen and kept in eval mode, so BatchNorm uses the
    pre-trained running statistics; the classifier is re-initialized and trained with CE on
    ``encoder(x)``. ``model`` is the whole network, so saving it gives a teacher with
    trained logits, embedding and projection.
    """

    Config = LinearConfig
    name = "linear"

    def __init__(self, model: nn.Module, label_smoothing: float = 0.0, source: dict | None = None):
        super().__init__()
        self.model = model
        model.freeze_encoder(True)
        if model.head is not None:
            for p in model.head.parameters():
                p.requires_grad_(False)
        self.label_smoothing = label_smoothing
        self.source_info = dict(source or {})

    @classmethod
    def build(cls, cfg: Config, bundle: Any, device: torch.device) -> Task:
        from supkd.models import make_classifier
        from supkd.models.files import load_model_record

        try:
            rec = load_model_record(cfg.task.encoder)
        except CheckpointError as exc:
            raise CheckpointError(f"config field 'task.encoder': {exc}") from None
        model = rec.model
        spec = dict(model.spec)
        _check_input_shape(spec, bundle, "task.encoder")
        # A fresh classifier (seeded by the init seed) for this data set's classes.
        model.classifier = make_classifier(model.embedding_dim, int(bundle.num_classes))
        spec["num_classes"] = int(bundle.num_classes)
        model.spec = spec
        return cls(model, cfg.task.label_smoothing, rec.info)

    def train(self, mode: bool = True) -> LinearTask:
        super().train(mode)
        if self.model.head is not None:
            self.model.head.eval()
        return self

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        with torch.no_grad():
            emb = self.model.encoder(batch.x)
        logits = self.model.classifier(emb)
        loss = _ce_loss(logits, batch.y, self.label_smoothing)
        return {"loss": loss, "ce": loss.detach(), "acc": _accuracy(logits, batch.y)}

    def model_info(self) -> dict[str, Any]:
        trained = set(self.source_info.get("trained", ["encoder", "head"]))
        trained.add("classifier")
        if self.model.head is None:
            trained.discard("head")
        return {
            "task": self.name,
            "trained": sorted(trained),
            "encoder_task": self.source_info.get("task"),
        }


def _check_input_shape(spec: dict[str, Any], bundle: Any, field_name: str) -> None:
    in_ch = spec.get("in_channels", 3)
    if int(in_ch) != int(bundle.in_channels):
        raise ConfigError(
            f"config field '{field_name}': the model takes {in_ch}-channel images, the data "
            f"set '{getattr(bundle, 'name', '?')}' has {bundle.in_channels}"
        )


# ---------------------------------------------------------------------------------------
# distill
# ---------------------------------------------------------------------------------------


@dataclass
class DistillConfig(TaskConfig):
    name: str = "distill"
    teacher: str = ""  # teacher run directory, model.pt or last.pt
    loss: str = "supcon_kd"  # any name in supkd.losses.LOSSES
    loss_args: dict[str, Any] = field(default_factory=dict)  # constructor arguments
    alpha: float = bounded(1.0, ge=0)  # weight of L_KD (paper Eq. 6)
    ce_weight: float = bounded(1.0, ge=0)  # weight of the CE term (Eq. 6 uses 1)
    representation: Literal["logits", "embedding", "projection"] = "logits"
    label_smoothing: float = bounded(0.0, ge=0, lt=1)
    teacher_cache: Literal["auto", "on", "off"] = "auto"

    def check(self) -> None:
        from supkd.losses import LOSSES, build_loss

        prefix = self.SECTION
        if not self.teacher:
            raise ConfigError(
                f"config field '{prefix}.teacher': expected a teacher run directory or "
                "model file, got nothing"
            )
        if self.loss not in LOSSES:
            import difflib

            close = difflib.get_close_matches(self.loss, list(LOSSES), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"config field '{prefix}.loss': expected one of {', '.join(LOSSES)}, "
                f"got {self.loss!r}{hint}"
            )
        try:
            build_loss(self.loss, **self.loss_args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config field '{prefix}.loss_args': {exc}") from None


def _pick(out: ModelOutput, representation: str) -> Tensor | None:
    return getattr(out, representation)


@torch.no_grad()
def _probe_width(model: nn.Module, representation: str, example: Tensor) -> int:
    """Width of ``representation`` for ``model`` from one forward in eval mode (no BN update)."""
    was_training = model.training
    model.eval()
    param = next(iter(model.parameters()), None)
    if param is not None:
        example = example.to(param.device)
    try:
        z = _pick(as_model_output(model(example)), representation)
    finally:
        model.train(was_training)
    if z is None:
        raise ConfigError(
            f"config field 'task.representation': the model has no {representation!r} output"
        )
    return int(z.reshape(z.shape[0], -1).shape[1])


@register_task
class DistillTask(Task):
    """Student trained with ``ce_weight·CE(s_logits, y) + α·L_KD(z_s, z_t, y)`` (paper Eq. 6).

    The teacher is frozen (``requires_grad=False``) and always in eval mode (BatchNorm running
    statistics, no dropout), whatever mode the task is put in. ``z`` is the chosen
    representation; when student and teacher widths differ and the loss compares features
    element-wise (``loss.same_width``), a learned ``nn.Linear(D_s, D_t)`` adapter maps the
    student's representation (DESIGN.md §4). The adapter belongs to the task: it is saved in
    :meth:`extra_state`, never in the student's weights.

    With a teacher cache (``supkd.train.teacher_cache``) and a batch that carries ``index`` and
    ``aug``, the teacher's logits are looked up instead of computed.
    """

    Config = DistillConfig
    name = "distill"

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        loss: nn.Module,
        *,
        example: Tensor,
        alpha: float = 1.0,
        ce_weight: float = 1.0,
        representation: str = "logits",
        label_smoothing: float = 0.0,
        cache: Any = None,
        teacher_source: str | None = None,
    ) -> None:
        super().__init__()
        if representation not in REPRESENTATIONS:
            raise ValueError(
                f"representation must be one of {', '.join(REPRESENTATIONS)}, "
                f"got {representation!r}"
            )
        self.model = student
        self.teacher = teacher
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()
        self.criterion = loss
        self.alpha = float(alpha)
        self.ce_weight = float(ce_weight)
        self.representation = representation
        self.label_smoothing = label_smoothing
        self.cache = cache
        self.teacher_source = teacher_source
        d_t = _probe_width(teacher, representation, example)
        d_s = _probe_width(student, representation, example)
        self.widths = (d_s, d_t)
        self.adapter: nn.Module | None = None
        if d_s != d_t and getattr(loss, "same_width", True):
            self.adapter = nn.Linear(d_s, d_t)

    # --- construction from a config -----------------------------------------------------

    @classmethod
    def build(cls, cfg: Config, bundle: Any, device: torch.device) -> Task:
        from supkd.losses import build_loss
        from supkd.models.files import load_model_record

        t = cfg.task
        try:
            rec = load_model_record(t.teacher)
        except CheckpointError as exc:
            raise CheckpointError(f"config field 'task.teacher': {exc}") from None
        teacher = rec.model
        spec = teacher.spec
        _check_input_shape(spec, bundle, "task.teacher")
        if int(spec["num_classes"]) != int(bundle.num_classes):
            raise ConfigError(
                f"config field 'task.teacher': teacher {t.teacher} has {spec['num_classes']} "
                f"classes, the data set '{getattr(bundle, 'name', '?')}' has {bundle.num_classes}"
            )
        rep = t.representation
        if rep == "projection" and teacher.head is None:
            raise ConfigError(
                f"config field 'task.representation': teacher {t.teacher} has no projection "
                "head (a CE teacher?); use logits or embedding"
            )
        trained = rec.trained_parts
        needed = {"logits": "classifier", "embedding": "encoder", "projection": "head"}[rep]
        if needed not in trained:
            hint = (
                " (run the linear stage on it first: task.name=linear task.encoder=<that run>)"
                if needed == "classifier"
                else ""
            )
            raise ConfigError(
                f"config field 'task.representation': {rep!r} of teacher {t.teacher} was not "
                f"trained (its {needed} is untrained){hint}"
            )
        proj_dim = cfg.model.projection_dim
        if rep == "projection" and proj_dim is None:
            proj_dim = teacher.head.projection_dim
        student = _new_model(cfg, bundle, projection_dim=proj_dim)
        loss = build_loss(t.loss, **t.loss_args)
        size = int(bundle.image_size) if not isinstance(bundle.image_size, tuple | list) else None
        hw = (size, size) if size is not None else tuple(bundle.image_size)
        example = torch.zeros(2, int(bundle.in_channels), *hw)
        task = cls(
            student,
            teacher,
            loss,
            example=example,
            alpha=t.alpha,
            ce_weight=t.ce_weight,
            representation=rep,
            label_smoothing=t.label_smoothing,
            teacher_source=str(t.teacher),
        )
        task.cache = _teacher_cache(teacher.to(device), bundle, rec.run_dir, device, cfg)
        return task

    # --- the step ------------------------------------------------------------------------

    def train(self, mode: bool = True) -> DistillTask:
        super().train(mode)
        self.teacher.eval()  # frozen teacher: always BatchNorm running statistics
        return self

    def teacher_features(self, batch: Any) -> Tensor:
        """Teacher representation (B, D_t) of the batch's views, constant (no graph)."""
        index, aug = getattr(batch, "index", None), getattr(batch, "aug", None)
        if self.cache is not None and index is not None and aug is not None:
            return self.cache.lookup(index, aug)
        with torch.no_grad():
            z = _pick(as_model_output(self.teacher(batch.x)), self.representation)
        return z.reshape(z.shape[0], -1)

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        x, y = batch.x, batch.y
        out = as_model_output(self.model(x))
        z_s = _pick(out, self.representation).reshape(x.shape[0], -1)
        if self.adapter is not None:
            z_s = self.adapter(z_s)
        z_t = self.teacher_features(batch)
        labels = y
        if getattr(self.criterion, "compares_samples", False) and dist_utils.world_size() > 1:
            # Losses that compare samples must see the global batch (DESIGN.md §8).
            z_s = dist_utils.gather_with_grad(z_s)
            z_t = dist_utils.gather_with_grad(z_t)
            labels = dist_utils.gather_with_grad(y)
        kd = self.criterion(z_s, z_t, labels)
        ce = _ce_loss(out.logits, y, self.label_smoothing)
        loss = self.ce_weight * ce + self.alpha * kd
        return {
            "loss": loss,
            "ce": ce.detach(),
            "kd": kd.detach(),
            "acc": _accuracy(out.logits, y),
        }

    # --- what the task owns beyond the student -------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"widths": list(self.widths)}
        if self.adapter is not None:
            state["adapter"] = {k: v.detach().cpu() for k, v in self.adapter.state_dict().items()}
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.adapter is not None:
            if "adapter" not in state:
                raise CheckpointError("checkpoint: the KD adapter's weights are missing")
            self.adapter.load_state_dict(state["adapter"])

    def networks(self) -> list[nn.Module]:
        return [self.model, self.teacher]

    def model_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"task": self.name, "trained": ["encoder", "classifier"]}
        if self.representation == "projection":
            info["trained"].append("head")
        info["teacher"] = self.teacher_source
        return info


def _teacher_cache(
    teacher: nn.Module, bundle: Any, teacher_dir: Path | None, device: torch.device, cfg: Config
) -> Any:
    """The exact teacher-logit cache when it applies, else None (teacher runs live).

    Under DDP rank 0 alone builds (or loads) and writes the table, then the others read it.
    Rank 0's outcome, ok or its UserError, is broadcast first so that every rank raises the
    same error or goes on (as ``engine._prepare_run_dir``): a rank left waiting for a rank 0
    that has raised would die in the torn-down process group, with a traceback, or hang.
    """
    if cfg.task.teacher_cache == "off":
        return None
    try:
        from supkd.train.teacher_cache import get_teacher_cache
    except ImportError:  # cache module absent in a trimmed install: the teacher runs live
        return None

    def get() -> Any:
        return get_teacher_cache(
            teacher,
            bundle,
            teacher_dir=teacher_dir,
            device=device,
            augment=DistillTask.augment,
            representation=cfg.task.representation,
            mode=cfg.task.teacher_cache,
            progress=cfg.train.progress,
        )

    if not dist_utils.is_enabled():
        return get()
    cache, error = None, None
    if dist_utils.is_main():
        try:
            cache = get()
        except UserError as exc:
            error = exc
    # Also the wait: the other ranks read the table only once rank 0 has written it.
    error = dist_utils.broadcast_object(error)
    if error is not None:
        # A broadcast's sender may finish before the others have even reached it: without
        # this, rank 0 can exit while a slower rank is still building its task, and torchrun
        # then kills that rank before it prints the error.
        dist_utils.barrier()
        raise error
    if not dist_utils.is_main():
        cache = get()
    return cache


def distill_task_from_modules(
    student: nn.Module,
    teacher: nn.Module,
    example: Tensor,
    *,
    loss: str | nn.Module = "supcon_kd",
    loss_args: dict[str, Any] | None = None,
    alpha: float = 1.0,
    ce_weight: float = 1.0,
    representation: str = "logits",
    label_smoothing: float = 0.0,
) -> DistillTask:
    """A distill task over the user's own modules (any ``nn.Module`` whose forward returns
    logits (B, C) or a ``ModelOutput``); ``example`` is an input batch (B, ...) used once to
    read the representation widths."""
    from supkd.losses import build_loss

    crit = build_loss(loss, **(loss_args or {})) if isinstance(loss, str) else loss
    return DistillTask(
        student,
        teacher,
        crit,
        example=example,
        alpha=alpha,
        ce_weight=ce_weight,
        representation=representation,
        label_smoothing=label_smoothing,
    )


def task_config_fields(name: str) -> list[str]:
    """Field names of a task's config (for help texts and the grid)."""
    return [f.name for f in dataclasses.fields(TASKS[name].Config)]

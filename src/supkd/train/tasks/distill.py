"""``distill``: a student trained with ``L = ce_weight·CE + α·L_KD`` (paper Eq. 6) from a
frozen teacher, for any loss in :data:`supkd.losses.LOSSES` and any representation
(``logits | embedding | projection``, or a stage of ``forward_intermediates`` such as
``layer3`` / ``layer4``, flattened per sample).

A multi-stage loss (``loss.multi_stage``, a :class:`supkd.losses.StageKDLoss`: FitNet, AT,
OFD, ReviewKD, ...) reads instead the stages it selects (``task.loss_args.stages``, else its
published default) from both models' ``forward_intermediates`` (``preact=True`` for the
side it reads before the ReLU), and gets the per-stage shapes (and, for OFD, the teacher's
``bn_before_relu()``) in ``bind_stages``. Whatever a loss learns (connectors, fusion modules,
variances, CRD's embeddings and bank) is a submodule of the loss, so one mechanism covers all
of it: its parameters are among the task's trainable parameters (the student's optimizer and
schedule), its ``state_dict`` is the checkpoint's task state (bit-exact resume), DDP wraps
the whole task, and ``model.pt`` holds the student alone."""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from supkd.config import Config, TaskConfig, bounded
from supkd.errors import CheckpointError, ConfigError, SupkdWarning, UserError
from supkd.losses import LOSSES, KDLoss, build_loss
from supkd.models import ModelOutput, as_model_output
from supkd.models.files import ModelRecord, load_model_record
from supkd.train import distributed as dist_utils
from supkd.train.tasks.base import (
    Task,
    accuracy,
    ce_loss,
    check_input_shape,
    new_model,
    register_task,
    warn_if_unfinished,
)
from supkd.train.teacher_cache import get_teacher_cache
from supkd.utils.registry import did_you_mean

__all__ = ["REPRESENTATIONS", "DistillConfig", "DistillTask", "distill_task_from_modules"]

REPRESENTATIONS = ("logits", "embedding", "projection")


@dataclass
class DistillConfig(TaskConfig):
    name: str = "distill"
    teacher: str = ""  # teacher run directory, model.pt or last.pt
    loss: str = "supcon_kd"  # any name in supkd.losses.LOSSES
    loss_args: dict[str, Any] = field(default_factory=dict)  # constructor arguments
    alpha: float = bounded(1.0, ge=0)  # weight of L_KD (paper Eq. 6)
    # Linear warm-up of α from 0 over this many epochs (per step; DKD uses 20); 0: none.
    alpha_warmup_epochs: float = bounded(0.0, ge=0)
    ce_weight: float = bounded(1.0, ge=0)  # weight of the CE term (Eq. 6 uses 1)
    # logits | embedding | projection, or a stage of the models' forward_intermediates
    # (stem, layer1 ... layer4 for supkd's ResNets), flattened per sample.
    representation: str = "logits"
    label_smoothing: float = bounded(0.0, ge=0, lt=1)  # of the CE targets (0: none)
    teacher_cache: Literal["auto", "on", "off"] = "auto"  # stored teacher logits per view

    def check(self) -> None:
        prefix = self.SECTION
        if not self.teacher:
            raise ConfigError(
                f"config field '{prefix}.teacher': expected a teacher run directory or "
                "model file, got nothing"
            )
        rep = self.representation
        # A stage name is checked against the models when the task is built; here only a
        # near-miss of the three outputs ("embeding") is caught early.
        close = difflib.get_close_matches(str(rep), REPRESENTATIONS, n=1, cutoff=0.75)
        if not isinstance(rep, str) or not rep or (close and rep not in REPRESENTATIONS):
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"config field '{prefix}.representation': expected logits, embedding, "
                f"projection or a stage name of the models (layer3, layer4, ...), got "
                f"{rep!r}{hint}"
            )
        if self.loss not in LOSSES:
            hint = did_you_mean(self.loss, list(LOSSES))  # case-insensitive: SupCon_KD
            raise ConfigError(
                f"config field '{prefix}.loss': expected one of {', '.join(LOSSES)}, "
                f"got {self.loss!r}{hint}"
            )
        if LOSSES[self.loss].multi_stage:
            if rep != "logits":
                raise ConfigError(
                    f"config field '{prefix}.representation': loss {self.loss!r} reads the "
                    f"stages of {prefix}.loss_args.stages (or its default), got {rep!r}; "
                    "leave representation unset"
                )
            if self.teacher_cache == "on":
                raise ConfigError(
                    f"config field '{prefix}.teacher_cache': the cache holds one "
                    f"representation, loss {self.loss!r} reads several stages; use auto or off"
                )
        try:
            build_loss(self.loss, **self.loss_args)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"config field '{prefix}.loss_args': {exc}") from None


def _pick(out: ModelOutput, representation: str) -> Tensor | None:
    return getattr(out, representation)


def _forward(model: nn.Module, x: Tensor, representation: str) -> tuple[Tensor, Tensor | None]:
    """(logits (B, C), representation (B, ...) or None) of ``model`` on ``x``.

    A stage name runs ``model.forward_intermediates`` (which also gives the logits, so the
    student still takes one forward); ConfigError when the model has no such stage.
    """
    if representation in REPRESENTATIONS:
        out = as_model_output(model(x))
        return out.logits, _pick(out, representation)
    intermediates = getattr(model, "forward_intermediates", None)
    if intermediates is None:
        raise ConfigError(
            f"config field 'task.representation': {representation!r} is a stage name, but "
            f"{type(model).__name__} has no forward_intermediates; use "
            f"{', '.join(REPRESENTATIONS)}"
        )
    feats = intermediates(x)
    if representation not in feats or "logits" not in feats:
        valid = [*REPRESENTATIONS, *(k for k in feats if k not in REPRESENTATIONS)]
        raise ConfigError(
            f"config field 'task.representation': expected one of {', '.join(valid)}, "
            f"got {representation!r}"
        )
    return feats["logits"], feats[representation]


@torch.no_grad()
def _probe_width(model: nn.Module, representation: str, example: Tensor) -> int:
    """Width of ``representation`` for ``model`` from one forward in eval mode (no BN update)."""
    was_training = model.training
    model.eval()
    param = next(iter(model.parameters()), None)
    if param is not None:
        example = example.to(param.device)
    try:
        _, z = _forward(model, example, representation)
    finally:
        model.train(was_training)
    if z is None:
        raise ConfigError(
            f"config field 'task.representation': the model has no {representation!r} output"
        )
    return int(z.reshape(z.shape[0], -1).shape[1])


@torch.no_grad()
def _check_stage(teacher: nn.Module, student: nn.Module, representation: str,
                 example: Tensor) -> None:
    """For a stage name: ConfigError naming the model that lacks it (teacher or student,
    e.g. a ViT teacher with a ResNet student) and the stages both have."""
    if representation in REPRESENTATIONS:
        return
    stages: dict[str, list[str]] = {}
    for who, model in (("teacher", teacher), ("student", student)):
        if getattr(model, "forward_intermediates", None) is None:
            return  # _forward says it
        was_training = model.training
        model.eval()
        param = next(iter(model.parameters()), None)
        try:
            x = example.to(param.device) if param is not None else example
            stages[who] = [k for k in model.forward_intermediates(x) if k not in REPRESENTATIONS]
        finally:
            model.train(was_training)
    lacking = [w for w, names in stages.items() if representation not in names]
    if not lacking:
        return
    arch = {w: getattr(m, "spec", {}).get("name") or type(m).__name__
            for w, m in (("teacher", teacher), ("student", student))}
    if len(lacking) == 2:
        who = (f"neither the teacher ({arch['teacher']}) nor the student "
               f"({arch['student']}) has it")
    else:
        other = "student" if lacking[0] == "teacher" else "teacher"
        who = (f"the {lacking[0]} ({arch[lacking[0]]}) has no such stage (the {other}, "
               f"{arch[other]}, has)")
    both = [k for k in stages["teacher"] if k in stages["student"]]
    raise ConfigError(
        f"config field 'task.representation': expected a stage both models have "
        f"({', '.join(both) or 'none'}) or one of {', '.join(REPRESENTATIONS)}, got "
        f"{representation!r}: {who}")


def _warn_suspicious(cfg: Config, loss: KDLoss) -> None:
    """A SupkdWarning (once) for settings that are legal but do not do what they seem to:
    an α warm-up longer than the run (α never reaches task.alpha), and a loss that compares
    the samples of a batch trained on batches of one (its value and gradient are then 0:
    found by evaluating it on one random sample, not from a list of losses)."""
    t, epochs = cfg.task, cfg.train.epochs
    if t.alpha_warmup_epochs > epochs:
        warnings.warn(
            f"config field 'task.alpha_warmup_epochs': a warm-up of {t.alpha_warmup_epochs:g} "
            f"epochs is longer than the run ({epochs} epochs, train.epochs): the KD weight "
            f"reaches task.alpha only after the run ends", SupkdWarning, stacklevel=3)
    if cfg.train.batch_size != 1 or not loss.compares_samples or _binds(loss):
        return
    gen = torch.Generator().manual_seed(0)  # its own generator: the run's streams untouched
    s = torch.randn(1, 8, generator=gen, requires_grad=True)
    try:
        value = loss(s, torch.randn(1, 8, generator=gen), torch.zeros(1, dtype=torch.long))
        (grad,) = torch.autograd.grad(value, s, allow_unused=True)
    except (ValueError, RuntimeError):
        return  # the run itself will say what is wrong
    if float(value.detach().abs()) == 0.0 and (grad is None or not bool(grad.any())):
        warnings.warn(
            f"config field 'train.batch_size': loss '{t.loss}' compares the samples of a "
            "batch, and on batches of 1 its value and gradient are 0: the student learns "
            "only from the CE term; use a batch of at least 2", SupkdWarning, stacklevel=3)


def _stage_features(
    model: nn.Module, x: Tensor, names: list[str], preact: bool
) -> tuple[Tensor, list[Tensor]]:
    """(logits (B, C), [stage (B, ...) for each of ``names``]) from one forward."""
    feats = model.forward_intermediates(x, preact=preact)
    return feats["logits"], [feats[n] for n in names]


@torch.no_grad()
def _probe_stages(model: nn.Module, example: Tensor, preact: bool, who: str) -> dict[str, Tensor]:
    """``forward_intermediates`` of ``model`` on ``example`` in eval mode (no BN update)."""
    if getattr(model, "forward_intermediates", None) is None:
        raise ConfigError(
            f"config field 'task.loss': reads stages of the models, and the {who} "
            f"({type(model).__name__}) has no forward_intermediates"
        )
    was_training = model.training
    model.eval()
    param = next(iter(model.parameters()), None)
    try:
        return model.forward_intermediates(
            example.to(param.device) if param is not None else example, preact=preact
        )
    except ValueError as exc:  # e.g. a model without pre-activation outputs
        raise ConfigError(f"config field 'task.loss': the {who}: {exc}") from None
    finally:
        model.train(was_training)


def _bind_stage_loss(
    loss: Any, student: nn.Module, teacher: nn.Module, example: Tensor,
    num_samples: int | None, seed: int,
) -> tuple[list[str], list[str]]:
    """Resolve a multi-stage loss's stages on both models and bind it to their shapes;
    (student stage names, teacher stage names). ConfigError naming the field at fault."""
    feats_s = _probe_stages(student, example, loss.student_preact, "student")
    feats_t = _probe_stages(teacher, example, loss.teacher_preact, "teacher")
    try:
        names_s = loss.select_stages(list(feats_s), "the student", "student")
        names_t = loss.select_stages(list(feats_t), "the teacher", "teacher")
    except ValueError as exc:
        raise ConfigError(f"config field 'task.loss_args.stages': {exc}") from None
    if len(names_s) != len(names_t):
        raise ConfigError(
            f"config field 'task.loss_args.stages': the student's stages "
            f"({', '.join(names_s)}) and the teacher's ({', '.join(names_t)}) differ in "
            "number; pair them with {student: [...], teacher: [...]}"
        )
    bn = None
    if loss.needs_teacher_bn:
        try:
            table = teacher.bn_before_relu()
            bn = [table[n] for n in names_t]
        except (AttributeError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"config field 'task.teacher': loss {type(loss).__name__} needs the "
                f"teacher's BatchNorm before each stage's ReLU (bn_before_relu): {exc}"
            ) from None
    try:
        loss.bind_stages(
            [tuple(feats_s[n].shape[1:]) for n in names_s],
            [tuple(feats_t[n].shape[1:]) for n in names_t],
            num_samples, seed, teacher_bn=bn,
        )
    except ValueError as exc:
        raise ConfigError(f"config field 'task.loss': {exc}") from None
    return names_s, names_t


def _binds(loss: nn.Module) -> bool:
    """True for a loss with its own :meth:`KDLoss.bind` (learned parts or per-sample state)."""
    return isinstance(loss, KDLoss) and type(loss).bind is not KDLoss.bind


@register_task
class DistillTask(Task):
    """Student trained with ``ce_weight·CE(s_logits, y) + α·L_KD(z_s, z_t, y)`` (paper Eq. 6).

    The teacher is frozen (``requires_grad=False``) and always in eval mode (BatchNorm running
    statistics, no dropout), whatever mode the task is put in. ``z`` is the chosen
    representation; when student and teacher widths differ and the loss compares features
    element-wise (``loss.same_width``), a learned ``nn.Linear(D_s, D_t)`` adapter maps the
    student's representation (docs/design.md §4). The adapter belongs to the task: it is saved in
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
        alpha_warmup_epochs: float = 0.0,
        num_samples: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if not isinstance(representation, str) or not representation:
            raise ValueError(f"representation must be a non-empty name, got {representation!r}")
        if alpha_warmup_epochs < 0:
            raise ValueError(f"alpha_warmup_epochs must be >= 0, got {alpha_warmup_epochs!r}")
        self.model = student
        self.teacher = teacher
        for p in teacher.parameters():
            p.requires_grad_(False)
        teacher.eval()
        self.criterion = loss
        self.alpha = float(alpha)
        self.alpha_warmup_epochs = float(alpha_warmup_epochs)
        self.progress = 0.0  # epochs done at the end of the current step (set_progress)
        self.ce_weight = float(ce_weight)
        self.representation = representation
        self.label_smoothing = label_smoothing
        self.cache = cache
        self.teacher_source = teacher_source
        self.adapter: nn.Module | None = None
        self.stage_names: tuple[list[str], list[str]] | None = None
        if getattr(loss, "multi_stage", False):
            self.stage_names = _bind_stage_loss(loss, student, teacher, example, num_samples,
                                                seed)
            self.widths = (0, 0)  # per-stage shapes: the loss's own parts hold them
            return
        _check_stage(teacher, student, representation, example)
        d_t = _probe_width(teacher, representation, example)
        d_s = _probe_width(student, representation, example)
        self.widths = (d_s, d_t)
        if d_s != d_t and getattr(loss, "same_width", True):
            self.adapter = nn.Linear(d_s, d_t)
        if _binds(loss):
            try:
                loss.bind(d_t if self.adapter is not None else d_s, d_t, num_samples, seed)
            except ValueError as exc:
                raise ConfigError(f"config field 'task.loss': {exc}") from None

    # --- construction from a config -----------------------------------------------------

    @classmethod
    def build(cls, cfg: Config, bundle: Any, device: torch.device) -> Task:
        t = cfg.task
        try:
            rec = load_model_record(t.teacher)
        except CheckpointError as exc:
            raise CheckpointError(f"config field 'task.teacher': {exc}") from None
        teacher = rec.model
        _check_teacher(rec, bundle, t)
        warn_if_unfinished(rec, "task.teacher")
        proj_dim = cfg.model.projection_dim
        if t.representation == "projection" and proj_dim is None:
            proj_dim = teacher.head.projection_dim
        student = new_model(cfg, bundle, projection_dim=proj_dim)
        loss = build_loss(t.loss, **t.loss_args)
        _warn_suspicious(cfg, loss)
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
            representation=t.representation,
            label_smoothing=t.label_smoothing,
            teacher_source=str(t.teacher),
            alpha_warmup_epochs=t.alpha_warmup_epochs,
            num_samples=len(bundle.train),
            # The run's init seed (engine: seed_everything(seeds.init) before the build), the
            # same on every rank; rank 0's is sent anyway so a loss's state can never differ.
            seed=dist_utils.broadcast_object(torch.initial_seed()) if _binds(loss) else 0,
        )
        if task.stage_names is None:  # the cache holds one representation
            task.cache = _teacher_cache(teacher.to(device), bundle, rec.run_dir, device, cfg)
        return task

    # --- the step ------------------------------------------------------------------------

    def train(self, mode: bool = True) -> DistillTask:
        super().train(mode)
        self.teacher.eval()  # frozen teacher: always BatchNorm running statistics
        return self

    def set_progress(self, epochs: float) -> None:
        self.progress = float(epochs)

    def kd_weight(self) -> float:
        """α of the current step (α itself without warm-up)."""
        if self.alpha_warmup_epochs <= 0:
            return self.alpha
        return self.alpha * min(1.0, self.progress / self.alpha_warmup_epochs)

    def teacher_features(self, batch: Any) -> Tensor:
        """Teacher representation (B, D_t) of the batch's views, constant (no graph)."""
        index, aug = getattr(batch, "index", None), getattr(batch, "aug", None)
        if self.cache is not None and index is not None and aug is not None:
            return self.cache.lookup(index, aug)
        with torch.no_grad():
            _, z = _forward(self.teacher, batch.x, self.representation)
        return z.reshape(z.shape[0], -1)

    def _stage_step(self, batch: Any) -> tuple[Tensor, Tensor]:
        """(student logits, L_KD) of a multi-stage loss: both models' selected stages."""
        names_s, names_t = self.stage_names  # type: ignore[misc]
        crit, y = self.criterion, batch.y
        with torch.no_grad():  # teacher first, as in training_step
            _, feats_t = _stage_features(self.teacher, batch.x, names_t, crit.teacher_preact)
        logits, feats_s = _stage_features(self.model, batch.x, names_s, crit.student_preact)
        if crit.compares_samples and dist_utils.world_size() > 1:
            feats_s = [dist_utils.gather_with_grad(f) for f in feats_s]
            feats_t = [dist_utils.gather_with_grad(f) for f in feats_t]
            y = dist_utils.gather_with_grad(y)
        return logits, crit(feats_s, feats_t, y)

    def training_step(self, batch: Any) -> dict[str, Tensor]:
        x, y = batch.x, batch.y
        if self.stage_names is not None:
            logits, kd = self._stage_step(batch)
            return self._parts(logits, y, kd)
        # Teacher first: its forward (no grad) then frees its activations before the
        # student's saved ones exist, so the step's peak memory is the larger of the two,
        # not their sum (student first: +28 MiB, +57%, at batch 64 on the CPU; issue 18).
        # The teacher is frozen and in eval mode, so the order changes no number.
        z_t = self.teacher_features(batch)
        logits, z_s = _forward(self.model, x, self.representation)
        z_s = z_s.reshape(x.shape[0], -1)
        if self.adapter is not None:
            z_s = self.adapter(z_s)
        labels, extra = y, self._index_of(batch)
        if getattr(self.criterion, "compares_samples", False) and dist_utils.world_size() > 1:
            # Losses that compare samples must see the global batch (docs/design.md §8).
            z_s = dist_utils.gather_with_grad(z_s)
            z_t = dist_utils.gather_with_grad(z_t)
            labels = dist_utils.gather_with_grad(y)
            extra = {k: dist_utils.gather_with_grad(v) for k, v in extra.items()}
        kd = self.criterion(z_s, z_t, labels, **extra)
        return self._parts(logits, y, kd)

    def _parts(self, logits: Tensor, y: Tensor, kd: Tensor) -> dict[str, Tensor]:
        """The step's loss ``ce_weight·CE + α·L_KD`` and its logged parts."""
        ce = ce_loss(logits, y, self.label_smoothing)
        weight = self.kd_weight()
        loss = self.ce_weight * ce + weight * kd
        parts = {"loss": loss, "ce": ce.detach(), "kd": kd.detach(), "acc": accuracy(logits, y)}
        if self.alpha_warmup_epochs > 0:
            parts["kd_weight"] = torch.full((), weight, device=loss.device)
        return parts

    def _index_of(self, batch: Any) -> dict[str, Tensor]:
        """``{"index": batch.index}`` for a loss with ``needs_index``, else ``{}``."""
        if not getattr(self.criterion, "needs_index", False):
            return {}
        index = getattr(batch, "index", None)
        if index is None:
            raise ConfigError(
                f"config field 'task.loss': {type(self.criterion).__name__} needs each "
                "sample's index in the training split (Batch.index), and the training "
                "loader gives none (a loader of plain (x, y) batches?)"
            )
        return {"index": index}

    # --- what the task owns beyond the student -------------------------------------------

    def extra_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"widths": list(self.widths)}
        if self.stage_names is not None:
            state["stages"] = {"student": self.stage_names[0], "teacher": self.stage_names[1]}
        if self.adapter is not None:
            state["adapter"] = {k: v.detach().cpu() for k, v in self.adapter.state_dict().items()}
        loss_state = self.criterion.state_dict()
        if loss_state:  # a loss's learned parts and per-sample state (CRD); most have none
            state["loss"] = {
                k: v.detach().cpu() if isinstance(v, Tensor) else v for k, v in loss_state.items()
            }
        return state

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if self.adapter is not None:
            if "adapter" not in state:
                raise CheckpointError("checkpoint: the KD adapter's weights are missing")
            self.adapter.load_state_dict(state["adapter"])
        if self.criterion.state_dict():
            if "loss" not in state:
                raise CheckpointError(
                    f"checkpoint: the state of the KD loss ({type(self.criterion).__name__}: "
                    "learned parts, memory bank) is missing"
                )
            self.criterion.load_state_dict(state["loss"])

    def networks(self) -> list[nn.Module]:
        return [self.model, self.teacher]

    def model_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {"task": self.name, "trained": ["encoder", "classifier"]}
        if self.representation == "projection":
            info["trained"].append("head")
        info["teacher"] = self.teacher_source
        return info


def _check_teacher(rec: ModelRecord, bundle: Any, t: DistillConfig) -> None:
    """ConfigError when the loaded teacher does not fit the data or cannot give the
    representation ``t.representation`` (missing head, or an untrained part)."""
    teacher, spec = rec.model, rec.model.spec
    check_input_shape(spec, bundle, "task.teacher")
    if int(spec["num_classes"]) != int(bundle.num_classes):
        raise ConfigError(
            f"config field 'task.teacher': teacher {t.teacher} has {spec['num_classes']} "
            f"classes, the data set '{getattr(bundle, 'name', '?')}' has {bundle.num_classes}"
        )
    rep = t.representation
    if LOSSES[t.loss].multi_stage:
        rep = "stages"  # the conv stages (and embedding) of the encoder
    if rep == "projection" and teacher.head is None:
        raise ConfigError(
            f"config field 'task.representation': teacher {t.teacher} has no projection "
            "head (a CE teacher?); use logits or embedding"
        )
    needed = {"logits": "classifier", "embedding": "encoder", "projection": "head"}.get(
        rep, "encoder"  # a stage of forward_intermediates
    )
    if needed not in rec.trained_parts:
        hint = (
            " (run the linear stage on it first: task.name=linear task.encoder=<that run>)"
            if needed == "classifier"
            else ""
        )
        raise ConfigError(
            f"config field 'task.representation': {rep!r} of teacher {t.teacher} was not "
            f"trained (its {needed} is untrained){hint}"
        )


def _teacher_cache(
    teacher: nn.Module, bundle: Any, teacher_dir: Path | None, device: torch.device, cfg: Config
) -> Any:
    """The exact teacher-logit cache when it applies, else None (teacher runs live).

    Under DDP rank 0 alone builds (or loads) and writes the table, then the others read it.
    Rank 0's outcome, ok or its UserError, is broadcast first so that every rank raises the
    same error or goes on (as the engine's run-directory preparation): a rank left waiting for
    a rank 0 that has raised would die in the torn-down process group, with a traceback, or
    hang.
    """
    if cfg.task.teacher_cache == "off":
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
    alpha_warmup_epochs: float = 0.0,
    num_samples: int | None = None,
    seed: int = 0,
) -> DistillTask:
    """A distill task over the user's own modules (any ``nn.Module`` whose forward returns
    logits (B, C) or a ``ModelOutput``); ``example`` is an input batch (B, ...) used once to
    read the representation widths (for a multi-stage loss, the stage shapes its connectors
    are built for; both modules then need ``forward_intermediates``). ``num_samples`` (the
    training set's size) and ``seed`` are for losses with per-sample state (``crd``), whose
    batches must carry ``index``."""
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
        alpha_warmup_epochs=alpha_warmup_epochs,
        num_samples=num_samples,
        seed=seed,
    )

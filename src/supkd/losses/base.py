"""The base class of every KD loss: input checks, teacher detach, float32 computation and
the metadata that ``supkd losses`` and the report read.

Every loss is called as ``loss(student, teacher, labels=None)`` with
student (B, D_s), teacher (B, D_t), labels (B,) integer or None, and returns a scalar.
Common behaviour (in :class:`KDLoss`):

- the teacher is detached: no gradient ever reaches it;
- the body runs in float32 even under autocast (float64 inputs stay float64);
- reductions do not grow with the batch size (mean over samples, or /B² for Gram);
- bad shapes raise ValueError naming both shapes;
- what ``compute`` returns is checked (a scalar tensor; for a user's loss also finite and
  connected to the student), and a user's ``compute`` that raises is reported with its
  own frames only (:mod:`supkd.losses.checks`).

Class attributes (a subclass sets those that differ from the defaults):

- for the report and ``supkd losses``: ``label`` (row label of the report's tables; empty:
  the registry name), ``paper_eq`` (the equation, "Eq. 1" or a short formula), ``reference``
  (the paper that defines the loss), ``summary`` (one line), ``kd_table_row`` (the report's
  KD tables, the paper's II and IV, have a row for this loss; runs of other losses go to
  the report's table of methods beyond the paper's tables);
- for the distill task: ``needs_labels`` (the task should pass labels), ``compares_samples``
  (the value couples samples of the batch, so under DDP the task gathers the global batch
  first), ``same_width`` (student and teacher widths must be equal; otherwise the task
  inserts an adapter), ``needs_index`` (the loss keeps per-sample state: the task passes
  ``index=``, each sample's index in the training split, the loaders' ``Batch.index``),
  ``flatten_inputs`` (inputs (B, ...) of any rank ≥ 2 are accepted and flattened per sample
  to (B, D), e.g. a conv stage's (B, C, H, W) map).

Losses with learned parts or per-sample state build them in :meth:`KDLoss.bind`, which the
distill task calls once, before the optimizer is built, with the representation widths and
the training split's size (a no-op for the stateless losses).

Multi-stage losses (feature distillation: FitNet, AT, OFD, ReviewKD, ...) subclass
:class:`StageKDLoss` instead, the one mechanism for reading several stages of both models:

- ``multi_stage = True`` (the flag the distill task reads); ``stages`` (constructor argument,
  ``task.loss_args.stages``): which entries of the models' ``forward_intermediates`` the loss
  reads, each a name (``layer2``, ``embedding``, ``logits``) or an integer position among the
  *conv stages* (``stem`` = 0, negative from the deepest); one list for both models, or
  ``{"student": [...], "teacher": [...]}`` to pair stages of models of different depths
  (entry k of each list is pair k); None: the method's published
  default (``default_stages``, which may hold a ``slice`` of the conv stages, e.g.
  ``slice(1, None)``: every stage but the stem). :meth:`StageKDLoss.select_stages` resolves
  them against a model's entry names.
- ``student_preact`` / ``teacher_preact``: read that model's stage outputs before their final
  ReLU (``forward_intermediates(x, preact=True)``; OFD, ReviewKD's teacher).
- ``needs_teacher_bn``: :meth:`StageKDLoss.bind_stages` also gets the teacher's
  ``bn_before_relu()`` BatchNorms of the chosen stages (OFD's margins).
- :meth:`StageKDLoss.bind_stages` (per-stage shapes of both models, without the batch
  dimension) builds the connectors the loss trains; they are submodules of the loss, so
  they train with the student and travel in the loss's ``state_dict`` (the task's checkpoint
  state), never in the student's weights.
- the call is ``loss([s_1, ..., s_K], [t_1, ..., t_K], labels)`` with the chosen stages in
  order, each (B, ...) (a conv stage (B, C, H, W), ``embedding`` (B, F)); ``compute``
  receives the lists, validated and upcast as for the other losses.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from supkd.losses.checks import checked_compute
from supkd.losses.common import check_index, check_labels, full_precision, upcast

__all__ = ["PAPER", "KDLoss", "StageArg", "StageKDLoss", "StageSelector", "stage_error"]

#: The paper whose Eq. 1-5 the built-in losses implement (docs/design.md §4 reads its ambiguities).
PAPER = (
    "Lee, Hyeon & Jeon, \"Designing Distillation Losses for Effective Knowledge Transfer "
    "from SupCon Representations\""
)


class KDLoss(nn.Module, abc.ABC):
    """Base class: input checks, teacher detach and float32 computation.

    Subclasses implement :meth:`compute` on validated, upcast tensors and are made buildable
    by name with :func:`supkd.losses.register_loss`.
    """

    label: ClassVar[str] = ""
    paper_eq: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    kd_table_row: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False
    compares_samples: ClassVar[bool] = False
    needs_index: ClassVar[bool] = False
    flatten_inputs: ClassVar[bool] = False
    multi_stage: ClassVar[bool] = False  # True: a StageKDLoss (lists of per-stage tensors)
    # Not a ClassVar: GramLoss sets it per instance (True only in channel mode).
    same_width: bool = True

    def forward(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """student (B, D_s), teacher (B, D_t), labels (B,) or None -> scalar.

        ``index`` (B,): each sample's index in the training split, required by (and only
        passed on to) losses with ``needs_index``; ignored by the others.
        """
        student, teacher = self._check(student, teacher)
        what = f"student {tuple(student.shape)} / teacher {tuple(teacher.shape)}"
        labels = check_labels(labels, student.shape[0], what)
        extra: dict[str, torch.Tensor] = {}
        if self.needs_index:
            if index is None:
                raise ValueError(
                    f"{type(self).__name__}: needs each sample's index in the training split "
                    "(index=..., the loaders' Batch.index)"
                )
            extra["index"] = check_index(index, student.shape[0], what)
        teacher = teacher.detach()
        with full_precision(student, teacher):
            s, t = upcast(student), upcast(teacher)
            if s.dtype != t.dtype:
                # e.g. float64 student vs float32 teacher: compute in the wider type.
                wide = torch.promote_types(s.dtype, t.dtype)
                s, t = s.to(wide), t.to(wide)
            if labels is not None:
                labels = labels.to(s.device)
            if extra:
                extra = {k: v.to(s.device) for k, v in extra.items()}
            # what compute returns is checked; a plugin's own failure keeps only its frames
            return checked_compute(self, s, t, labels, **extra)

    def bind(
        self, student_width: int, teacher_width: int, num_samples: int | None, seed: int = 0
    ) -> None:
        """Build what the loss learns or keeps per sample, for inputs (B, student_width) and
        (B, teacher_width) over a training split of ``num_samples`` samples (None when
        unknown); ``seed`` seeds any random state it draws. The distill task calls it once,
        before the optimizer is built (so learned parts are trained), with a seed drawn from
        the run's initialization generator, the same on every DDP rank. Default: nothing."""

    def _check(
        self, student: torch.Tensor, teacher: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate the inputs; return them, flattened to (B, D) for ``flatten_inputs``."""
        for name, x in (("student", student), ("teacher", teacher)):
            if not isinstance(x, torch.Tensor):
                raise ValueError(f"{name}: expected a tensor, got {type(x).__name__}")
            if not x.is_floating_point():
                raise ValueError(f"{name}: expected a floating tensor, got dtype {x.dtype}")
        s_shape, t_shape = tuple(student.shape), tuple(teacher.shape)
        both = f"student shape {s_shape}, teacher shape {t_shape}"
        ranks_ok = (
            student.dim() >= 2 and teacher.dim() >= 2
            if self.flatten_inputs
            else student.dim() == 2 and teacher.dim() == 2
        )
        if not ranks_ok:
            expected = "(B, ...) inputs of rank >= 2" if self.flatten_inputs else "(B, D) inputs"
            raise ValueError(f"{type(self).__name__}: expected {expected}, got {both}")
        if s_shape[0] != t_shape[0]:
            raise ValueError(f"{type(self).__name__}: batch sizes differ, {both}")
        if s_shape[0] == 0:
            raise ValueError(f"{type(self).__name__}: empty batch, {both}")
        if self.flatten_inputs:
            student = student.reshape(s_shape[0], -1)
            teacher = teacher.reshape(t_shape[0], -1)
        if self.same_width and student.shape[1] != teacher.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: widths differ ({student.shape[1]} vs "
                f"{teacher.shape[1]}) and this loss compares features element-wise; {both} "
                "(use an adapter)"
            )
        return student, teacher

    @abc.abstractmethod
    def compute(
        self, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor | None
    ) -> torch.Tensor:
        """The loss on validated float32/float64 tensors (teacher already detached); losses
        with ``needs_index`` also get ``index=`` (B,) long, on the inputs' device."""


#: One entry of ``stages``: a name of ``forward_intermediates``, a position among the conv
#: stages, or (in ``default_stages`` only) a slice of them.
StageSelector = str | int | slice

#: ``stages``: one list for both models, or one per side (``{"student": [...], "teacher":
#: [...]}``), or None (the method's default).
StageArg = Sequence[str | int] | Mapping[str, Sequence[str | int]] | None

#: Entries of ``forward_intermediates`` that are not conv stages.
_NON_CONV = ("embedding", "logits")


SIDES = ("student", "teacher")


def _check_stage_list(stages: object, where: str) -> tuple[str | int, ...]:
    if isinstance(stages, str | int) or not isinstance(stages, Sequence) or not stages:
        raise ValueError(
            f"argument '{where}': expected a non-empty list of stage names (layer2, "
            f"embedding, ...) or conv-stage positions (0 = stem, -1 = the deepest), got "
            f"{stages!r}"
        )
    for item in stages:
        if isinstance(item, bool) or not isinstance(item, str | int) or item == "":
            raise ValueError(
                f"argument '{where}': expected stage names or integer positions, got "
                f"{item!r} in {list(stages)!r}"
            )
    return tuple(stages)


def _check_stages(stages: object) -> dict[str, tuple[str | int, ...]] | None:
    """None, one list for both models, or ``{"student": [...], "teacher": [...]}`` (models
    of different depths) -> one selector tuple per side."""
    if stages is None:
        return None
    if isinstance(stages, Mapping):
        if set(stages) != set(SIDES):
            raise ValueError(
                "argument 'stages': a mapping needs exactly the keys student and teacher, got "
                f"{sorted(map(str, stages))}"
            )
        return {side: _check_stage_list(stages[side], f"stages.{side}") for side in SIDES}
    one = _check_stage_list(stages, "stages")
    return {side: one for side in SIDES}


class StageKDLoss(KDLoss):
    """Base class of the losses that read several stages of both models (module docstring).

    ``forward(student_list, teacher_list, labels=None)``: two equally long sequences of
    tensors, entry k of each (B, ...) with the same B; the teachers are detached and every
    tensor upcast to float32 (float64 stays), then :meth:`compute` gets the lists.
    """

    multi_stage = True
    same_width = False
    default_stages: ClassVar[tuple[StageSelector, ...]] = (slice(1, None),)
    student_preact: ClassVar[bool] = False
    teacher_preact: ClassVar[bool] = False
    needs_teacher_bn: ClassVar[bool] = False

    def __init__(self, stages: StageArg = None) -> None:
        super().__init__()
        self.stages = _check_stages(stages)

    def select_stages(
        self, names: Sequence[str], model: str = "model", side: str = "student"
    ) -> list[str]:
        """The entry names this loss reads from the ``side`` (student | teacher) model whose
        ``forward_intermediates`` has keys ``names`` (conv stages first, then ``embedding``,
        ``logits``), in order.

        ValueError naming ``model``, the selector and the valid names when one does not fit.
        """
        if side not in SIDES:
            raise ValueError(f"side must be student or teacher, got {side!r}")
        conv = [n for n in names if n not in _NON_CONV]
        chosen: list[str] = []
        for item in self.stages[side] if self.stages is not None else self.default_stages:
            if isinstance(item, slice):
                picked = conv[item]
            elif isinstance(item, int):
                if not -len(conv) <= item < len(conv):
                    raise ValueError(
                        f"{type(self).__name__}: stage position {item} is out of range for "
                        f"{model}, whose conv stages are {', '.join(conv)}"
                    )
                picked = [conv[item]]
            elif item in names:
                picked = [item]
            else:
                raise ValueError(
                    f"{type(self).__name__}: {model} has no stage {item!r}; valid: "
                    f"{', '.join(names)}"
                )
            chosen += picked
        if not chosen:
            raise ValueError(f"{type(self).__name__}: no stage of {model} selected")
        return chosen

    def bind_stages(
        self,
        student_shapes: Sequence[tuple[int, ...]],
        teacher_shapes: Sequence[tuple[int, ...]],
        num_samples: int | None = None,
        seed: int = 0,
        teacher_bn: Sequence[nn.BatchNorm2d] | None = None,
    ) -> None:
        """Build the loss's trained parts for the chosen stages: ``student_shapes[k]`` and
        ``teacher_shapes[k]`` are stage k's per-sample shapes ((C, H, W) or (D,));
        ``teacher_bn`` the teacher's BatchNorms before each stage's ReLU (only for
        ``needs_teacher_bn``). ValueError naming both shapes when a pair cannot be matched.
        Default: nothing (a loss without trained parts)."""

    def forward(  # type: ignore[override]
        self,
        student: Sequence[torch.Tensor],
        teacher: Sequence[torch.Tensor],
        labels: torch.Tensor | None = None,
        *,
        index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """student [(B, ...)] * K, teacher [(B, ...)] * K, labels (B,) or None -> scalar."""
        name = type(self).__name__
        if isinstance(student, torch.Tensor) or isinstance(teacher, torch.Tensor):
            raise ValueError(
                f"{name}: expected lists of per-stage tensors (one per stage read), got a "
                "single tensor"
            )
        student, teacher = list(student), list(teacher)
        if not student or len(student) != len(teacher):
            raise ValueError(
                f"{name}: expected as many student as teacher stages (at least one), got "
                f"{len(student)} and {len(teacher)}"
            )
        for k, (s, t) in enumerate(zip(student, teacher, strict=True)):
            for side, x in (("student", s), ("teacher", t)):
                if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                    got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
                    raise ValueError(f"{name}: {side} stage {k}: expected a floating tensor, "
                                     f"got {got}")
            both = f"student shape {tuple(s.shape)}, teacher shape {tuple(t.shape)}"
            if s.dim() < 2 or t.dim() < 2 or s.shape[0] != t.shape[0] or s.shape[0] == 0:
                raise ValueError(f"{name}: stage {k}: expected (B, ...) inputs with the same "
                                 f"B > 0, got {both}")
        what = f"student {tuple(student[0].shape)} / teacher {tuple(teacher[0].shape)}"
        labels = check_labels(labels, student[0].shape[0], what)
        teacher = [t.detach() for t in teacher]
        with full_precision(*student, *teacher):
            s_up, t_up = [upcast(x) for x in student], [upcast(x) for x in teacher]
            wide = s_up[0].dtype
            for x in (*s_up, *t_up):
                wide = torch.promote_types(wide, x.dtype)
            s_up, t_up = [x.to(wide) for x in s_up], [x.to(wide) for x in t_up]
            if labels is not None:
                labels = labels.to(s_up[0].device)
            return checked_compute(self, s_up, t_up, labels)

    @abc.abstractmethod
    def compute(  # type: ignore[override]
        self,
        student: list[torch.Tensor],
        teacher: list[torch.Tensor],
        labels: torch.Tensor | None,
    ) -> torch.Tensor:
        """The loss on validated lists of float32/float64 stage tensors (teachers detached)."""

    def extra_repr(self) -> str:
        if self.stages is None:
            return "stages=default"
        s, t = self.stages["student"], self.stages["teacher"]
        return f"stages={list(s)}" if s == t else f"stages=student {list(s)}, teacher {list(t)}"


def stage_error(loss: Any, k: int, s_shape: Sequence[int], t_shape: Sequence[int],
                why: str) -> ValueError:
    """The one message for a stage pair a loss cannot match: both shapes and the reason."""
    return ValueError(
        f"{type(loss).__name__}: stage {k}: student shape {tuple(s_shape)} and teacher shape "
        f"{tuple(t_shape)} {why}"
    )

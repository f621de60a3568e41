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
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from supkd.losses.checks import check_result, is_plugin, plugin_failure
from supkd.losses.common import check_index, check_labels, full_precision, upcast

__all__ = ["PAPER", "KDLoss"]

#: The paper whose Eq. 1-5 the built-in losses implement (DESIGN.md §4 reads its ambiguities).
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
            if not is_plugin(type(self)):
                out = self.compute(s, t, labels, **extra)
            else:
                try:
                    out = self.compute(s, t, labels, **extra)
                except (Exception, SystemExit) as exc:  # the user's code: exit 1, its frames
                    raise plugin_failure(self, exc) from None
            check_result(self, out, s, t)  # a scalar tensor, else one line naming the loss
            return out

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

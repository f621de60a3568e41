"""What a loss's ``compute`` must give back, checked where :class:`KDLoss.forward` calls it.

A user's loss (a plugin registered with ``@register_loss``) that returns the wrong thing
would otherwise crash deep in the engine (``'int' object has no attribute 'detach'``, a
per-sample tensor failing in ``backward``), far from its cause. So every ``compute`` result
is checked at once:

- always (every loss, every call; a type and a rank test cost nothing): a tensor, 0-dim
  (a scalar), floating point. Else :class:`LossResultError`, one line naming the loss, its
  file, what came back and what was expected (exit 2);
- for a plugin's loss (its class defined outside the supkd package), on its first call:
  the value is finite when its inputs are, and, when the student's tensor takes gradients
  and the loss should train it (a class attribute ``trains_student``, default True), the
  result takes gradients too (else the same one-line error: a ``.item()`` or a
  ``torch.tensor(...)`` rebuilt from numbers cannot train anything) and reaches the
  student's tensor (else a :class:`~supkd.errors.SupkdWarning`, once: a loss whose
  gradient only reaches its own parameters trains no student). Later non-finite values
  are the engine's divergence guard's, as for the built-in losses;
- a plugin's ``compute`` that raises (or calls ``sys.exit``) is a bug in the user's code,
  not bad input: :class:`PluginLossError` (exit 1), one header line naming the loss and
  its file, then the traceback of the plugin's own frames only (supkd's and torch's
  frames around it say nothing about the user's code).
"""

from __future__ import annotations

import functools
import inspect
import sys
import sysconfig
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

from supkd.errors import SupkdWarning, UserError

__all__ = ["LossResultError", "PluginLossError", "check_result", "checked_compute", "is_plugin",
           "loss_file", "plugin_failure"]

_SUPKD_DIR = Path(__file__).resolve().parents[1]
# Frames in these folders are the Python installation's and its packages', not the user's.
_LIBRARY_DIRS = tuple(
    str(Path(p).resolve()) for key in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_paths().get(key))
)


class LossResultError(UserError):
    """A loss's ``compute`` returned something that is not a usable loss value (exit 2)."""


class PluginLossError(UserError):
    """A plugin loss raised: a bug in the user's code (exit 1). ``details`` holds the
    traceback of the plugin's own frames, which the CLI prints after the header line."""

    exit_code = 1

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def loss_file(cls: type) -> str:
    """The file that defines loss class ``cls`` (its module's name when there is none)."""
    try:
        return inspect.getsourcefile(cls) or inspect.getfile(cls)
    except (TypeError, OSError):
        return cls.__module__


@functools.cache
def is_plugin(cls: type) -> bool:
    """Whether ``cls`` is defined outside the supkd package (a user's loss)."""
    path = Path(loss_file(cls))
    try:
        path.resolve().relative_to(_SUPKD_DIR)
    except (ValueError, OSError):
        return True
    return False


def _name(loss: Any) -> str:
    """``loss 'name' (file)``: the name it is registered under, else its class name."""
    cls = type(loss)
    # Looked up, not imported: the registry imports this module (through base.py).
    registry = getattr(sys.modules.get("supkd.losses.registry"), "LOSSES", {})
    names = [n for n, c in registry.items() if c is cls]
    shown = f"'{names[0]}'" if names else cls.__name__
    return f"loss {shown} ({loss_file(cls)})"


def _shown(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def checked_compute(loss: Any, student: Any, teacher: Any, labels: Any, **extra: Any) -> Any:
    """``loss.compute(student, teacher, labels, **extra)``, its result checked
    (:func:`check_result`); a plugin's exception becomes :class:`PluginLossError`."""
    if not is_plugin(type(loss)):
        out = loss.compute(student, teacher, labels, **extra)
    else:
        try:
            out = loss.compute(student, teacher, labels, **extra)
        except (Exception, SystemExit) as exc:  # the user's code: exit 1, its own frames
            raise plugin_failure(loss, exc) from None
    check_result(loss, out, student, teacher)
    return out


def check_result(loss: Any, out: Any, student: Any, teacher: Any) -> None:
    """Raise LossResultError unless ``out``, what ``loss.compute`` returned for ``student``
    (B, D_s) and ``teacher`` (B, D_t) (or, for a multi-stage loss, their lists of per-stage
    tensors), is a usable loss value (module docstring)."""
    if not isinstance(out, torch.Tensor) or out.dim() != 0 or not out.is_floating_point():
        raise LossResultError(
            f"{_name(loss)}: compute returned {_shown(out)}, expected a scalar float tensor "
            "(0-dim, e.g. the mean over the batch), computed from the student tensor")
    if getattr(loss, "_supkd_result_checked", False) or not is_plugin(type(loss)):
        return
    object.__setattr__(loss, "_supkd_result_checked", True)  # the costly checks: once
    students = list(student) if isinstance(student, list | tuple) else [student]
    teachers = list(teacher) if isinstance(teacher, list | tuple) else [teacher]
    if not bool(torch.isfinite(out)) and all(bool(torch.isfinite(x).all())
                                             for x in (*students, *teachers)):
        raise LossResultError(f"{_name(loss)}: compute returned {out.item()} on finite "
                              "inputs, expected a finite number")
    students = [x for x in students if x.requires_grad]
    if not (students and getattr(loss, "trains_student", True)):
        return
    if not out.requires_grad:
        raise LossResultError(
            f"{_name(loss)}: compute returned a tensor that takes no gradient, expected one "
            "computed from the student tensor with torch operations (not .item(), "
            ".detach(), numpy or torch.tensor(...)), or it cannot train the student")
    grads = torch.autograd.grad(out, students, retain_graph=True, allow_unused=True)
    if all(g is None for g in grads):
        warnings.warn(f"{_name(loss)}: its value has no gradient path to the student's "
                      "tensor (only to the loss's own parameters), so it does not train "
                      "the student", SupkdWarning, stacklevel=3)


def _own_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The traceback frames of ``exc`` outside supkd and the Python installation."""
    own = []
    for frame in traceback.extract_tb(exc.__traceback__):
        where = str(Path(frame.filename).resolve()) if frame.filename else ""
        if frame.filename.startswith("<") or where.startswith(str(_SUPKD_DIR)):
            continue
        if any(where.startswith(d) for d in _LIBRARY_DIRS):
            continue
        own.append(frame)
    return own


def plugin_failure(loss: Any, exc: BaseException) -> PluginLossError:
    """The PluginLossError for ``exc``, raised by (or through) plugin loss ``loss``."""
    if isinstance(exc, SystemExit):
        what = f"called sys.exit({exc.code!r}) inside compute"
    else:
        what = f"raised {type(exc).__name__}: {' '.join(str(exc).split())}"
    frames = _own_frames(exc)
    body = "".join(traceback.format_list(frames)) if frames else ""
    details = ("Traceback of the plugin's own code (most recent call last):\n" + body
               + "".join(traceback.format_exception_only(type(exc), exc))).rstrip("\n")
    return PluginLossError(f"{_name(loss)}: {what}", details)

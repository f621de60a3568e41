"""The registry of KD losses: ``@register_loss("name")``, ``LOSSES`` and ``build_loss``.

``LOSSES`` is a read-only ``Mapping`` from name to :class:`~supkd.losses.base.KDLoss`
subclass, in registration order (the built-in losses first, in the order of the paper's
Table II, then whatever a user's module registers). Only :func:`register_loss` adds to it;
a taken name is refused with a ``ValueError`` that names the class holding it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from supkd.losses.base import KDLoss
from supkd.utils.registry import Registry

__all__ = ["LOSSES", "build_loss", "loss_arguments", "loss_label", "register_loss"]

L = TypeVar("L", bound=type[KDLoss])

LOSSES: Registry[type[KDLoss]] = Registry("loss")


def register_loss(name: str) -> Callable[[L], L]:
    """Class decorator: make a :class:`KDLoss` subclass buildable as ``name``.

    Raises ``TypeError`` for anything but a KDLoss subclass and ``ValueError`` for an empty
    or taken name (the message names the class registered under it).
    """

    def decorate(cls: L) -> L:
        if not (isinstance(cls, type) and issubclass(cls, KDLoss)):
            raise TypeError(
                f"@register_loss({name!r}) decorates a subclass of supkd.losses.KDLoss, "
                f"got {cls!r}"
            )
        return LOSSES.add(name, cls)

    return decorate


def loss_arguments(cls: type) -> dict[str, Any]:
    """The constructor arguments of a loss class and their defaults, in order."""
    params = inspect.signature(cls.__init__).parameters
    return {
        name: p.default
        for name, p in params.items()
        if name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def loss_label(name: str) -> str:
    """How reports name the loss registered as ``name``: its ``label``, else the name with
    its equation (``"my_loss (Eq. 7)"``), else the bare name (also for unregistered names,
    e.g. a run of a plugin that this process has not imported)."""
    # Not LOSSES.get(name, None): Registry.get raises for an unknown name.
    cls = LOSSES[name] if name in LOSSES else None  # noqa: SIM401
    if cls is None:
        return name
    if cls.label:
        return cls.label
    return f"{name} ({cls.paper_eq})" if cls.paper_eq else name


def build_loss(name: str, **kwargs: Any) -> KDLoss:
    """Build the KD loss registered as ``name`` with constructor arguments ``kwargs``.

    Raises:
        ValueError: unknown ``name`` (the message lists the valid names and the closest
            one), an argument the loss does not take (the message names it and lists the
            valid ones), or an invalid value (temperature ≤ 0, unknown mode, non-bool flag;
            named in the message).
    """
    cls = LOSSES.get(name)
    valid = loss_arguments(cls)
    unknown = [k for k in kwargs if k not in valid]
    if unknown:
        allowed = ", ".join(valid) if valid else "none"
        raise ValueError(
            f"loss {name!r}: unknown argument '{unknown[0]}'; valid arguments: {allowed}"
        )
    return cls(**kwargs)

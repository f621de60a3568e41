"""The registry of models: ``@register_model``, ``@register_model_family``, ``create_model``.

A model is built by a *builder*: a function ``builder(name, **kwargs) -> nn.Module`` that
receives the requested name (so one builder can serve several names) and the keyword
arguments of :func:`create_model`. Two kinds of registration:

- ``@register_model("resnet18")``: one exact name (stack the decorator for several names);
- ``@register_model_family("timm")``: every name ``"timm/<arch>"``; the builder is handed
  the full name and parses ``<arch>`` itself (how a wrapper of another library's model zoo
  plugs in without listing its names). A family's builder may carry ``check_name(name)``
  (raising ValueError for a member the family does not have, e.g. an unknown timm
  architecture); :func:`find_model_builder` calls it, so a config is refused before any
  data is loaded.

A model file stores its ``spec`` (the keyword arguments, with ``name``), and
:func:`supkd.models.files.load_model` rebuilds the network with ``create_model(**spec)``;
a builder should therefore put into ``net.spec`` whatever it needs to rebuild the network.

A user's own model::

    from supkd.models import register_model

    @register_model("my_net")
    def build_my_net(name, num_classes=10, in_channels=3, **kwargs):
        ...
        return net   # forward(x) -> ModelOutput (logits, embedding, projection)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from supkd.utils.registry import Registry, did_you_mean

__all__ = [
    "MODELS",
    "MODEL_FAMILIES",
    "ModelBuilder",
    "create_model",
    "find_model_builder",
    "list_model_families",
    "list_models",
    "register_model",
    "register_model_family",
]

ModelBuilder = Callable[..., nn.Module]
B = TypeVar("B", bound=ModelBuilder)

#: Exact model names -> builder.
MODELS: Registry[ModelBuilder] = Registry("model")
#: Family prefixes (``"timm"`` for ``"timm/<arch>"``) -> builder.
MODEL_FAMILIES: Registry[ModelBuilder] = Registry("model family")


def register_model(name: str) -> Callable[[B], B]:
    """Decorator: ``builder(name, **kwargs)`` builds the model called ``name``. A name with
    a ``/`` belongs to a family (:func:`register_model_family`) and is refused here."""
    if isinstance(name, str) and "/" in name:
        raise ValueError(f"model name {name!r}: '/' separates a family from its member; "
                         "register the family with register_model_family")
    return MODELS.register(name)


def register_model_family(prefix: str) -> Callable[[B], B]:
    """Decorator: ``builder(name, **kwargs)`` builds every model ``f"{prefix}/<member>"``."""
    if not isinstance(prefix, str) or not prefix or "/" in prefix:
        raise ValueError(f"model family prefix must be a non-empty name without '/', "
                         f"got {prefix!r}")
    return MODEL_FAMILIES.register(prefix)


def list_models() -> list[str]:
    """The exact names accepted by :func:`create_model`, sorted."""
    return sorted(MODELS)


def list_model_families() -> list[str]:
    """The families accepted by :func:`create_model`, as ``"prefix/<name>"`` patterns."""
    return [f"{prefix}/<name>" for prefix in sorted(MODEL_FAMILIES)]


def find_model_builder(name: str) -> ModelBuilder:
    """The builder of ``name``: its exact registration, else its family's (``prefix/...``).

    Raises ValueError naming the valid models, the families and the closest name.
    """
    if isinstance(name, str):
        if name in MODELS:
            return MODELS[name]
        prefix, sep, member = name.partition("/")
        if sep and member and prefix in MODEL_FAMILIES:
            builder = MODEL_FAMILIES[prefix]
            check = getattr(builder, "check_name", None)
            if callable(check):
                check(name)
            return builder
    names = list_models()
    families = list_model_families()
    valid = ", ".join(names) + (f"; families: {', '.join(families)}" if families else "")
    close = did_you_mean(name, names) if isinstance(name, str) else ""
    raise ValueError(f"unknown model {name!r}; valid models: {valid}{close}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model registered as ``name`` (exactly, or through its family) with the
    builder's keyword arguments, e.g. ``create_model("resnet18", stem="cifar",
    num_classes=10, projection_dim=128)`` (see :func:`supkd.models.resnet.build_resnet`).

    Raises ValueError for an unknown name (listing the valid ones) or a bad value, and
    TypeError for an argument the builder does not take.
    """
    return find_model_builder(name)(name, **kwargs)

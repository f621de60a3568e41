"""One registry style for everything supkd builds by name: losses, tasks, models, data sets.

A :class:`Registry` maps names to objects (usually classes). ``@REGISTRY.register("name")``
adds one and refuses a name that is taken; ``REGISTRY.get(name)`` returns it or raises
``ValueError`` listing the valid names with the closest match ("did you mean"), as
torchvision's ``get_model`` and timm's ``create_model`` do. The registry itself is a
read-only ``Mapping``, so ``list(LOSSES)``, ``name in LOSSES`` and ``LOSSES[name]`` work;
only ``register`` adds to it.

A user's own module registers in the same way (``@register_loss("mine")`` from outside the
package); ``supkd --plugin MODULE`` imports such a module before a command runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry", "did_you_mean"]


def did_you_mean(name: str, valid: Sequence[str], cutoff: float = 0.5) -> str:
    """``" (did you mean 'x'?)"`` for the closest valid name (case-insensitive), else ``""``."""
    if not isinstance(name, str):
        return ""
    lowered = {v.lower(): v for v in valid}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=cutoff)
    return f" (did you mean '{lowered[close[0]]}'?)" if close else ""


class Registry(Mapping[str, T], Generic[T]):
    """Names -> objects of one kind (``kind`` is used in messages: "loss", "task", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    # --- Mapping (read-only view) ----------------------------------------------------------

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"

    # --- adding and looking up ---------------------------------------------------------------

    def add(self, name: str, obj: T) -> T:
        """Register ``obj`` as ``name``; ``ValueError`` when the name is empty or taken."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._items:
            raise ValueError(
                f"{self.kind} {name!r} is already registered (by {_origin(self._items[name])}); "
                "choose another name"
            )
        self._items[name] = obj
        return obj

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@registry.register("name")`` on a class (or function)."""

        def decorate(obj: T) -> T:
            return self.add(name, obj)

        return decorate

    def get(self, name: str, default: T | None = None) -> T:  # type: ignore[override]
        """The object registered as ``name``; ``ValueError`` naming the valid names when
        there is none (``default`` is accepted for Mapping compatibility only when given)."""
        if isinstance(name, str) and name in self._items:
            return self._items[name]
        if default is not None:
            return default
        raise ValueError(self.unknown_message(name))

    def unknown_message(self, name: object) -> str:
        valid = list(self._items)
        return (
            f"unknown {self.kind} {name!r}; valid names: {', '.join(valid) or 'none registered'}"
            + did_you_mean(str(name), valid)
        )

    def remove(self, name: str) -> None:
        """Forget ``name`` (for tests that register a throw-away entry)."""
        self._items.pop(name, None)


def _origin(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None) or type(obj).__name__
    return f"{module}.{qualname}" if module else qualname

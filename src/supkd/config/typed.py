"""Typed configuration sections: dataclasses that check their own fields.

Every section of a run config is a :class:`Section` dataclass. Whether it is built by the
YAML loader or by hand (``DataConfig(name="cifar10", cutout=16)``), ``__post_init__``
does the same three things, so there is one validation style:

1. each field's value is checked against its annotation and converted
   (:func:`convert`: ``int`` for a ``float`` field, YAML's ``"1e-4"`` string for a number,
   ``on``/``off`` that YAML read as booleans for ``Literal["on", "off"]``); a ``float`` is
   finite (YAML reads ``.inf`` and ``.nan``, and ``inf`` as a string, as floats: a learning
   rate or weight decay of inf only shows as a NaN loss later) unless its field says
   ``bounded(..., finite=False)``;
2. numeric bounds declared on the field (:func:`bounded`) are checked;
3. :meth:`Section.check` runs the section's rules that involve several fields.

A failure is a :class:`supkd.errors.ConfigError` with one line naming the dotted field
(``config field 'optim.lr': expected a number > 0, got -1.0``).

Why hand-written rather than pydantic or OmegaConf (weighed for the floor-plan issue):
pydantic v2 would type these fields as well, but it is not among supkd's dependencies,
adds ~0.3 s to every CLI start on this 2-core machine, and its errors are multi-line and
need re-wording anyway; OmegaConf has no ``Literal`` types and no unions of primitives in
structured configs. What is left here is ~200 lines with no dependency beyond the standard
library.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from supkd.errors import ConfigError
from supkd.utils.registry import did_you_mean

__all__ = [
    "Section",
    "bounded",
    "build_section",
    "check_range",
    "convert",
    "to_plain",
    "type_name",
]

# YAML 1.1 (PyYAML) reads "1e-4" as a string because it has no dot; accept such numerals
# for float fields instead of making users write 1.0e-4.
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.IGNORECASE)
_BOUNDS = ("gt", "ge", "lt", "le")


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = dataclasses.MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    each: bool = False,
    finite: bool = True,
) -> Any:
    """A dataclass field whose numeric value must lie in the given bounds (``None`` passes).

    ``each=True``: the bounds apply to every element of a list field. ``finite=False``:
    the field also takes ``inf`` (every float field is finite otherwise, bounded or not).
    """
    meta: dict[str, Any] = {k: v for k, v in zip(_BOUNDS, (gt, ge, lt, le)) if v is not None}
    meta["each"] = each
    meta["finite"] = finite
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata={"bounds": meta})
    return dataclasses.field(default=default, metadata={"bounds": meta})


def check_range(
    name: str,
    value: float | None,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> None:
    """Raise ``ConfigError`` naming ``name`` unless ``value`` lies in the given bounds.

    ``None`` passes (optional fields); NaN never passes.
    """
    if value is None:
        return
    bad = isinstance(value, float) and math.isnan(value)
    parts = []
    for label, bound, ok in (
        ("> ", gt, lambda v, b: v > b),
        (">= ", ge, lambda v, b: v >= b),
        ("< ", lt, lambda v, b: v < b),
        ("<= ", le, lambda v, b: v <= b),
    ):
        if bound is not None:
            parts.append(f"{label}{bound:g}")
            bad = bad or not ok(value, bound)
    if bad:
        raise ConfigError(
            f"config field '{name}': expected a number {' and '.join(parts)}, got {value!r}"
        )


def type_name(tp: Any) -> str:
    """How an annotation reads in an error message ("a number", "one of 'a', 'b'")."""
    origin = typing.get_origin(tp)
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
              type(None): "null"}
    if tp is Any:
        return "any value"
    if tp in simple:
        return simple[tp]
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {type_name(inner).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict or tp is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping (section)"
    return getattr(tp, "__name__", str(tp))


def _fail(path: str, tp: Any, value: Any) -> ConfigError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return ConfigError(
        f"config field '{path}': expected {type_name(tp)}, got {shown} ({type(value).__name__})"
    )


def _convert_union(value: Any, tp: Any, path: str, finite: bool) -> Any:
    args = typing.get_args(tp)
    if value is None:
        if type(None) in args:
            return None
        raise _fail(path, tp, value)
    for arg in args:
        if arg is type(None):
            continue
        try:
            return convert(value, arg, path, finite=finite)
        except ConfigError as exc:
            if arg is float and _is_nonfinite(value):
                raise exc from None  # "expected a finite number" says more than the union
            continue
    raise _fail(path, tp, value)


def _convert_literal(value: Any, tp: Any, path: str) -> Any:
    choices = typing.get_args(tp)
    if value in choices and type(value) in {type(c) for c in choices}:
        return value
    # YAML turns off/on into booleans; accept them for "on"/"off" choices.
    if isinstance(value, bool) and ("on" if value else "off") in choices:
        return "on" if value else "off"
    raise ConfigError(
        f"config field '{path}': expected one of {', '.join(map(str, choices))}, "
        f"got {value!r}" + did_you_mean(str(value), [str(c) for c in choices])
    )


def _is_nonfinite(value: Any) -> bool:
    if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
        value = float(value)
    return isinstance(value, float) and not math.isfinite(value)


def _finite_float(value: float, path: str, finite: bool) -> float:
    if finite and not math.isfinite(value):
        raise ConfigError(f"config field '{path}': expected a finite number, got {value!r}")
    return value


def _convert_scalar(value: Any, tp: Any, path: str, finite: bool = True) -> Any:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int:
        if number and (isinstance(value, int) or value.is_integer()):
            return int(value)
    elif tp is float:
        if number:
            return _finite_float(float(value), path, finite)
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return _finite_float(float(value), path, finite)
    elif tp is str:
        if isinstance(value, str):
            return value
        # Paths and names that YAML read as numbers (e.g. run name 2024) are still strings.
        if number:
            return str(value)
    raise _fail(path, tp, value)


def convert(value: Any, tp: Any, path: str, *, finite: bool = True) -> Any:
    """Check ``value`` against the annotation ``tp`` and return the typed value (``finite``:
    refuse ``inf`` and ``nan`` for floats, also inside lists and unions)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        return _convert_union(value, tp, path, finite)
    if origin is Literal:
        return _convert_literal(value, tp, path)
    if tp in (bool, int, float, str):
        return _convert_scalar(value, tp, path, finite)
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _fail(path, tp, value)
        return [convert(v, inner, f"{path}[{i}]", finite=finite) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _fail(path, tp, value)
        return {str(k): v for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build_section(tp, value, path)
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")  # a bug, not user input


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass (cached: ``get_type_hints`` is slow)."""
    return typing.get_type_hints(cls)


def _check_bounds(path: str, value: Any, bounds: Mapping[str, Any]) -> None:
    limits = {k: v for k, v in bounds.items() if k in _BOUNDS}  # ("each", "finite": not bounds)
    if bounds.get("each"):
        for i, v in enumerate(value or []):
            check_range(f"{path}[{i}]", v, **limits)
    else:
        check_range(path, value, **limits)


@dataclass
class Section:
    """Base of every config section. Subclasses set ``SECTION`` (their dotted place in a
    run config: ``"optim"``, ``"task"``; ``""`` for the root) and may override
    :meth:`check` for rules over several fields."""

    SECTION: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = field_types(type(self))
        for f in dataclasses.fields(self):
            path = self.field_path(f.name)
            finite = f.metadata.get("bounds", {}).get("finite", True)
            value = convert(getattr(self, f.name), hints[f.name], path, finite=finite)
            object.__setattr__(self, f.name, value)
            if "bounds" in f.metadata:
                _check_bounds(path, value, f.metadata["bounds"])
        self.check()

    def field_path(self, name: str) -> str:
        return f"{self.SECTION}.{name}" if self.SECTION else name

    def check(self) -> None:
        """Rules over several fields (the single fields are already checked)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-safe) that the loader turns back into an equal
        section."""
        return to_plain(self)


def build_section(cls: type, raw: Any, path: str) -> Any:
    """Build section ``cls`` from the mapping ``raw`` found at dotted ``path``.

    Unknown keys fail with the closest valid key. A section class may pick the concrete
    class from the raw mapping (``resolve_type``, e.g. the task section types itself by its
    ``name``). Missing sub-sections are built from their defaults, so they are checked too.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"config field '{path or '<root>'}': expected a mapping (section), "
            f"got {raw!r} ({type(raw).__name__})"
        )
    resolve = getattr(cls, "resolve_type", None)
    if callable(resolve):
        cls = resolve(_without_nulls(cls, raw))
    raw = _without_nulls(cls, raw)
    hints = field_types(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        if key not in names:
            full = f"{path}.{key}" if path else key
            valid = [f"{path}.{n}" if path else n for n in names]
            hint = did_you_mean(full, valid) or f"; valid keys here: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{full}'" + hint)
        kwargs[key] = value
    for f in dataclasses.fields(cls):
        sub = hints.get(f.name)
        if f.init and dataclasses.is_dataclass(sub) and not isinstance(kwargs.get(f.name), sub):
            where = f"{path}.{f.name}" if path else f.name
            kwargs[f.name] = build_section(sub, kwargs.get(f.name), where)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except TypeError as exc:
        # A required field (no default) that is missing.
        raise ConfigError(f"config section '{path or '<root>'}': {exc}") from None


def _takes_null(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return tp is Any or (origin in (typing.Union, types.UnionType)
                         and type(None) in typing.get_args(tp))


def _without_nulls(cls: type, raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` less the fields of ``cls`` that are null but cannot be: null means the
    field's default (how ``key=null`` resets a field that a file or a base config set).
    A field that takes null itself (``data.subset``) keeps it; unknown keys stay, to be
    refused by name."""
    hints = field_types(cls)
    return {k: v for k, v in raw.items()
            if not (v is None and str(k) in hints and not _takes_null(hints[str(k)]))}


def to_plain(obj: Any) -> Any:
    """Dataclasses, mappings, sequences and paths as plain YAML/JSON-safe values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj

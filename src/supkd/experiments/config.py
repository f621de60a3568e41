"""Typed run configuration: YAML defaults + dotted ``key=value`` overrides, validated.

A run is described by one :class:`Config`. ``load_config`` reads a YAML file (or a dict),
applies overrides such as ``optim.lr=0.05`` or ``task.loss=cosine``, and checks every key
and type, so that a typo fails before any training starts with one line that names the
field and the closest valid key (DESIGN.md §8, §9: "typed dataclass configs, YAML as
defaults, key=value overrides, the resolved config saved in the run directory").

The ``task`` section is typed by the task it names: each task in
:data:`supkd.train.tasks.TASKS` declares its own ``Config`` dataclass (a subclass of
:class:`TaskConfig`), so adding a method touches one file and the config loader knows no
method names.

A YAML file may start from another one with ``extends: other.yaml`` (path relative to the
file, or a list of such paths merged in order); the resolved config written to the run
directory has no ``extends`` left.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from supkd.data.config import DataConfig
from supkd.errors import ConfigError

__all__ = [
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TaskConfig",
    "TrainConfig",
    "check_range",
    "config_from_dict",
    "load_config",
    "parse_overrides",
]


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
    if gt is not None:
        parts.append(f"> {gt:g}")
        bad = bad or not value > gt
    if ge is not None:
        parts.append(f">= {ge:g}")
        bad = bad or not value >= ge
    if lt is not None:
        parts.append(f"< {lt:g}")
        bad = bad or not value < lt
    if le is not None:
        parts.append(f"<= {le:g}")
        bad = bad or not value <= le
    if bad:
        raise ConfigError(
            f"config field '{name}': expected a number {' and '.join(parts)}, got {value!r}"
        )


# ---------------------------------------------------------------------------------------
# Sections. Each has ``validate(prefix)`` for value ranges (types are checked generically).
# ---------------------------------------------------------------------------------------


@dataclass
class ModelConfig:
    """The trained network (the student for ``distill``). ``num_classes`` and
    ``in_channels`` come from the data set, never from the config."""

    name: str = "resnet18"
    stem: Literal["cifar", "imagenet"] = "cifar"
    width: int = 64  # base channels of the first stage (64 = the standard ResNet)
    projection_dim: int | None = None  # SupCon projection head output size (128 in the paper)

    def validate(self, prefix: str) -> None:
        from supkd.models import list_models  # lazy: keeps this module free of torch

        names = list_models()
        if self.name not in names:
            raise ConfigError(
                f"config field '{prefix}.name': expected one of {', '.join(names)}, "
                f"got {self.name!r}" + _suggest(self.name, names)
            )
        check_range(f"{prefix}.width", self.width, gt=0)
        check_range(f"{prefix}.projection_dim", self.projection_dim, gt=0)


@dataclass
class OptimConfig:
    """Optimizer. ``lr`` is for the whole (global) batch of ``train.batch_size`` images.

    ``decay_norm_and_bias``: True (the default, and the behaviour before the field existed)
    applies ``weight_decay`` to every trainable parameter. False exempts every parameter
    with at most one dimension (BatchNorm weights and biases, conv/linear biases) and
    decays only the conv/linear weights ("no bias decay", He et al. 2019, "Bag of Tricks
    for Image Classification with CNNs", §3.1): the optimizer then has two parameter
    groups, decayed weights first, both with the same learning rate and schedule.
    """

    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 5e-4
    decay_norm_and_bias: bool = True  # False: no weight decay on 1-D params (norms, biases)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW only
    eps: float = 1e-8  # AdamW only

    def validate(self, prefix: str) -> None:
        check_range(f"{prefix}.lr", self.lr, gt=0)
        check_range(f"{prefix}.momentum", self.momentum, ge=0, lt=1)
        check_range(f"{prefix}.weight_decay", self.weight_decay, ge=0)
        check_range(f"{prefix}.eps", self.eps, gt=0)
        if len(self.betas) != 2:
            raise ConfigError(
                f"config field '{prefix}.betas': expected a list of 2 numbers, got {self.betas}"
            )
        for i, b in enumerate(self.betas):
            check_range(f"{prefix}.betas[{i}]", b, ge=0, lt=1)
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ConfigError(
                f"config field '{prefix}.nesterov': needs optim.name=sgd and momentum > 0"
            )


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, applied per step (epoch fractions allowed).

    - ``cosine``: linear warm-up over ``warmup_epochs``, then cosine from lr to
      ``lr * min_lr_factor`` (SupCon code uses a floor of lr·1e-3).
    - ``step``: warm-up, then ×``gamma`` at each epoch in ``milestones``.
    - ``onecycle``: linear rise to lr over ``pct_start`` of training from
      lr/``div_factor``, then cosine down to lr/(div_factor·final_div_factor)
      (Smith & Topin 2019; the formula of ``torch.optim.lr_scheduler.OneCycleLR``).
    - ``constant``: warm-up, then lr.
    """

    name: Literal["cosine", "step", "onecycle", "constant"] = "cosine"
    warmup_epochs: float = 0.0
    min_lr_factor: float = 0.0
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    pct_start: float = 0.25
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def validate(self, prefix: str) -> None:
        check_range(f"{prefix}.warmup_epochs", self.warmup_epochs, ge=0)
        check_range(f"{prefix}.min_lr_factor", self.min_lr_factor, ge=0, le=1)
        check_range(f"{prefix}.gamma", self.gamma, gt=0)
        check_range(f"{prefix}.pct_start", self.pct_start, gt=0, lt=1)
        check_range(f"{prefix}.div_factor", self.div_factor, gt=0)
        check_range(f"{prefix}.final_div_factor", self.final_div_factor, gt=0)
        for i, m in enumerate(self.milestones):
            check_range(f"{prefix}.milestones[{i}]", m, gt=0)
        if list(self.milestones) != sorted(self.milestones):
            raise ConfigError(
                f"config field '{prefix}.milestones': expected increasing epochs, "
                f"got {self.milestones}"
            )


@dataclass
class TrainConfig:
    """The loop. On CUDA the fast path is the default (``auto``): bf16 autocast,
    channels_last, fused optimizer, and ``torch.compile`` for runs long enough to repay
    its compile time (``compile: auto`` compiles runs of at least
    ``supkd.train.engine.COMPILE_AUTO_MIN_STEPS`` = 5,000 steps; that threshold is a guess
    awaiting a GPU measurement). On CPU everything runs in float32 and eager mode.

    ``compile_mode`` is the ``mode`` given to ``torch.compile`` for each of the task's
    networks when compilation is on (ignored otherwise): ``default``, ``reduce-overhead``
    (CUDA graphs: one launch per compiled graph instead of one per kernel),
    ``max-autotune`` (kernel autotuning, plus CUDA graphs) or
    ``max-autotune-no-cudagraphs``. With the two CUDA-graph modes on CUDA the engine marks
    each training step and each evaluation batch as a new CUDA-graph iteration
    (``torch.compiler.cudagraph_mark_step_begin``) and drops the gradients before each
    step and before evaluation; see the ``supkd.train.engine`` docstring."""

    epochs: int = 10
    batch_size: int = 128  # global batch (split over DDP ranks)
    eval_batch_size: int = 512
    steps_per_epoch: int | None = None  # cap on batches per epoch (quick runs, tests)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: Literal["auto", "on", "off"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = "default"
    grad_clip: float | None = None  # max global grad norm
    ema_decay: float | None = None  # EMA of the weights, evaluated and saved when set
    log_every: int = 50  # steps between host reads of the loss (and the CUDA NaN check)
    eval_every: int = 1  # epochs between evaluations (the last epoch is always evaluated)
    save_best: bool = False  # keep checkpoints/best.pt (best validation accuracy)
    checkpoint_every_steps: int = 0  # extra mid-epoch checkpoints (0: epoch ends only)
    tensorboard: bool = False  # also log to run_dir/tensorboard when installed
    progress: bool = True

    def validate(self, prefix: str) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size", "log_every", "eval_every"):
            check_range(f"{prefix}.{name}", getattr(self, name), gt=0)
        check_range(f"{prefix}.steps_per_epoch", self.steps_per_epoch, gt=0)
        check_range(f"{prefix}.grad_clip", self.grad_clip, gt=0)
        check_range(f"{prefix}.ema_decay", self.ema_decay, gt=0, lt=1)
        check_range(f"{prefix}.checkpoint_every_steps", self.checkpoint_every_steps, ge=0)


@dataclass
class TaskConfig:
    """Base of every task's options; ``name`` picks the task in ``supkd.train.tasks.TASKS``,
    whose ``Config`` subclass adds the task's own fields."""

    name: str = "ce"

    def validate(self, prefix: str) -> None:
        """Range checks of the subclass's fields (none here)."""


@dataclass
class Config:
    """One training run. ``meta`` is kept verbatim (grids and reports use it for table
    placement); everything else is typed and validated."""

    name: str = "run"
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    meta: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig = field(default_factory=TaskConfig)

    def validate(self, prefix: str = "") -> None:
        check_range("seed", self.seed, ge=0)
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", self.device):
            raise ConfigError(
                f"config field 'device': expected auto, cpu, cuda or cuda:N, got {self.device!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-safe) that ``load_config`` turns back into an
        equal ``Config``."""
        return _to_plain(self)


# ---------------------------------------------------------------------------------------
# Generic conversion from plain data to typed dataclasses.
# ---------------------------------------------------------------------------------------

# YAML 1.1 (PyYAML) reads "1e-4" as a string because it has no dot; accept such numerals
# for float fields instead of making users write 1.0e-4.
_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|[-+]?(inf|nan)", re.IGNORECASE)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp is type(None):
        return "null"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        return f"a list of {_type_name(inner).removeprefix('a ').removeprefix('an ')}s"
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
        f"config field '{path}': expected {_type_name(tp)}, got {shown} ({type(value).__name__})"
    )


def _convert(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and return the typed value."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _fail(path, tp, value)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, path)
            except ConfigError:
                continue
        raise _fail(path, tp, value)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices and type(value) in {type(c) for c in choices}:
            return value
        # YAML turns off/on into booleans; accept them for "on"/"off" choices.
        if isinstance(value, bool) and ("on" if value else "off") in choices:
            return "on" if value else "off"
        raise ConfigError(
            f"config field '{path}': expected one of {', '.join(map(str, choices))}, "
            f"got {value!r}" + _suggest(str(value), [str(c) for c in choices])
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(path, tp, value)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(path, tp, value)
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)
        raise _fail(path, tp, value)
    if tp is str:
        if isinstance(value, str):
            return value
        # Paths and names that YAML read as numbers (e.g. run name 2024) are still strings.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _fail(path, tp, value)
    if origin is list:
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _fail(path, tp, value)
        return [_convert(v, inner, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise _fail(path, tp, value)
        return {str(k): v for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")  # a bug, not user input


def _suggest(key: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=False)


def _build(cls: type, raw: Any, path: str) -> Any:
    """Build dataclass ``cls`` from mapping ``raw``; ``path`` is the dotted section name."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"config field '{path or '<root>'}': expected a mapping (section), "
            f"got {raw!r} ({type(raw).__name__})"
        )
    if cls is TaskConfig or (isinstance(cls, type) and issubclass(cls, TaskConfig)):
        cls = _task_config_class(raw, path)
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key)
        full = f"{path}.{key}" if path else key
        if key not in names:
            valid = [f"{path}.{n}" if path else n for n in names]
            raise ConfigError(
                f"unknown config key '{full}'"
                + (_suggest(full, valid) or f"; valid keys here: {', '.join(names)}")
            )
        kwargs[key] = _convert(value, hints[key], full)
    for f in dataclasses.fields(cls):
        # Missing sections are built from their defaults so that they are validated too
        # (and so that a missing ``task`` becomes the default task's own Config).
        if f.init and f.name not in kwargs and dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], {}, f"{path}.{f.name}" if path else f.name)
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        # A required field (no default) that is missing, or a section's own __post_init__.
        raise ConfigError(f"config section '{path or '<root>'}': {exc}") from None
    validate = getattr(obj, "validate", None)
    # Sections of other modules (DataConfig) validate in __post_init__ and name their own
    # fields; ours take the dotted prefix.
    if callable(validate) and inspect.signature(validate).parameters:
        validate(path)
    return obj


def _task_config_class(raw: Mapping[str, Any], path: str) -> type:
    # Imported here: the task registry imports torch and the models, and the config
    # module must stay importable on its own.
    from supkd.train.tasks import TASKS

    name = raw.get("name", TaskConfig.name)
    if not isinstance(name, str) or name not in TASKS:
        raise ConfigError(
            f"config field '{path}.name': expected one of {', '.join(sorted(TASKS))}, "
            f"got {name!r}" + _suggest(str(name), sorted(TASKS))
        )
    return TASKS[name].Config


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_to_plain(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


# ---------------------------------------------------------------------------------------
# Overrides and loading.
# ---------------------------------------------------------------------------------------


def parse_overrides(overrides: Sequence[str]) -> list[tuple[list[str], Any]]:
    """Parse ``["optim.lr=0.1", "task.loss=cosine"]`` into ``[(["optim", "lr"], 0.1), ...]``.

    Values are read as YAML, so ``true``, ``null``, ``[60, 75]`` and numbers get their
    types; quote a value to keep it a string (``name='007'``).
    """
    parsed = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE (e.g. optim.lr=0.1)")
        key, text = item.split("=", 1)
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"override {item!r}: expected a dotted key such as optim.lr")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        parsed.append((key.split("."), value))
    return parsed


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k != "meta":
            out[k] = _merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config file {path}: 'extends' forms a cycle")
    if not path.is_file():
        raise ConfigError(f"config file {path}: not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path}:{where} is not valid YAML") from None
    except (OSError, UnicodeDecodeError) as exc:
        what = exc.__class__.__name__
        raise ConfigError(f"config file {path}: cannot be read ({what})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    parents = raw.pop("extends", None)
    if parents is None:
        return raw
    if isinstance(parents, str):
        parents = [parents]
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise ConfigError(f"config file {path}: 'extends' expects a path or a list of paths")
    merged: dict[str, Any] = {}
    for parent in parents:
        merged = _merge(merged, _read_yaml(path.parent / parent, (*seen, path)))
    return _merge(merged, raw)


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Validate a plain nested dict (e.g. a run's saved ``config.yaml``) into a Config."""
    return _build(Config, dict(raw), "")


def load_config(
    source: str | Path | Mapping[str, Any] | Config,
    overrides: Sequence[str] | None = None,
) -> Config:
    """Load and validate a run config.

    Args:
        source: YAML file path, plain dict, or an existing ``Config`` (re-validated).
        overrides: dotted ``key=value`` strings applied on top, in order.

    Raises:
        ConfigError: unknown key (with the closest valid key), wrong type (field and the
            expected type), value out of range, unreadable or invalid YAML.
    """
    if isinstance(source, Config):
        raw: dict[str, Any] = source.to_dict()
    elif isinstance(source, Mapping):
        raw = _to_plain(source)
    else:
        raw = _read_yaml(Path(source))
    raw = dict(raw)
    raw.pop("extends", None) if isinstance(source, Mapping) else None
    for keys, value in parse_overrides(overrides or []):
        node = raw
        for i, k in enumerate(keys[:-1]):
            nxt = node.get(k)
            if nxt is None:
                nxt = {}
            elif not isinstance(nxt, dict):
                raise ConfigError(
                    f"override '{'.'.join(keys)}': '{'.'.join(keys[: i + 1])}' is not a section"
                )
            else:
                nxt = dict(nxt)
            node[k] = nxt
            node = nxt
        node[keys[-1]] = value
    return config_from_dict(raw)

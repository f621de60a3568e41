"""The run schema: the sections of one training run's config, and its loader.

A run is described by one :class:`Config`. :func:`load_config` reads a YAML file (or a
dict), applies dotted ``key=value`` overrides such as ``optim.lr=0.05`` or
``task.loss=cosine``, and checks every key, type and range, so that a typo fails before any
training starts with one line that names the field and the closest valid key (docs/design.md §8,
§9: "typed dataclass configs, YAML as defaults, key=value overrides, the resolved config
saved in the run directory").

This layer knows no task, data set or model by name. The ``task`` section is typed by the
task layer: each task registers its own ``Config`` dataclass (a :class:`TaskConfig`
subclass) in :data:`TASK_SECTIONS` (``supkd.train.tasks.register_task`` does it), and the
section types itself from that registry by its ``name``. Data-set and model names are
checked by the layers that own them (``supkd.data.check_data_config``,
``supkd.models.create_model``; ``supkd.train.check_config`` runs all of them).

A YAML file may start from another one with ``extends: other.yaml`` (see
:mod:`supkd.config.yamlio`); the resolved config written to the run directory has no
``extends`` left.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from supkd.config.typed import Section, bounded, build_section, to_plain
from supkd.config.yamlio import apply_overrides, read_yaml
from supkd.errors import ConfigError, SupkdWarning
from supkd.utils.device import DEVICE_PATTERN
from supkd.utils.paths import check_path_name
from supkd.utils.registry import Registry, did_you_mean

__all__ = [
    "TASK_SECTIONS",
    "Config",
    "DataConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "TaskConfig",
    "TrainConfig",
    "WandbConfig",
    "config_from_dict",
    "load_config",
]


@dataclass
class DataConfig(Section):
    """Which data set to load and how.

    - ``name``: one of ``digits`` (scikit-learn's embedded 8x8 digits, offline default),
      ``cifar10``, ``cifar100`` (torchvision), ``cifar10-jpeg`` (the npz pack),
      ``imagefolder`` (a class-per-folder tree, or ``train/`` + ``val/`` of such trees).
    - ``root``: folder of the data (None: ``~/.cache/supkd/data/<name>`` for torchvision sets;
      required for ``cifar10-jpeg`` and ``imagefolder``).
    - ``val_fraction``: fraction of the training set held out, stratified, as the validation
      split used to tune alpha (0: no validation split).
    - ``subset``: keep at most this many images per split (stratified), for quick runs.
    - ``image_size``: side of the images the network sees (None: the data set's own size;
      16 for digits, 224 for imagefolder).
    - ``resize``: where an in-memory data set is brought to ``image_size``. ``load``: once,
      when loaded; the augmentation then works at ``image_size`` (pad ``image_size // 8``).
      ``batch``: the images stay at the data set's own size in memory (and on the device);
      views are drawn there (pad-crop + flip with the native pad: CIFAR's 162 views, which
      the teacher cache keeps exact) and each batch is resized bilinearly on the device
      (SupCon's RandomResizedCrop renders at ``image_size`` directly). ``auto``: ``batch``
      when ``image_size`` is larger than the native size (an upsampled copy only costs
      memory: CIFAR at 224 pixels would hold 7.5 GB instead of 150 MB), else ``load``.
      Image folders resize every image in their transforms whatever it says.
    - ``download``: let torchvision download CIFAR when it is absent.
    - ``num_workers``: DataLoader worker processes (-1: automatic).
    - ``gpu_resident``: keep the uint8 images on the device and augment there in batches
      (``auto``: on CUDA when the data set is in memory and fits; ``on``: always, also on
      CPU; ``off``: DataLoader path).
    - ``split_seed``: seed of the validation split and of ``subset`` (None: the run's seed).
      Fixed by default so that teachers and students of every seed hold out the same images.
    - ``flip``: horizontal flip (p 1/2) in the standard augmentation (pad-crop + flip, or
      RandomResizedCrop + flip for image folders). False for data whose classes a mirror
      changes (digits): ``Batch.aug``'s flip column is then always 0.
    - ``supcon_scale``: ``[lo, hi]`` area fraction of the SupCon views' RandomResizedCrop,
      ``0 < lo <= hi <= 1`` (Khosla et al., 2020: [0.2, 1]).
    - ``supcon_flip``: horizontal flip (p 1/2) in the SupCon views.
    - ``supcon_jitter``: ColorJitter strength s in [0, 1] of the SupCon views: brightness,
      contrast and saturation factors ~ U[1 - s, 1 + s] and hue shift ~ U[-s/4, s/4], so
      the default 0.4 is the recipe's (0.4, 0.4, 0.4, 0.1) and one number scales all four;
      applied with p 0.8. 0 turns the jitter off. One-channel images see brightness and
      contrast only.
    - ``supcon_grayscale``: probability in [0, 1] that a SupCon view is made gray (three
      channels only).
    - ``cutout``: side L in pixels of one square erased from every training view of the
      ``standard`` augmentation, after the crop + flip (DeVries & Taylor, 2017, "Improved
      Regularization of Convolutional Neural Networks with Cutout", arXiv:1708.04552);
      0 (default) turns it off, else ``0 < L < image size``. The square's centre is uniform
      over the image's pixels and the square is clipped at the borders (it may lie partly
      outside), as in the paper's code. Erased pixels are 0 *after* normalization, i.e. the
      data set's mean colour, because the paper's code applies it after Normalize (a zero
      before normalization would be black, a strong out-of-distribution signal). Rows
      ``cy - L//2 .. cy - L//2 + L - 1`` (columns alike): for even L exactly the paper's
      square; for odd L the paper's ``cy ± L//2`` gives side L - 1, here it is L. Not
      applied to ``none`` (evaluation); with ``supcon`` views it is a ConfigError (the
      SupCon recipe has no cutout). The teacher cache holds un-erased views, so
      ``task.teacher_cache: auto`` runs the teacher live and ``on`` is a ConfigError, and
      ``Batch.aug`` is None (the crop + flip is no longer the only augmentation).

    The defaults reproduce the CIFAR recipes of docs/design.md §5 draw for draw: every view
    consumes the same random numbers whatever these options say, so turning one off changes
    only what it controls.
    """

    SECTION: ClassVar[str] = "data"

    name: str = "digits"  # a name of supkd.data.DATASETS (checked by the data layer)
    root: str | None = None
    val_fraction: float = bounded(0.1, ge=0, lt=1)
    subset: int | None = bounded(None, gt=0)
    image_size: int | None = bounded(None, gt=0)
    resize: Literal["auto", "load", "batch"] = "auto"
    download: bool = True
    num_workers: int = bounded(-1, ge=-1)  # -1: automatic
    gpu_resident: Literal["auto", "on", "off"] = "auto"
    split_seed: int | None = 0
    flip: bool = True
    supcon_scale: list[float] = bounded(factory=lambda: [0.2, 1.0], gt=0, le=1, each=True)
    supcon_flip: bool = True
    supcon_jitter: float = bounded(0.4, ge=0, le=1)
    supcon_grayscale: float = bounded(0.2, ge=0, le=1)
    cutout: int = bounded(0, ge=0)  # side of the erased square in pixels, 0: off

    def check(self) -> None:
        lo_hi = self.supcon_scale
        if len(lo_hi) != 2 or lo_hi[0] > lo_hi[1]:
            raise ConfigError(
                "config field 'data.supcon_scale': expected [lo, hi] with 0 < lo <= hi <= 1 "
                f"(area fractions), got {lo_hi}"
            )


@dataclass
class ModelConfig(Section):
    """The trained network (the student for ``distill``). ``num_classes`` and
    ``in_channels`` come from the data set, never from the config.

    ``stem`` and ``width`` are the ResNets' (``resnet18|34|50``); ``timm_args`` and
    ``pretrained`` are those of ``timm/<arch>`` models (``supkd.models.timm_models``):
    ``timm_args`` the constructor arguments of timm's model (``img_size: 32``,
    ``drop_path_rate: 0.1``, ...), ``pretrained`` false (random init), true (timm's weights
    from the Hugging Face Hub) or the path of a ``.safetensors`` / ``.pth`` weights file,
    whose input normalization is then corrected onto the data set's. A field the model
    does not take must keep its default (the task layer says which, naming the field).
    """

    SECTION: ClassVar[str] = "model"

    name: str = "resnet18"  # a name of supkd.models.list_models() (checked when built)
    stem: Literal["cifar", "imagenet"] = "cifar"  # ResNet stem: cifar 3x3 conv, imagenet 7x7 + pool
    width: int = bounded(64, gt=0)  # base channels of the first stage (64: the standard ResNet)
    projection_dim: int | None = bounded(None, gt=0)  # SupCon head output (128 in the paper)
    pretrained: bool | str = False  # timm/ models: false | true (the Hub) | a weights file
    timm_args: dict[str, Any] = field(default_factory=dict)  # timm/ models' constructor args


@dataclass
class OptimConfig(Section):
    """Optimizer. ``lr`` is for the whole (global) batch of ``train.batch_size`` images.

    ``decay_norm_and_bias``: True (the default, and the behaviour before the field existed)
    applies ``weight_decay`` to every trainable parameter. False exempts every parameter
    with at most one dimension (BatchNorm weights and biases, conv/linear biases) and
    decays only the conv/linear weights ("no bias decay", He et al. 2019, "Bag of Tricks
    for Image Classification with CNNs", §3.1): the optimizer then has two parameter
    groups, decayed weights first, both with the same learning rate and schedule.
    """

    SECTION: ClassVar[str] = "optim"

    name: Literal["sgd", "adamw"] = "sgd"  # the optimizer
    lr: float = bounded(0.05, gt=0)  # peak learning rate (for the global batch)
    momentum: float = bounded(0.9, ge=0, lt=1)  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = bounded(5e-4, ge=0)  # SGD: L2 in the gradient; AdamW: decoupled
    decay_norm_and_bias: bool = True  # False: no weight decay on 1-D params (norms, biases)
    betas: list[float] = bounded(factory=lambda: [0.9, 0.999], ge=0, lt=1, each=True)  # AdamW
    eps: float = bounded(1e-8, gt=0)  # AdamW only

    def check(self) -> None:
        if len(self.betas) != 2:
            raise ConfigError(
                f"config field 'optim.betas': expected a list of 2 numbers, got {self.betas}"
            )
        if self.nesterov and (self.name != "sgd" or self.momentum <= 0):
            raise ConfigError(
                "config field 'optim.nesterov': needs optim.name=sgd and momentum > 0"
            )


@dataclass
class ScheduleConfig(Section):
    """Learning-rate schedule, applied per step (epoch fractions allowed).

    - ``cosine``: linear warm-up over ``warmup_epochs``, then cosine from lr to
      ``lr * min_lr_factor`` (SupCon code uses a floor of lr·1e-3).
    - ``step``: warm-up, then ×``gamma`` at each epoch in ``milestones``.
    - ``onecycle``: linear rise to lr over ``pct_start`` of training from
      lr/``div_factor``, then cosine down to lr/(div_factor·final_div_factor)
      (Smith & Topin 2019; the formula of ``torch.optim.lr_scheduler.OneCycleLR``).
    - ``constant``: warm-up, then lr.
    """

    SECTION: ClassVar[str] = "schedule"

    name: Literal["cosine", "step", "onecycle", "constant"] = "cosine"  # the schedule's shape
    warmup_epochs: float = bounded(0.0, ge=0)  # linear warm-up from 0 (not onecycle)
    min_lr_factor: float = bounded(0.0, ge=0, le=1)  # cosine: final lr = lr * this
    milestones: list[float] = bounded(factory=list, gt=0, each=True)  # step: epochs of decay
    gamma: float = bounded(0.1, gt=0)  # step: lr factor at each milestone
    pct_start: float = bounded(0.25, gt=0, lt=1)  # onecycle: fraction of training rising
    div_factor: float = bounded(25.0, gt=0)  # onecycle: starting lr = lr / this
    final_div_factor: float = bounded(1e4, gt=0)  # onecycle: final lr = start lr / this

    def check(self) -> None:
        if list(self.milestones) != sorted(self.milestones):
            raise ConfigError(
                "config field 'schedule.milestones': expected increasing epochs, "
                f"got {self.milestones}"
            )


@dataclass
class WandbConfig(Section):
    """Weights & Biases logging (opt-in; ``pip install 'supkd[wandb]'``): one W&B run per
    supkd run, with the resolved config and every numeric field of each ``metrics.jsonl``
    line, from rank 0 only. Off while ``project`` is None. ``mode``: ``online``,
    ``offline`` (files under ``RUN/wandb/``, uploaded later with ``wandb sync``) or
    ``disabled``; None leaves it to wandb (``WANDB_MODE``, else online)."""

    SECTION: ClassVar[str] = "train.wandb"

    project: str | None = None  # W&B project (null: no W&B logging)
    entity: str | None = None  # W&B user or team (null: wandb's default)
    mode: Literal["online", "offline", "disabled"] | None = None  # null: WANDB_MODE, else online


@dataclass
class TrainConfig(Section):
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

    SECTION: ClassVar[str] = "train"

    epochs: int = bounded(10, gt=0)  # length of the run
    batch_size: int = bounded(128, gt=0)  # global batch (split over DDP ranks)
    eval_batch_size: int = bounded(512, gt=0)  # batch of the evaluation passes
    steps_per_epoch: int | None = bounded(None, gt=0)  # cap on batches per epoch (quick runs)
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # autocast (auto: bf16 on CUDA)
    channels_last: Literal["auto", "on", "off"] = "auto"  # NHWC memory (auto: on CUDA)
    compile: Literal["auto", "on", "off"] = "auto"  # torch.compile (auto: long CUDA runs)
    # The mode given to torch.compile when it compiles.
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    ] = "default"
    grad_clip: float | None = bounded(None, gt=0)  # max global grad norm
    ema_decay: float | None = bounded(None, gt=0, lt=1)  # EMA of the weights, when set
    log_every: int = bounded(50, gt=0)  # steps between host reads of the loss (and NaN check)
    eval_every: int = bounded(1, gt=0)  # epochs between evaluations (the last one always)
    save_best: bool = False  # keep checkpoints/best.pt (best validation accuracy)
    checkpoint_every_steps: int = bounded(0, ge=0)  # extra mid-epoch checkpoints (0: none)
    tensorboard: bool = False  # also log to run_dir/tensorboard when installed
    wandb: WandbConfig = field(default_factory=WandbConfig)  # opt-in W&B logging
    progress: bool = True  # progress bar and epoch lines on the terminal


#: Task name -> the ``Config`` class of that task (filled by ``supkd.train.tasks``).
TASK_SECTIONS: Registry[type[TaskConfig]] = Registry("task")


@dataclass
class TaskConfig(Section):
    """Base of every task's options; ``name`` picks the task, whose ``Config`` subclass
    (registered in :data:`TASK_SECTIONS`) adds the task's own fields."""

    SECTION: ClassVar[str] = "task"

    name: str = "ce"  # the task: ce, supcon, linear, distill or a plugin's

    @classmethod
    def resolve_type(cls, raw: Mapping[str, Any]) -> type[TaskConfig]:
        """The registered section class for ``raw["name"]`` (ConfigError when unknown)."""
        name = raw.get("name", cls.name if cls is not TaskConfig else TaskConfig.name)
        if isinstance(name, str) and name in TASK_SECTIONS:
            return TASK_SECTIONS[name]
        valid = sorted(TASK_SECTIONS)
        if not valid:
            raise ConfigError(
                f"config field 'task.name': no task types are registered to read {name!r} "
                "(import supkd.train first)"
            )
        raise ConfigError(
            f"config field 'task.name': expected one of {', '.join(valid)}, got {name!r}"
            + did_you_mean(str(name), valid)
        )


def default_task() -> TaskConfig:
    """The default task's section (``ce``), or the bare base before any task is registered."""
    cls = TASK_SECTIONS.get(TaskConfig.name, TaskConfig)
    return cls()


@dataclass
class Config(Section):
    """One training run. ``meta`` is kept verbatim (grids and reports use it for table
    placement); everything else is typed and validated."""

    SECTION: ClassVar[str] = ""

    name: str = "run"  # the run's name (its folder under runs/ when no --out is given)
    seed: int = bounded(0, ge=0)  # seeds the model's init, data order and augmentation
    deterministic: bool = False  # deterministic kernels (bit-identical resumes on CPU)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    meta: dict[str, Any] = field(default_factory=dict)  # free mapping kept verbatim (reports)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    task: TaskConfig = field(default_factory=lambda: default_task())

    def check(self) -> None:
        # The name is the run folder's name when no --out is given (runs/<name>).
        check_path_name(self.name, "name")
        if not re.fullmatch(DEVICE_PATTERN, self.device):
            raise ConfigError(
                f"config field 'device': expected auto, cpu, cuda, cuda:N or mps, got "
                f"{self.device!r}" + did_you_mean(self.device, ["auto", "cpu", "cuda", "mps"])
            )
        sched, epochs = self.schedule, self.train.epochs
        if sched.name != "onecycle" and sched.warmup_epochs > epochs:
            # The scheduler caps the warm-up at the run's last step: lr then peaks only there.
            warnings.warn(
                f"config field 'schedule.warmup_epochs': a warm-up of {sched.warmup_epochs:g} "
                f"epochs is longer than the run ({epochs} epochs, train.epochs): the learning "
                "rate reaches optim.lr only at the last step", SupkdWarning, stacklevel=2)


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Validate a plain nested dict (e.g. a run's saved ``config.yaml``) into a Config."""
    return build_section(Config, dict(raw), "")


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
        raw = to_plain(source)
        raw.pop("extends", None)
    else:
        raw = read_yaml(Path(source))
    return config_from_dict(apply_overrides(raw, overrides or []))

"""The ``data:`` section of a run config."""

from __future__ import annotations

from dataclasses import dataclass, field

from supkd.errors import ConfigError

DATASETS = ("digits", "cifar10", "cifar100", "cifar10-jpeg", "imagefolder")
GPU_RESIDENT = ("auto", "on", "off")
#: Side of each data set's images when ``image_size`` is None (the loaders' defaults), so
#: that ``cutout`` can be checked when the config is read rather than when data is loaded;
#: the loaders in datasets.py read their default sizes from here.
NATIVE_SIZES = {"digits": 16, "cifar10": 32, "cifar100": 32, "cifar10-jpeg": 32, "imagefolder": 224}


@dataclass
class DataConfig:
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

    The defaults reproduce the CIFAR recipes of DESIGN.md §5 draw for draw: every view
    consumes the same random numbers whatever these options say, so turning one off changes
    only what it controls.
    """

    name: str = "digits"
    root: str | None = None
    val_fraction: float = 0.1
    subset: int | None = None
    image_size: int | None = None
    download: bool = True
    num_workers: int = -1
    gpu_resident: str = "auto"
    split_seed: int | None = 0
    flip: bool = True
    supcon_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    supcon_flip: bool = True
    supcon_jitter: float = 0.4
    supcon_grayscale: float = 0.2
    cutout: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        if self.name not in DATASETS:
            raise ConfigError(
                f"config field 'data.name': expected one of {', '.join(DATASETS)}, "
                f"got {self.name!r}"
            )
        if self.root is not None and not isinstance(self.root, str):
            raise ConfigError(f"config field 'data.root': expected a path, got {self.root!r}")
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, int | float):
            raise ConfigError(
                f"config field 'data.val_fraction': expected a number, got {self.val_fraction!r}"
            )
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ConfigError(
                "config field 'data.val_fraction': expected a number in [0, 1), "
                f"got {self.val_fraction}"
            )
        for name in ("subset", "image_size"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
                raise ConfigError(
                    f"config field 'data.{name}': expected a positive int or null, got {v!r}"
                )
        if not isinstance(self.download, bool):
            raise ConfigError(
                f"config field 'data.download': expected true or false, got {self.download!r}"
            )
        if (
            isinstance(self.num_workers, bool)
            or not isinstance(self.num_workers, int)
            or self.num_workers < -1
        ):
            raise ConfigError(
                "config field 'data.num_workers': expected an int >= 0 (or -1 for automatic), "
                f"got {self.num_workers!r}"
            )
        if self.gpu_resident not in GPU_RESIDENT:
            raise ConfigError(
                f"config field 'data.gpu_resident': expected one of {', '.join(GPU_RESIDENT)}, "
                f"got {self.gpu_resident!r}"
            )
        if self.split_seed is not None and (
            isinstance(self.split_seed, bool) or not isinstance(self.split_seed, int)
        ):
            raise ConfigError(
                f"config field 'data.split_seed': expected an int or null, got {self.split_seed!r}"
            )
        for field_name in ("flip", "supcon_flip"):
            v = getattr(self, field_name)
            if not isinstance(v, bool):
                raise ConfigError(
                    f"config field 'data.{field_name}': expected true or false, got {v!r}"
                )
        scale = self.supcon_scale
        if (
            not isinstance(scale, list | tuple)
            or len(scale) != 2
            or any(isinstance(v, bool) or not isinstance(v, int | float) for v in scale)
        ):
            raise ConfigError(
                f"config field 'data.supcon_scale': expected [lo, hi], two numbers, got {scale!r}"
            )
        if not 0.0 < scale[0] <= scale[1] <= 1.0:
            raise ConfigError(
                "config field 'data.supcon_scale': expected 0 < lo <= hi <= 1 (area fractions), "
                f"got {list(scale)}"
            )
        for field_name, what in (
            ("supcon_jitter", "a jitter strength"),
            ("supcon_grayscale", "a probability"),
        ):
            v = getattr(self, field_name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
                raise ConfigError(
                    f"config field 'data.{field_name}': expected {what} in [0, 1], got {v!r}"
                )
        if isinstance(self.cutout, bool) or not isinstance(self.cutout, int) or self.cutout < 0:
            raise ConfigError(
                "config field 'data.cutout': expected an int >= 0 (side of the erased square "
                f"in pixels, 0: off), got {self.cutout!r}"
            )
        side = self.image_size or NATIVE_SIZES[self.name]
        if self.cutout >= side:
            raise ConfigError(
                f"config field 'data.cutout': expected a side smaller than the {side}-pixel "
                f"images, got {self.cutout}"
            )

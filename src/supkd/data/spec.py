"""A data set is one spec: ``@register_dataset`` on its loader, and the registry ``DATASETS``.

A :class:`DatasetSpec` says everything the rest of supkd needs to know about a data set
before (and after) loading it: the loader, the native image side, the channels, the
normalization statistics and the augmentation style. ``NATIVE_SIZES`` and ``NORMALIZATION``
are read-only views of the registered specs (one column each), so that no table elsewhere
repeats a data set's facts. One file per data set under :mod:`supkd.data.sets` registers it.

A data set of your own, in your own module::

    from supkd.data import LoadedSplits, register_dataset, tensor_source

    @register_dataset("my_set", native_size=28, channels=1)   # normalization measured
    def load_my_set(cfg):   # cfg: supkd.config.DataConfig
        train, test = ...   # TensorImageDataset(uint8 (N, C, H, W), labels (N,), classes)
        return LoadedSplits(tensor_source(train), tensor_source(test), classes,
                            cfg.image_size or 28)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from supkd.config import DataConfig
from supkd.data.images import Source
from supkd.errors import ConfigError
from supkd.utils.registry import Registry, did_you_mean

__all__ = [
    "DATASETS",
    "NATIVE_SIZES",
    "NORMALIZATION",
    "STYLES",
    "DatasetSpec",
    "LoadedSplits",
    "check_cutout",
    "check_data_config",
    "register_dataset",
]

#: ``small``: fixed-size images, pad-crop + flip, no resize at evaluation. ``imagenet``:
#: RandomResizedCrop for training, resize + center crop at evaluation.
STYLES = ("small", "imagenet")

Stats = tuple[tuple[float, ...], tuple[float, ...]]


class LoadedSplits(NamedTuple):
    """What a loader returns: the train and test sources, the class names and the side of
    the images it produced (``cfg.image_size`` or the native size)."""

    train: Source
    test: Source
    classes: list[str]
    image_size: int


Loader = Callable[[DataConfig], LoadedSplits]


@dataclass(frozen=True)
class DatasetSpec:
    """One data set.

    Attributes:
        name: the ``data.name`` that selects it.
        load: ``load(cfg: DataConfig) -> LoadedSplits`` (raises DataError for missing or
            corrupt data).
        native_size: image side when ``data.image_size`` is None (the loader's default), so
            that e.g. ``data.cutout`` is checked before any data is loaded.
        channels: channels of the images (the models' ``in_channels``).
        normalization: per-channel (mean, std) in [0, 1] units, or None: measured on the
            training split (in-memory data sets only).
        style: one of :data:`STYLES` (the augmentation the loaders apply).
    """

    name: str
    load: Loader
    native_size: int
    channels: int
    normalization: Stats | None = None
    style: str = "small"

    def __post_init__(self) -> None:
        where = f"data set {self.name!r}"
        if not isinstance(self.native_size, int) or self.native_size <= 0:
            raise ValueError(f"{where}: native_size must be a positive int")
        if not isinstance(self.channels, int) or self.channels <= 0:
            raise ValueError(f"{where}: channels must be a positive int")
        if self.style not in STYLES:
            raise ValueError(f"{where}: style must be one of {', '.join(STYLES)}")
        stats = self.normalization
        if stats is not None and not (
            len(stats) == 2 and all(len(s) == self.channels for s in stats)
            and all(v > 0 for v in stats[1])
        ):
            raise ValueError(f"{where}: normalization must be (mean, std) with "
                             f"{self.channels} values each, std > 0")


DATASETS: Registry[DatasetSpec] = Registry("data set")

F = TypeVar("F", bound=Loader)


def register_dataset(
    name: str,
    *,
    native_size: int,
    channels: int,
    normalization: Stats | None = None,
    style: str = "small",
) -> Callable[[F], F]:
    """Decorator on a loader: register the :class:`DatasetSpec` ``name`` (stack it to
    register one loader under several names). Refuses a taken name."""

    def decorate(load: F) -> F:
        if isinstance(name, str) and name in DATASETS:
            held = DATASETS[name].load  # name the loader, not the spec class
            raise ValueError(f"data set {name!r} is already registered (by {held.__module__}."
                             f"{held.__qualname__}); choose another name")
        DATASETS.add(name, DatasetSpec(name, load, native_size, channels, normalization, style))
        return load

    return decorate


T = TypeVar("T")


class _Column(Mapping[str, T], Generic[T]):
    """A read-only, live view of one field of every registered spec (specs whose field is
    None are left out): ``NATIVE_SIZES["digits"]``, ``"cifar10" in NORMALIZATION``."""

    def __init__(self, pick: Callable[[DatasetSpec], T | None]) -> None:
        self._pick = pick

    def _items(self) -> dict[str, T]:
        picked = {name: self._pick(spec) for name, spec in DATASETS.items()}
        return {name: value for name, value in picked.items() if value is not None}

    def __getitem__(self, name: str) -> T:
        return self._items()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items())

    def __len__(self) -> int:
        return len(self._items())

    def __repr__(self) -> str:
        return repr(self._items())


#: Side of each data set's images when ``image_size`` is None.
NATIVE_SIZES: Mapping[str, int] = _Column(lambda spec: spec.native_size)
#: Per-data-set channel statistics in [0, 1] units (mean, std), for the data sets with
#: fixed statistics (digits' are measured on its training split).
NORMALIZATION: Mapping[str, Stats] = _Column(lambda spec: spec.normalization)


def check_cutout(cutout: int, side: int) -> None:
    """The one check of ``data.cutout`` against the image side (ConfigError naming it)."""
    if cutout >= side:
        raise ConfigError(
            f"config field 'data.cutout': expected a side smaller than the {side}-pixel "
            f"images, got {cutout}"
        )


def check_data_config(cfg: DataConfig) -> None:
    """The checks of a ``data:`` section that need the data set's own facts (its name, its
    native image size); ConfigError naming the field. Loads nothing."""
    if cfg.name not in DATASETS:
        raise ConfigError(
            f"config field 'data.name': expected one of {', '.join(DATASETS)}, "
            f"got {cfg.name!r}" + did_you_mean(cfg.name, list(DATASETS))
        )
    check_cutout(cfg.cutout, cfg.image_size or DATASETS[cfg.name].native_size)

"""Data-set specs: one registry, the views derived from it, a user's own data set."""

from __future__ import annotations

import pytest
import torch

from supkd.config import DataConfig
from supkd.data import (
    DATASETS,
    NATIVE_SIZES,
    NORMALIZATION,
    DatasetSpec,
    LoadedSplits,
    TensorImageDataset,
    build_data,
    check_data_config,
    register_dataset,
    tensor_source,
)
from supkd.data import datasets as datasets_module
from supkd.errors import ConfigError

BUILT_IN = ["digits", "cifar10", "cifar100", "cifar10-jpeg", "imagefolder"]


def test_built_in_specs_in_order_one_file_each():
    assert list(DATASETS)[: len(BUILT_IN)] == BUILT_IN
    files = {name: DATASETS[name].load.__module__ for name in BUILT_IN}
    assert files == {"digits": "supkd.data.sets.digits", "cifar10": "supkd.data.sets.cifar",
                     "cifar100": "supkd.data.sets.cifar",
                     "cifar10-jpeg": "supkd.data.sets.jpeg_pack",
                     "imagefolder": "supkd.data.sets.imagefolder"}
    assert {n: (DATASETS[n].channels, DATASETS[n].style) for n in BUILT_IN} == {
        "digits": (1, "small"), "cifar10": (3, "small"), "cifar100": (3, "small"),
        "cifar10-jpeg": (3, "small"), "imagefolder": (3, "imagenet")}


def test_the_views_hold_the_tables_they_replace():
    assert dict(NATIVE_SIZES) == {"digits": 16, "cifar10": 32, "cifar100": 32,
                                  "cifar10-jpeg": 32, "imagefolder": 224}
    assert dict(NORMALIZATION) == {
        "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
        "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
        "cifar10-jpeg": ((0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)),
        "imagefolder": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    }
    assert "digits" not in NORMALIZATION  # measured on its training split
    # The older import paths are the same objects.
    assert datasets_module.NORMALIZATION is NORMALIZATION
    assert datasets_module.NATIVE_SIZES is NATIVE_SIZES
    assert datasets_module.DATASETS is DATASETS
    with pytest.raises(TypeError):
        NATIVE_SIZES["x"] = 1  # type: ignore[index]


def _images(n: int, channels: int, side: int, seed: int) -> TensorImageDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, channels, side, side), generator=g, dtype=torch.uint8)
    return TensorImageDataset(x, torch.arange(n) % 3, ["a", "b", "c"])


@pytest.fixture
def my_sets():
    added: list[str] = []
    yield added
    for name in added:
        DATASETS.remove(name)


@pytest.mark.parametrize("stats", [None, ((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])
def test_a_users_data_set_builds_with_its_own_facts(my_sets, stats):
    train, test = _images(30, 3, 12, 0), _images(9, 3, 12, 1)

    @register_dataset("my_set", native_size=12, channels=3, normalization=stats,
                      style="imagenet")
    def load(cfg: DataConfig) -> LoadedSplits:
        return LoadedSplits(tensor_source(train), tensor_source(test), train.classes, 12)

    my_sets.append("my_set")
    assert NATIVE_SIZES["my_set"] == 12 and ("my_set" in NORMALIZATION) == (stats is not None)
    check_data_config(DataConfig(name="my_set", cutout=11))
    with pytest.raises(ConfigError, match=r"'data\.cutout'.*12-pixel images, got 12"):
        check_data_config(DataConfig(name="my_set", cutout=12))
    bundle = build_data(DataConfig(name="my_set", val_fraction=0.0), seed=0)
    assert (bundle.in_channels, bundle.style, bundle.image_size, bundle.num_classes) == (
        3, "imagenet", 12, 3)
    if stats is None:
        pix = train.images.double().div(255).transpose(0, 1).reshape(3, -1)
        mean = pix.mean(1).tolist()
        std = pix.std(1).tolist()
        assert bundle.mean == pytest.approx(mean, rel=1e-5)
        assert bundle.std == pytest.approx(std, rel=1e-5)
    else:
        assert (bundle.mean, bundle.std) == stats


def test_digits_statistics_are_measured_on_its_training_split():
    bundle = build_data(DataConfig(name="digits", subset=60), seed=0)
    pix = bundle.train.images.double().div(255)  # type: ignore[attr-defined]
    assert bundle.mean == pytest.approx((float(pix.mean()),), rel=1e-6)
    assert bundle.std == pytest.approx((float(pix.std()),), rel=1e-6)
    assert bundle.in_channels == 1 and bundle.style == "small"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"native_size": 0, "channels": 3}, "native_size"),
        ({"native_size": 8, "channels": 0}, "channels"),
        ({"native_size": 8, "channels": 3, "style": "tiny"}, "style must be one of small"),
        ({"native_size": 8, "channels": 3, "normalization": ((0.5,), (0.2,))}, "3 values"),
        ({"native_size": 8, "channels": 1, "normalization": ((0.5,), (0.0,))}, "std > 0"),
    ],
)
def test_bad_specs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        register_dataset("bad_set", **kwargs)(lambda cfg: None)
    assert "bad_set" not in DATASETS


def test_a_taken_name_is_refused_naming_the_holder():
    holder = r"\(by supkd\.data\.sets\.cifar\.load_cifar\)"
    with pytest.raises(ValueError, match=r"'cifar10' is already registered " + holder):
        register_dataset("cifar10", native_size=32, channels=3)(lambda cfg: None)
    assert DATASETS["cifar10"].load.__module__ == "supkd.data.sets.cifar"
    assert isinstance(DATASETS["cifar10"], DatasetSpec)


def test_unknown_name_lists_the_registered_ones():
    with pytest.raises(ConfigError) as err:
        check_data_config(DataConfig(name="cifar11"))
    assert str(err.value) == (
        "config field 'data.name': expected one of " + ", ".join(DATASETS)
        + ", got 'cifar11' (did you mean 'cifar10'?)")

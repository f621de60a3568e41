"""DataConfig validation and the stratified split helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from supkd.data import DataConfig, check_data_config
from supkd.data.splits import stratified_split
from supkd.errors import ConfigError


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "mnist"),
        ("val_fraction", 1.0),
        ("val_fraction", -0.1),
        ("val_fraction", "a"),
        ("subset", 0),
        ("image_size", -4),
        ("download", "yes"),
        ("num_workers", -2),
        ("gpu_resident", "maybe"),
        ("split_seed", 1.5),
    ],
)
def test_bad_fields_name_the_field(field: str, value: object) -> None:
    # The data-set name is the data layer's to check (the config layer knows no data set).
    with pytest.raises(ConfigError, match=rf"data\.{field}"):
        check_data_config(DataConfig(**{field: value}))


def test_defaults_are_valid() -> None:
    cfg = DataConfig()
    assert cfg.name == "digits" and cfg.val_fraction == 0.1 and cfg.gpu_resident == "auto"


def test_stratified_split_counts_proportional_and_seeded() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    take, rest = stratified_split(labels, 10, seed=3)
    assert len(take) == 10 and len(rest) == 90
    assert set(take.tolist()).isdisjoint(rest.tolist())
    assert sorted(take.tolist() + rest.tolist()) == list(range(100))
    counts = np.bincount(labels[take].numpy(), minlength=3)
    assert counts.tolist() == [5, 3, 2]  # exactly proportional here
    again, _ = stratified_split(labels, 10, seed=3)
    other, _ = stratified_split(labels, 10, seed=4)
    assert torch.equal(take, again) and not torch.equal(take, other)


def test_stratified_split_largest_remainder() -> None:
    labels = torch.tensor([0] * 7 + [1] * 2 + [2] * 1)
    take, _ = stratified_split(labels, 3, seed=0)
    # Shares 2.1, 0.6, 0.3: floors 2, 0, 0, the remaining one goes to class 1.
    assert np.bincount(labels[take].numpy(), minlength=3).tolist() == [2, 1, 0]
    with pytest.raises(ValueError):
        stratified_split(labels, 11, seed=0)

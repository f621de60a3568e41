"""Seed expansion and RNG state capture."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch

from supkd.train.seeding import expand_seed, rng_state, set_rng_state


def test_expand_seed_is_deterministic_and_splits_into_distinct_seeds():
    a, b = expand_seed(0), expand_seed(0)
    assert a == b
    assert len({a.init, a.data, a.augment}) == 3
    assert expand_seed(1) != a
    assert all(0 <= s < 2**31 for s in (a.init, a.data, a.augment))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            expand_seed(bad)


def test_rng_state_round_trip_through_weights_only_torch_load():
    state = rng_state()
    expected = (random.random(), np.random.rand(3), torch.rand(4))
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    set_rng_state(torch.load(buf, weights_only=True))
    assert random.random() == expected[0]
    assert np.array_equal(np.random.rand(3), expected[1])
    assert torch.equal(torch.rand(4), expected[2])

"""protocols: the meta keys a grid writes and the α rule."""

from __future__ import annotations

import math
import re

import pytest

import supkd.experiments.protocols as protocols
from supkd.experiments.protocols import META_KEYS, choose_alpha


def test_every_meta_key_is_documented_once():
    # The module's table of keys is the reference the docs point to: it names each key of
    # META_KEYS, and no other.
    documented = re.findall(r"^``(\w+)``\s", protocols.__doc__, flags=re.MULTILINE)
    assert sorted(documented) == sorted(META_KEYS)
    assert len(set(META_KEYS)) == len(META_KEYS)
    assert {"teacher_kind", "variant", "table"} <= set(META_KEYS)


def test_choose_alpha_rule():
    chosen, means = choose_alpha({0.1: [80.0, 82.0], 1.0: [85.0, 83.0], 10.0: [90.0, None]})
    assert chosen == 1.0  # 10.0 has a diverged seed: not eligible
    assert means[0.1] == pytest.approx(81.0) and math.isnan(means[10.0])
    assert choose_alpha({2.0: [70.0], 0.5: [70.0]})[0] == 2.0  # tie -> first listed
    assert choose_alpha({2.0: [None], 0.5: []})[0] == 2.0  # nothing usable -> first
    with pytest.raises(ValueError):
        choose_alpha({})

"""protocols: table placement from meta, baselines, published numbers, the α rule."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from supkd.experiments.protocols import (
    META_KEYS,
    baseline_of,
    cell_of,
    choose_alpha,
    load_published,
    published_cell,
    tables_of,
)

SHARED = Path(__file__).resolve().parents[3] / "shared" / "paper" / "published_results.yaml"


def test_shipped_copy_matches_the_transcription():
    if not SHARED.is_file():
        pytest.skip(f"needs {SHARED} beside the repository")
    assert load_published() == yaml.safe_load(SHARED.read_text()) or _nan_equal(
        load_published(), yaml.safe_load(SHARED.read_text()))


def _nan_equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_nan_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_nan_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def test_published_cells():
    assert published_cell("table1", "teacher", "supcon") == "94.02 ± 0.09"
    assert published_cell("table2", "supcon_kd", "supcon") == "94.45 ± 0.09"
    assert published_cell("table2", "gram", "ce") == "–"
    assert published_cell("table4", "logit_mse", "supcon") == "73.70 ± 0.11"
    assert published_cell("table5", "none", "acc") == "NaN"
    assert published_cell("table5", "student_only", "acc") == "74.08"
    assert published_cell("table2", "hinton_kl", "supcon") == "–"


def test_placement_from_meta():
    meta = {"table": ["table2", "table5"], "method": "supcon_kd", "teacher_kind": "supcon",
            "placement": "student_only"}
    assert tables_of(meta) == ["table2", "table5"]
    assert cell_of(meta, "table2") == ("supcon_kd", "supcon")
    assert cell_of(meta, "table5") == ("student_only", "acc")
    assert cell_of({"role": "teacher"}, "table1") is None  # no column
    assert tables_of({"table": "nonsense"}) == []
    assert tables_of({}) == []
    assert "teacher_kind" in META_KEYS


def test_baselines():
    assert baseline_of("table1", "student", "supcon") == ("table1", "student", "ce")
    assert baseline_of("table1", "student", "ce") is None
    assert baseline_of("table2", "gram", "supcon") == ("table2", "logit_mse", "supcon")
    assert baseline_of("table2", "logit_mse", "ce") == ("table1", "student", "ce")
    assert baseline_of("table4", "logit_mse", "ce") == ("table3", "student", "ce")
    assert baseline_of("table5", "both", "acc") == ("table5", "student_only", "acc")
    assert baseline_of("table5", "student_only", "acc") is None


def test_choose_alpha_rule():
    chosen, means = choose_alpha({0.1: [80.0, 82.0], 1.0: [85.0, 83.0], 10.0: [90.0, None]})
    assert chosen == 1.0  # 10.0 has a diverged seed: not eligible
    assert means[0.1] == pytest.approx(81.0) and math.isnan(means[10.0])
    assert choose_alpha({2.0: [70.0], 0.5: [70.0]})[0] == 2.0  # tie -> first listed
    assert choose_alpha({2.0: [None], 0.5: []})[0] == 2.0  # nothing usable -> first
    with pytest.raises(ValueError):
        choose_alpha({})

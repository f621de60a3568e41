"""protocols: table placement from meta, baselines, published numbers, the α rule."""

from __future__ import annotations

import math

import pytest

from supkd.experiments.protocols import (
    META_KEYS,
    TABLES,
    baseline_of,
    cell_of,
    choose_alpha,
    load_published,
    published_cell,
    tables_of,
)


def test_the_published_numbers_file_keeps_its_nans():
    # Table V's diverged runs are NaN in the paper, not missing.
    t5 = load_published()["imagenet1k"]["table5"]
    assert math.isnan(t5["none"]) and math.isnan(t5["teacher_only"]) and t5["both"] == 73.70


def test_table_specs_answer_the_old_helpers():
    # The protocols helpers are the specs' own rules (one copy of each).
    for table in ("table1", "table2", "table3", "table4", "table5"):
        spec = TABLES[table]
        for row in spec.row_order():
            for col in spec.cols:
                assert baseline_of(table, row, col) == spec.baseline(row, col)
                assert published_cell(table, row, col) == spec.published_cell(row, col)


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

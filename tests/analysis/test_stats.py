"""Aggregation over seeds: known inputs -> known mean, std, Welch p-value and cell text.

The reference values are computed here straight from the formulas (Welch 1947: t with
Welch–Satterthwaite degrees of freedom, p from the t distribution's survival function), not
through ``scipy.stats.ttest_ind`` that the module uses.
"""

from __future__ import annotations

import math

import pytest
from scipy import stats as st

from supkd.analysis.stats import (
    format_cell,
    format_mean_std,
    format_p,
    summarize,
    welch_test,
)


def _welch_reference(a: list[float], b: list[float]) -> tuple[float, float, float]:
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    p = 2 * st.t.sf(abs(t), df)
    return t, p, df


def test_mean_and_sample_std_known_values():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert s.n == 4
    assert s.mean == pytest.approx(2.5)
    # sum of squared deviations = 5, / (n - 1) = 5/3
    assert s.std == pytest.approx(math.sqrt(5 / 3))


def test_std_undefined_for_one_value_and_mean_for_none():
    assert math.isnan(summarize([93.0]).std)
    assert summarize([93.0]).mean == 93.0
    assert math.isnan(summarize([]).mean)


@pytest.mark.parametrize(
    "a,b",
    [
        ([94.45, 94.31, 94.52, 94.40, 94.57], [94.04, 93.90, 94.17, 94.01, 94.12]),
        ([1.0, 2.0, 3.0], [1.5, 2.5, 9.0, 4.0]),
        ([10.0, 10.1], [9.0, 9.5, 9.9, 10.4, 8.8, 9.2]),
    ],
)
def test_welch_matches_formula(a, b):
    t, p, df = _welch_reference(a, b)
    c = welch_test(summarize(a), summarize(b))
    assert c.t == pytest.approx(t, rel=1e-10)
    assert c.df == pytest.approx(df, rel=1e-10)
    assert c.p == pytest.approx(p, rel=1e-8)
    assert c.diff == pytest.approx(sum(a) / len(a) - sum(b) / len(b))


def test_welch_is_not_student_t_for_unequal_variances():
    a, b = [1.0, 1.1, 0.9], [4.0, 9.0, -3.0, 12.0, 2.0, -2.0]
    pooled = st.ttest_ind(a, b, equal_var=True).pvalue
    assert welch_test(a, b).p != pytest.approx(pooled, rel=1e-3)


def test_welch_untestable_cases_give_nan():
    assert not welch_test([1.0], [1.0, 2.0]).tested
    assert not welch_test([], [1.0, 2.0]).tested
    assert not welch_test([3.0, 3.0], [3.0, 3.0]).tested


def test_significance_marks():
    far = welch_test([94.0, 94.1, 94.2, 94.1], [90.0, 90.1, 89.9, 90.0])
    near = welch_test([94.0, 95.0, 93.0], [94.1, 95.2, 92.9])
    assert far.significant() and far.p < 1e-5
    assert not near.significant()
    assert "ns" not in format_cell(summarize([94.0, 94.1, 94.2, 94.1]), far)
    cell = format_cell(summarize([94.0, 95.0, 93.0]), near)
    assert cell.endswith(", ns)")
    assert f"p={format_p(near.p)}" in cell
    assert format_cell(summarize([94.0]), welch_test([94.0], [1.0, 2.0])) == "94.00 (n=1, no test)"


def test_cell_text_mean_std_n():
    s = summarize([94.45, 94.31, 94.52, 94.40, 94.57])
    assert format_mean_std(s) == "94.45 ± 0.10"
    assert format_cell(s) == "94.45 ± 0.10 (n=5)"


def test_diverged_cells():
    assert format_mean_std(summarize([], diverged_steps=[17])) == "NaN (diverged at step 17)"
    assert format_cell(summarize([], diverged_steps=[9, 3])) == "NaN (diverged at steps 3, 9)"
    mixed = format_cell(summarize([90.0, 92.0], diverged_steps=[40]))
    assert mixed == "91.00 ± 1.41 (n=2); 1 diverged (step 40)"
    assert format_cell(summarize([], failed=2)) == "failed (2 runs)"
    assert format_cell(summarize([])) == "–"


def test_bad_input():
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="failed"):
        summarize([1.0], failed=-1)


def test_format_p():
    assert format_p(0.0004) == "<0.001"
    assert format_p(0.0412) == "0.041"
    assert format_p(float("nan")) == "–"

"""Statistics for tables over seeds: mean ± sample std with n, Welch's t-test, cell text.

docs/design.md §5: tables show mean ± sample standard deviation (ddof = 1) with the number of
seeds n, and Welch's unequal-variance t-test against the row the table names as its baseline;
a difference that is not significant at 0.05 is marked. Diverged runs (docs/design.md §8) are shown
as the paper's Table V shows them: ``NaN (diverged at step k)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats as _st

SIGNIFICANCE_LEVEL = 0.05
NOT_SIGNIFICANT_MARK = "ns"


@dataclass(frozen=True)
class Summary:
    """Accuracy of one table cell over seeds.

    ``values`` are the finite results of completed runs; ``diverged_steps`` the steps at which
    the cell's diverged runs stopped; ``failed`` the number of runs that crashed.
    """

    values: tuple[float, ...]
    diverged_steps: tuple[int | None, ...] = ()
    failed: int = 0

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation, ddof = 1 (NaN for n < 2)."""
        return float(np.std(self.values, ddof=1)) if len(self.values) >= 2 else math.nan

    @property
    def empty(self) -> bool:
        return not self.values and not self.diverged_steps and not self.failed


def summarize(
    values: Sequence[float],
    diverged_steps: Sequence[int | None] = (),
    failed: int = 0,
) -> Summary:
    """Build a :class:`Summary`; non-finite entries of ``values`` raise ``ValueError``
    (a diverged run belongs in ``diverged_steps``, not among the accuracies)."""
    vals = tuple(float(v) for v in values)
    bad = [v for v in vals if not math.isfinite(v)]
    if bad:
        raise ValueError(f"values must be finite accuracies, got {bad[0]!r}; "
                         "pass diverged runs as diverged_steps")
    if failed < 0:
        raise ValueError(f"failed must be >= 0, got {failed}")
    return Summary(vals, tuple(diverged_steps), int(failed))


@dataclass(frozen=True)
class Comparison:
    """Welch's t-test of a cell against its baseline.

    ``p`` is NaN when the test is undefined (fewer than 2 values on a side, or both sides
    constant and equal)."""

    t: float
    p: float
    df: float
    diff: float = field(default=math.nan)

    @property
    def tested(self) -> bool:
        return math.isfinite(self.p)

    def significant(self, level: float = SIGNIFICANCE_LEVEL) -> bool:
        return self.tested and self.p < level


def welch_test(a: Summary | Sequence[float], b: Summary | Sequence[float]) -> Comparison:
    """Welch's two-sided t-test of ``a`` against ``b`` (``scipy.stats.ttest_ind`` with
    ``equal_var=False``; Welch 1947). ``diff`` = mean(a) − mean(b)."""
    xa = np.asarray(a.values if isinstance(a, Summary) else a, dtype=np.float64)
    xb = np.asarray(b.values if isinstance(b, Summary) else b, dtype=np.float64)
    diff = float(xa.mean() - xb.mean()) if xa.size and xb.size else math.nan
    if xa.size < 2 or xb.size < 2:
        return Comparison(math.nan, math.nan, math.nan, diff)
    with warnings.catch_warnings():
        # Constant samples make scipy warn about precision; the NaN/inf result is handled.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = _st.ttest_ind(xa, xb, equal_var=False)
    return Comparison(float(res.statistic), float(res.pvalue), float(res.df), diff)


def format_mean_std(s: Summary, digits: int = 2) -> str:
    """``'94.45 ± 0.09'`` (just the mean for n = 1), or the divergence/failure text."""
    if s.n == 0:
        if s.diverged_steps:
            return "NaN (" + _diverged_text(s.diverged_steps) + ")"
        if s.failed:
            return f"failed ({s.failed} run{'s' if s.failed > 1 else ''})"
        return "–"
    if s.n == 1:
        return f"{s.mean:.{digits}f}"
    return f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def _diverged_text(steps: Sequence[int | None]) -> str:
    known = sorted(int(k) for k in steps if k is not None)
    if not known:
        return "diverged"
    if len(known) == 1:
        return f"diverged at step {known[0]}"
    return "diverged at steps " + ", ".join(str(k) for k in known)


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def format_cell(
    s: Summary,
    comparison: Comparison | None = None,
    *,
    digits: int = 2,
    level: float = SIGNIFICANCE_LEVEL,
) -> str:
    """One Markdown table cell: ``'94.45 ± 0.09 (n=5, p=0.003)'``.

    A comparison that is not significant at ``level`` gets the mark ``ns``; one that cannot be
    tested (n < 2 on a side) says ``no test``. Diverged or failed runs beside completed ones
    are counted after the numbers, e.g. ``'93.10 ± 0.20 (n=3); 2 diverged (steps 40, 41)'``.
    """
    text = format_mean_std(s, digits)
    if s.n == 0:
        return text
    bits = [f"n={s.n}"]
    if comparison is not None:
        if comparison.tested:
            bits.append(f"p={format_p(comparison.p)}")
            if not comparison.significant(level):
                bits.append(NOT_SIGNIFICANT_MARK)
        else:
            bits.append("no test")
    text += " (" + ", ".join(bits) + ")"
    if s.diverged_steps:
        k = len(s.diverged_steps)
        known = sorted(int(x) for x in s.diverged_steps if x is not None)
        plural = "s" if len(known) > 1 else ""
        where = f" (step{plural} {', '.join(map(str, known))})" if known else ""
        text += f"; {k} diverged{where}"
    if s.failed:
        text += f"; {s.failed} failed"
    return text

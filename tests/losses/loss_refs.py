"""Slow reference implementations, written loop by loop straight from the equations.

Plain Python floats (double precision) and the ``math`` module only: no torch op is shared
with the code under test, no max-shift, no vectorization. Inputs are nested lists
(rows = samples). Equations: the paper's Eq. 1-5 as read in DESIGN.md §4, Hinton et al.
(2015) for KD, Khosla et al. (2020) Eq. 2 for SupCon.
"""

from __future__ import annotations

import math

Matrix = list[list[float]]


def _dot(a: list[float], b: list[float]) -> float:
    total = 0.0
    for x, y in zip(a, b, strict=True):
        total += x * y
    return total


def _norm(a: list[float]) -> float:
    return math.sqrt(_dot(a, a))


def _unit(a: list[float]) -> list[float]:
    n = _norm(a)
    return [x / n for x in a]


def logit_mse(s: Matrix, t: Matrix) -> float:
    """Eq. 1: mean over samples of sum_d (t_d - s_d)^2."""
    per = []
    for si, ti in zip(s, t, strict=True):
        per.append(sum((tv - sv) ** 2 for sv, tv in zip(si, ti, strict=True)))
    return sum(per) / len(per)


def norm_mse(s: Matrix, t: Matrix) -> float:
    """Eq. 2: mean over samples of ||t/||t|| - s/||s||||^2 (non-zero rows)."""
    return logit_mse([_unit(r) for r in s], [_unit(r) for r in t])


def cosine(s: Matrix, t: Matrix) -> float:
    """Eq. 3 as a loss: mean over samples of 1 - t.s / (||t|| ||s||)."""
    per = [1.0 - _dot(ti, si) / (_norm(ti) * _norm(si)) for si, ti in zip(s, t, strict=True)]
    return sum(per) / len(per)


def _gram(z: Matrix, mode: str) -> Matrix:
    b, d = len(z), len(z[0])
    if mode == "sample":
        return [[sum(z[i][k] * z[j][k] for k in range(d)) for j in range(b)] for i in range(b)]
    return [[sum(z[i][a] * z[i][c] for i in range(b)) for c in range(d)] for a in range(d)]


def gram(s: Matrix, t: Matrix, normalize: bool = False, mode: str = "sample") -> float:
    """Eq. 4: ||G_t - G_s||_F^2 / B^2, G = Z Z^T (sample) or Z^T Z (channel)."""
    if normalize:
        s, t = [_unit(r) for r in s], [_unit(r) for r in t]
    g_s, g_t = _gram(s, mode), _gram(t, mode)
    total = 0.0
    for row_s, row_t in zip(g_s, g_t, strict=True):
        for a, b in zip(row_s, row_t, strict=True):
            total += (b - a) ** 2
    return total / (len(s) ** 2)


def supcon_kd(
    s: Matrix,
    t: Matrix,
    labels: list[int] | None,
    temperature: float = 0.1,
    normalize_student: bool = True,
    normalize_teacher: bool = False,
) -> float:
    """Eq. 5, mean over teacher anchors; P(t) = same label (or same image when no labels)."""
    if normalize_student:
        s = [_unit(r) for r in s]
    if normalize_teacher:
        t = [_unit(r) for r in t]
    b = len(s)
    per_anchor = []
    for a in range(b):
        denom = sum(math.exp(_dot(t[a], s[j]) / temperature) for j in range(b))
        if labels is None:
            positives = [a]
        else:
            positives = [j for j in range(b) if labels[j] == labels[a]]
        total = 0.0
        for p in positives:
            total += math.log(math.exp(_dot(t[a], s[p]) / temperature) / denom)
        per_anchor.append(-total / len(positives))
    return sum(per_anchor) / b


def hinton_kl(s: Matrix, t: Matrix, temperature: float = 4.0) -> float:
    """Hinton et al. (2015): T^2 * mean_i sum_c p_t log(p_t / p_s), p = softmax(z / T)."""

    def softmax(row: list[float]) -> list[float]:
        e = [math.exp(v / temperature) for v in row]
        z = sum(e)
        return [v / z for v in e]

    per = []
    for si, ti in zip(s, t, strict=True):
        p_s, p_t = softmax(si), softmax(ti)
        per.append(sum(pt * math.log(pt / ps) for ps, pt in zip(p_s, p_t, strict=True)))
    return temperature**2 * sum(per) / len(per)


def supcon(
    features: list[list[list[float]]],
    labels: list[int] | None,
    temperature: float = 0.1,
    base_temperature: float | None = None,
) -> float | None:
    """Khosla et al. (2020) Eq. 2 (L_out); SimCLR when labels is None.

    features[b][v] is view v of image b. Returns None when no anchor has a positive.
    """
    base = temperature if base_temperature is None else base_temperature
    views = [(b, v) for b in range(len(features)) for v in range(len(features[0]))]
    ident = [b if labels is None else labels[b] for b, _ in views]
    z = [features[b][v] for b, v in views]
    per_anchor = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if ident[p] == ident[i]]
        if not positives:
            continue
        denom = sum(math.exp(_dot(z[i], z[a]) / temperature) for a in others)
        total = sum(math.log(math.exp(_dot(z[i], z[p]) / temperature) / denom) for p in positives)
        per_anchor.append(-(temperature / base) * total / len(positives))
    if not per_anchor:
        return None
    return sum(per_anchor) / len(per_anchor)

"""Slow reference implementations, written loop by loop straight from the equations.

Plain Python floats (double precision) and the ``math`` module only: no torch op is shared
with the code under test, no max-shift, no vectorization. Inputs are nested lists
(rows = samples). Equations: the paper's Eq. 1-5 as read in docs/design.md §4, Hinton et al.
(2015) for KD, Khosla et al. (2020) Eq. 2 for SupCon, and the KD baselines as issue 14 defines
them: DKD (Zhao et al. 2022), DIST (Huang et al. 2022), SP (Tung & Mori 2019), RKD (Park et
al. 2019), CRD (Tian et al. 2020), logit standardization (Sun et al. 2024).
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


def zscore(z: Matrix) -> Matrix:
    """Sun et al. (2024): each row (z - mean) / (std + 1e-7), std with n - 1 (Bessel)."""
    out = []
    for row in z:
        n = len(row)
        mean = sum(row) / n
        std = math.sqrt(sum((v - mean) ** 2 for v in row) / (n - 1))
        out.append([(v - mean) / (std + 1e-7) for v in row])
    return out


def _softmax(row: list[float], temperature: float) -> list[float]:
    e = [math.exp(v / temperature) for v in row]
    z = sum(e)
    return [v / z for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def hinton_kl(
    s: Matrix, t: Matrix, temperature: float = 4.0, standardize: bool = False
) -> float:
    """Hinton et al. (2015): T^2 * mean_i sum_c p_t log(p_t / p_s), p = softmax(z / T)."""
    if standardize:
        s, t = zscore(s), zscore(t)

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


def dkd(
    s: Matrix,
    t: Matrix,
    labels: list[int],
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
) -> float:
    """DKD: T^2 mean_i [alpha KL(b_t || b_s) + beta KL(p^_t || p^_s)], b = (p_y, 1 - p_y),
    p^ = p over the non-target classes, renormalized."""
    if standardize:
        s, t = zscore(s), zscore(t)
    per = []
    for si, ti, y in zip(s, t, labels, strict=True):
        p_s, p_t = _softmax(si, temperature), _softmax(ti, temperature)
        b_s, b_t = [p_s[y], 1.0 - p_s[y]], [p_t[y], 1.0 - p_t[y]]
        others = [c for c in range(len(si)) if c != y]
        rest_s, rest_t = sum(p_s[c] for c in others), sum(p_t[c] for c in others)
        q_s = [p_s[c] / rest_s for c in others]
        q_t = [p_t[c] / rest_t for c in others]
        per.append(alpha * _kl(b_t, b_s) + beta * _kl(q_t, q_s))
    return temperature**2 * sum(per) / len(per)


def _pearson(a: list[float], b: list[float], eps: float = 1e-8) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    ca, cb = [x - ma for x in a], [x - mb for x in b]
    return _dot(ca, cb) / (_norm(ca) * _norm(cb) + eps)


def dist(
    s: Matrix, t: Matrix, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0
) -> float:
    """DIST: T^2 [beta (1 - mean_i rho(rows)) + gamma (1 - mean_c rho(columns))]."""
    p_s = [_softmax(r, temperature) for r in s]
    p_t = [_softmax(r, temperature) for r in t]
    b, c = len(s), len(s[0])
    inter = sum(_pearson(p_s[i], p_t[i]) for i in range(b)) / b
    cols_s = [[p_s[i][k] for i in range(b)] for k in range(c)]
    cols_t = [[p_t[i][k] for i in range(b)] for k in range(c)]
    intra = sum(_pearson(cols_s[k], cols_t[k]) for k in range(c)) / c
    return temperature**2 * (beta * (1.0 - inter) + gamma * (1.0 - intra))


def sp(s: Matrix, t: Matrix) -> float:
    """SP: ||rownorm(Q_t Q_t^T) - rownorm(Q_s Q_s^T)||_F^2 / B^2 (rows of the Gram, after)."""

    def rownorm_gram(q: Matrix) -> Matrix:
        g = _gram(q, "sample")
        out = []
        for row in g:
            n = _norm(row)
            out.append([v / n if n > 0 else 0.0 for v in row])
        return out

    g_s, g_t = rownorm_gram(s), rownorm_gram(t)
    total = sum((b - a) ** 2 for rs, rt in zip(g_s, g_t) for a, b in zip(rs, rt))
    return total / len(s) ** 2


def _huber(a: float, b: float) -> float:
    d = abs(a - b)
    return 0.5 * d * d if d < 1.0 else d - 0.5


def _distance_potentials(f: Matrix) -> Matrix:
    b = len(f)
    d = [[_norm([x - y for x, y in zip(f[i], f[j])]) for j in range(b)] for i in range(b)]
    pairs = [d[i][j] for i in range(b) for j in range(b) if i != j]
    mean = sum(pairs) / len(pairs) if pairs else 0.0
    return [[v / mean if mean > 0 else 0.0 for v in row] for row in d]


def _angle_potentials(f: Matrix) -> list[Matrix]:
    b = len(f)

    def unit_or_zero(v: list[float]) -> list[float]:
        n = _norm(v)
        return [x / n for x in v] if n > 0 else [0.0] * len(v)

    e = [[unit_or_zero([x - y for x, y in zip(f[j], f[i])]) for j in range(b)] for i in range(b)]
    return [[[_dot(e[i][j], e[i][k]) for k in range(b)] for j in range(b)] for i in range(b)]


def rkd(s: Matrix, t: Matrix, distance_weight: float = 25.0, angle_weight: float = 50.0) -> float:
    """RKD: w_D mean Huber over the B^2 distance potentials + w_A mean over the B^3 angles."""
    b = len(s)
    ds, dt = _distance_potentials(s), _distance_potentials(t)
    loss_d = sum(_huber(ds[i][j], dt[i][j]) for i in range(b) for j in range(b)) / b**2
    a_s, a_t = _angle_potentials(s), _angle_potentials(t)
    loss_a = sum(
        _huber(a_s[i][j][k], a_t[i][j][k]) for i in range(b) for j in range(b) for k in range(b)
    ) / b**3
    return distance_weight * loss_d + angle_weight * loss_a


def crd_embed(x: Matrix, weight: Matrix, bias: list[float]) -> Matrix:
    """CRD's embedding: unit(W x + b) per sample."""
    return [_unit([_dot(w, row) + c for w, c in zip(weight, bias)]) for row in x]


def crd_z(v: Matrix, memory: Matrix, ids: list[list[int]], temperature: float) -> float:
    """The NCE normalization constant: N * mean over the B (K + 1) scores of exp(v.m / tau)."""
    scores = [math.exp(_dot(v[i], memory[m]) / temperature) for i, row in enumerate(ids)
              for m in row]
    return len(memory) * sum(scores) / len(scores)


def crd_side(
    v: Matrix, memory: Matrix, ids: list[list[int]], z: float, temperature: float
) -> float:
    """-(1/B) sum_i [log h(pos) + sum_neg log(1 - h)], h = P / (P + K/N), P = e^{v.m/tau}/Z."""
    k = len(ids[0]) - 1
    c = k / len(memory)
    total = 0.0
    for i, row in enumerate(ids):
        for j, m in enumerate(row):
            p = math.exp(_dot(v[i], memory[m]) / temperature) / z
            h = p / (p + c)
            total += math.log(h) if j == 0 else math.log(1.0 - h)
    return -total / len(v)

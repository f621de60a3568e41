"""Slow float64 references of the feature-distillation losses, loop by loop from their
papers' equations (issue 22): plain Python floats and ``math`` only, except that KDSVD's
decomposition itself comes from numpy's LAPACK SVD (not torch's). Maps are nested lists
[b][c][h][w]; vectors [b][d].

A loss with trained parts (FitNet's regressor, VID's regressor, OFD's connector, ReviewKD's
ABFs) is checked on the outputs of those parts: the reference takes the mapped student maps
and applies the paper's formula to them.
"""

from __future__ import annotations

import math

import numpy as np


def _shape(x):
    return len(x), len(x[0]), len(x[0][0]), len(x[0][0][0])


def avg_pool(x, oh: int, ow: int):
    """Adaptive average pooling (B, C, H, W) -> (B, C, oh, ow): bin i spans
    [floor(i·H/oh), ceil((i+1)·H/oh))."""
    b, c, h, w = _shape(x)
    out = []
    for bi in range(b):
        chans = []
        for ci in range(c):
            rows = []
            for i in range(oh):
                r0, r1 = (i * h) // oh, -((-(i + 1) * h) // oh)
                row = []
                for j in range(ow):
                    c0, c1 = (j * w) // ow, -((-(j + 1) * w) // ow)
                    vals = [x[bi][ci][r][q] for r in range(r0, r1) for q in range(c0, c1)]
                    row.append(sum(vals) / len(vals))
                rows.append(row)
            chans.append(rows)
        out.append(chans)
    return out


def _common(s, t):
    _, _, hs, ws = _shape(s)
    _, _, ht, wt = _shape(t)
    if hs >= ht and ws >= wt:
        return avg_pool(s, ht, wt), t
    return s, avg_pool(t, hs, ws)


def _mse(a, b):
    total, n = 0.0, 0
    for ab, bb in zip(a, b, strict=True):
        for ac, bc in zip(ab, bb, strict=True):
            for ar, br in zip(ac, bc, strict=True):
                for x, y in zip(ar, br, strict=True):
                    total += (x - y) ** 2
                    n += 1
    return total / n


def at(student, teacher, p=2.0):
    """Zagoruyko & Komodakis Eq. 2: Σ_stages mean_{b,j} (Q_s − Q_t)², Q = vec(mean_c |A|^p)
    / ‖·‖."""
    total = 0.0
    for s, t in zip(student, teacher, strict=True):
        s, t = _common(s, t)
        b, _, h, w = _shape(s)
        acc = 0.0
        for bi in range(b):
            qs, qt = [], []
            for side, q in ((s, qs), (t, qt)):
                c = len(side[bi])
                for r in range(h):
                    for col in range(w):
                        q.append(sum(abs(side[bi][ci][r][col]) ** p for ci in range(c)) / c)
            ns = max(math.sqrt(sum(v * v for v in qs)), 1e-12)
            nt = max(math.sqrt(sum(v * v for v in qt)), 1e-12)
            acc += sum((a / ns - b_ / nt) ** 2 for a, b_ in zip(qs, qt, strict=True))
        total += acc / (b * h * w)
    return total


def _unit_rows(x):
    out = []
    for row in x:
        n = max(math.sqrt(sum(v * v for v in row)), 1e-12)
        out.append([v / n for v in row])
    return out


def nst(student, teacher):
    """Huang & Wang Eq. 6 with k(x, y) = (xᵀy)²: Σ_stages mean_b MMD² of the channels."""
    total = 0.0
    for s, t in zip(student, teacher, strict=True):
        s, t = _common(s, t)
        b = len(s)
        acc = 0.0
        for bi in range(b):
            fs = _unit_rows([[v for row in ch for v in row] for ch in s[bi]])
            ft = _unit_rows([[v for row in ch for v in row] for ch in t[bi]])

            def kmean(a, c):
                vals = [sum(x * y for x, y in zip(u, v, strict=True)) ** 2 for u in a for v in c]
                return sum(vals) / len(vals)

            acc += kmean(ft, ft) + kmean(fs, fs) - 2.0 * kmean(fs, ft)
        total += acc / b
    return total


def fitnet(mapped_student, teacher):
    """Romero et al. Eq. 3 (mean form): Σ_hints mean (u_t − r(v_s))²."""
    return sum(_mse(s, t) for s, t in zip(mapped_student, teacher, strict=True))


def vid(mapped_student, teacher, log_scales, eps=1e-5):
    """Ahn et al. Eq. 5: Σ_stages mean ½((t − μ)²/σ²_c + log σ²_c), σ² = softplus(α) + ε;
    ``mapped_student`` = μ(s) on the pooled student, ``teacher`` pooled likewise."""
    total = 0.0
    for mu, t, alphas in zip(mapped_student, teacher, log_scales, strict=True):
        b, c, h, w = _shape(t)
        acc = 0.0
        for bi in range(b):
            for ci in range(c):
                var = math.log1p(math.exp(alphas[ci])) + eps
                for r in range(h):
                    for q in range(w):
                        acc += 0.5 * ((t[bi][ci][r][q] - mu[bi][ci][r][q]) ** 2 / var
                                      + math.log(var))
        total += acc / (b * c * h * w)
    return total


def ofd_margin(std, mean):
    """E[x | x < 0], x ~ N(mean, std²), by numerical integration (Simpson, 20001 points
    over [mean − 12 std, 0]); −3 std when P(x < 0) ≤ 0.001."""
    s = abs(std)
    p_neg = 0.5 * math.erfc(mean / (s * math.sqrt(2.0)))
    if p_neg <= 0.001:
        return -3.0 * s
    lo, hi, n = min(mean - 12.0 * s, -12.0 * s), 0.0, 20000
    step = (hi - lo) / n
    num = den = 0.0
    for i in range(n + 1):
        x = lo + i * step
        wgt = 1 if i in (0, n) else (4 if i % 2 else 2)
        dens = math.exp(-((x - mean) / s) ** 2 / 2.0)
        num += wgt * x * dens
        den += wgt * dens
    return num / den


def ofd(mapped_student, teacher, margins):
    """Heo et al. Eq. 6: Σ_k 2^{−(K−1−k)} mean_b Σ partial-L2(max(t, m), r(s)); the teacher
    average-pooled to the student's size."""
    k_total = len(mapped_student)
    total = 0.0
    for k, (s, t, m) in enumerate(zip(mapped_student, teacher, margins, strict=True)):
        b, c, h, w = _shape(s)
        t = avg_pool(t, h, w)
        acc = 0.0
        for bi in range(b):
            for ci in range(c):
                for r in range(h):
                    for q in range(w):
                        tv = max(t[bi][ci][r][q], m[ci])
                        sv = s[bi][ci][r][q]
                        if not (sv <= tv <= 0.0):
                            acc += (tv - sv) ** 2
        total += acc / b / 2.0 ** (k_total - 1 - k)
    return total


def hcl(fused_student, teacher):
    """Chen et al. Sec. 3.3: per stage, MSE of the maps and of their 4/2/1 pools (levels
    below H), weights 1, ½, ¼, ..., over the weights' sum; summed over stages."""
    total = 0.0
    for s, t in zip(fused_student, teacher, strict=True):
        h = len(s[0][0])
        loss, weight, norm = _mse(s, t), 1.0, 1.0
        for level in (4, 2, 1):
            if level >= h:
                continue
            weight /= 2.0
            loss += weight * _mse(avg_pool(s, level, level), avg_pool(t, level, level))
            norm += weight
        total += loss / norm
    return total


def _svd_v(f, k):
    """(B, W, k') right singular vectors of (C·H) x W, sign-fixed (largest |entry| > 0),
    unit columns, and σ (B, k') unit-normalized."""
    arr = np.asarray(f, dtype=np.float64)
    b, c, h, w = arr.shape
    vs, sigs = [], []
    for bi in range(b):
        _, sig, vh = np.linalg.svd(arr[bi].reshape(c * h, w), full_matrices=False)
        n = min(k, len(sig))
        cols = []
        for j in range(n):
            v = [float(x) for x in vh[j]]
            big = max(range(w), key=lambda i, v=v: abs(v[i]))
            sign = -1.0 if v[big] < 0 else 1.0
            norm = math.sqrt(sum(x * x for x in v))
            cols.append([sign * x / norm for x in v])
        ns = math.sqrt(sum(float(x) ** 2 for x in sig[:n]))
        vs.append(cols)
        sigs.append([float(x) / ns for x in sig[:n]])
    return vs, sigs


def kdsvd(student, teacher, k=1):
    """Lee et al. 2018 (mdistiller's form): RBF exp(−(v^l_i − v^{l−1}_j)²/8) of the leading
    right singular vectors between consecutive stages, Σ (G_s − G_t)² / B."""
    prev = None
    total = 0.0
    b = len(student[0])
    for s, t in zip(student, teacher, strict=True):
        vt, st = _svd_v(t, k)
        vs_all, _ = _svd_v(s, k + 3)
        vs = []
        for bi in range(b):
            cols = []
            for tc in vt[bi]:
                cos = [sum(x * y for x, y in zip(sc, tc, strict=True)) for sc in vs_all[bi]]
                best = max(range(len(cos)), key=lambda i, cos=cos: abs(cos[i]))
                sign = 1.0 if cos[best] > 0 else (-1.0 if cos[best] < 0 else 0.0)
                cols.append([sign * x for x in vs_all[bi][best]])
            vs.append(cols)
        vt = [[[x * st[bi][n] for x in col] for n, col in enumerate(vt[bi])] for bi in range(b)]
        vs = [[[x * st[bi][n] for x in col] for n, col in enumerate(vs[bi])] for bi in range(b)]
        if prev is not None:
            ps, pt = prev
            for bi in range(b):
                for n in range(len(vt[bi])):
                    for i in range(len(vt[bi][n])):
                        for j in range(len(pt[bi][n])):
                            gs = math.exp(-((vs[bi][n][i] - ps[bi][n][j]) ** 2) / 8.0)
                            gt = math.exp(-((vt[bi][n][i] - pt[bi][n][j]) ** 2) / 8.0)
                            total += (gs - gt) ** 2 / b
        prev = (vs, vt)
    return total


def pkt(s, t, eps=1e-7):
    """Passalis & Tefas Eq. 10 (cosine kernel, authors' eps): mean_{ij} P_t log((P_t+ε)/(P_s+ε))."""
    def cond(x):
        rows = [[v / (math.sqrt(sum(u * u for u in r)) + eps) for v in r] for r in x]
        k = [[(sum(a * b for a, b in zip(ri, rj, strict=True)) + 1.0) / 2.0 for rj in rows]
             for ri in rows]
        return [[v / sum(row) for v in row] for row in k]

    ps, pt = cond(s), cond(t)
    n = len(s)
    return sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps))
               for i in range(n) for j in range(n)) / (n * n)


def cc(es, et, gamma=0.4, order=2):
    """Peng et al. Eq. 9 on embedded features es, et (B, d): ‖C_t − C_s‖²_F / B², C the
    order-P Taylor expansion of exp(−γ‖e_i − e_j‖²) on unit rows."""
    def corr(e):
        e = _unit_rows(e)
        out = []
        for a in e:
            row = []
            for b_ in e:
                dot = sum(x * y for x, y in zip(a, b_, strict=True))
                row.append(sum(math.exp(-2.0 * gamma) * (2.0 * gamma) ** p / math.factorial(p)
                               * dot ** p for p in range(order + 1)))
            out.append(row)
        return out

    cs, ct = corr(es), corr(et)
    n = len(es)
    return sum((ct[i][j] - cs[i][j]) ** 2 for i in range(n) for j in range(n)) / (n * n)


def _solve(a, b):
    """x = a⁻¹ b by Gauss-Jordan elimination with partial pivoting (a symmetric PD)."""
    n = len(a)
    m = [[*a[i], b[i]] for i in range(n)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r, col=col: abs(m[r][col]))
        m[col], m[piv] = m[piv], m[col]
        for r in range(n):
            if r != col:
                f = m[r][col] / m[col][col]
                m[r] = [x - f * y for x, y in zip(m[r], m[col], strict=True)]
    return [m[i][n] / m[i][i] for i in range(n)]


def skd(s, t, temperature=4.0, tikhonov=0.1, ins_weight=1.0, dir_weight=1.0,
        gram_by_classes=True, tau_squared=True):
    """SKD as the authors' code computes it: τ²·KL(p_t ‖ p_s) at τ (batch mean)
    + mean_i √(D_iᵀ (cov(D) + λI)⁻¹ D_i), D = (G_s − G_t) / K of the L2-normalized logits'
    Grams; without the two flags, torchdistill's reading (no τ², no /K)."""
    n = len(s)
    scale = len(s[0]) if gram_by_classes else 1
    ins = 0.0
    for si, ti in zip(s, t, strict=True):
        zs = [v / temperature for v in si]
        zt = [v / temperature for v in ti]
        ls = math.log(sum(math.exp(v) for v in zs))
        lt = math.log(sum(math.exp(v) for v in zt))
        for a, b_ in zip(zs, zt, strict=True):
            pt = math.exp(b_ - lt)
            ins += pt * ((b_ - lt) - (a - ls))
    ins /= n
    if tau_squared:
        ins *= temperature ** 2
    us, ut = _unit_rows(s), _unit_rows(t)
    d = [[(sum(x * y for x, y in zip(us[i], us[j], strict=True))
           - sum(x * y for x, y in zip(ut[i], ut[j], strict=True))) / scale for j in range(n)]
         for i in range(n)]
    mean = [sum(d[i][j] for i in range(n)) / n for j in range(n)]
    denom = max(n - 1, 1)
    cov = [[sum((d[r][a] - mean[a]) * (d[r][c] - mean[c]) for r in range(n)) / denom
            + (tikhonov if a == c else 0.0) for c in range(n)] for a in range(n)]
    direction = 0.0
    for i in range(n):
        x = _solve(cov, d[i])
        direction += math.sqrt(max(sum(a * b_ for a, b_ in zip(d[i], x, strict=True)), 0.0))
    return ins_weight * ins + dir_weight * direction / n

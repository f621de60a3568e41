"""Tests of supkd.analysis.cka against closed forms and slow loop references.

References are written straight from the equations:
  Kornblith et al. (2019), Eq. 4 (HSIC_0 = tr(KHLH)/(n-1)^2) and Eq. 5 (linear CKA);
  Song et al. (2012), Eq. 5 (unbiased HSIC_1), as accumulated by Nguyen et al. (2021), Eq. 3.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from supkd.analysis.cka import (
    MinibatchCKA,
    centered_gram,
    cka_from_grams,
    gram_linear,
    gram_rbf,
    hsic_unbiased,
    linear_cka,
)

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape: int, seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    return torch.randn(*shape, generator=_gen(seed), dtype=dtype)


# ----------------------------------------------------------------------------- references


def hsic1_loop(K: np.ndarray, L: np.ndarray) -> float:
    """Song et al. (2012) Eq. 5, element by element with Python loops (no vectorization)."""
    n = K.shape[0]
    Kt = [[0.0 if i == j else float(K[i, j]) for j in range(n)] for i in range(n)]
    Lt = [[0.0 if i == j else float(L[i, j]) for j in range(n)] for i in range(n)]
    tr_kl = 0.0  # tr(K~ L~) = sum_ij K~_ij L~_ji
    for i in range(n):
        for j in range(n):
            tr_kl += Kt[i][j] * Lt[j][i]
    sum_k = sum(Kt[i][j] for i in range(n) for j in range(n))  # 1^T K~ 1
    sum_l = sum(Lt[i][j] for i in range(n) for j in range(n))
    one_kl_one = 0.0  # 1^T K~ L~ 1 = sum_ijq K~_ij L~_jq
    for i in range(n):
        for j in range(n):
            for q in range(n):
                one_kl_one += Kt[i][j] * Lt[j][q]
    return (
        tr_kl + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * one_kl_one
    ) / (n * (n - 3))


def hsic0_ref(K: np.ndarray, L: np.ndarray) -> float:
    """Kornblith et al. (2019) Eq. 4 with an explicit centring matrix H."""
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(K @ H @ L @ H)) / (n - 1) ** 2


def gram_cka_ref(x: torch.Tensor, y: torch.Tensor, debiased: bool) -> float:
    """CKA from explicit n×n Grams of the raw (uncentred) features."""
    xa = x.reshape(x.shape[0], -1).double().numpy()
    ya = y.reshape(y.shape[0], -1).double().numpy()
    K, L = xa @ xa.T, ya @ ya.T
    h = hsic1_loop if debiased else hsic0_ref
    return h(K, L) / math.sqrt(h(K, K) * h(L, L))


def rbf_gram_ref(x: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """exp(-d^2 / (2 sigma^2)), sigma = threshold * sqrt(median of d^2 over pairs i < j)."""
    n = x.shape[0]
    d2 = np.array([[float(np.sum((x[i] - x[j]) ** 2)) for j in range(n)] for i in range(n)])
    med = np.median(d2[np.triu_indices(n, k=1)])
    return np.exp(-d2 / (2.0 * threshold**2 * med))


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("form", ["features", "gram"])
def test_cka_of_x_with_itself_is_one(debiased: bool, form: str) -> None:
    x = _randn(40, 17, seed=0)
    assert linear_cka(x, x, debiased=debiased, form=form) == pytest.approx(1.0, abs=1e-12)
    # A conv-shaped input is flattened per sample.
    xc = _randn(12, 3, 4, 4, seed=1)
    assert linear_cka(xc, xc, debiased=debiased, form=form) == pytest.approx(1.0, abs=1e-12)


def test_minibatch_cka_of_layers_with_themselves_has_unit_diagonal() -> None:
    mb = MinibatchCKA(2, 2)
    for b in range(3):
        a1, a2 = _randn(16, 8, 3, 3, seed=10 + b), _randn(16, 30, seed=20 + b)
        mb.update([a1, a2], [a1, a2])
    out = mb.compute()
    assert torch.allclose(torch.diagonal(out), torch.ones(2, dtype=F64), atol=1e-12)
    assert out[0, 1] == pytest.approx(float(out[1, 0]), abs=1e-12)  # symmetric
    assert abs(float(out[0, 1])) < 0.5  # independent layers are not similar


@pytest.mark.parametrize("debiased", [False, True])
def test_invariant_to_orthogonal_transform_and_isotropic_scaling(debiased: bool) -> None:
    x = _randn(60, 12, seed=2)
    y = x @ _randn(12, 9, seed=3) + 0.7 * _randn(60, 9, seed=4)
    base = linear_cka(x, y, debiased=debiased)
    q, _ = torch.linalg.qr(_randn(12, 12, seed=5))
    assert torch.allclose(q.T @ q, torch.eye(12, dtype=F64), atol=1e-12)
    assert linear_cka(x @ q, y, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(x, 37.5 * y, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(1e-3 * (x @ q), y, debiased=debiased) == pytest.approx(base, abs=1e-10)
    # Not invariant to an arbitrary invertible linear map: stretch some directions by 100.
    a = _randn(12, 12, seed=6) @ torch.diag(torch.logspace(0, 2, 12, dtype=F64))
    assert torch.linalg.matrix_rank(a) == 12
    changed = linear_cka(x @ a, y, debiased=debiased)
    assert abs(changed - base) > 0.2, (base, changed)


def test_unbiased_is_near_zero_on_independent_wide_data_where_biased_is_not() -> None:
    # n = 32 samples of 2,000 independent features: the biased estimate is dominated by the
    # sample size (near 1), the unbiased one estimates the true value 0.
    biased, unbiased = [], []
    for seed in range(5):
        x = _randn(32, 2000, seed=100 + seed)
        y = _randn(32, 2000, seed=200 + seed)
        biased.append(linear_cka(x, y))
        unbiased.append(linear_cka(x, y, debiased=True))
    assert min(biased) > 0.9, biased
    assert max(abs(u) for u in unbiased) < 0.1, unbiased
    assert abs(sum(unbiased) / len(unbiased)) < 0.03, unbiased
    # The streaming estimator shows the same over 6 batches of 32 (its spread over seeds is
    # about 0.016), where averaging the biased per-batch CKA stays near 1.
    mb = MinibatchCKA(1, 1)
    per_batch_biased = []
    for b in range(6):
        x, y = _randn(32, 2000, seed=300 + b), _randn(32, 2000, seed=400 + b)
        mb.update([x], [y])
        per_batch_biased.append(linear_cka(x, y))
    assert abs(float(mb.compute()[0, 0])) < 0.06
    assert sum(per_batch_biased) / 6 > 0.9


# ----------------------------------------------------------------------------- references


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize(("p1", "p2"), [(5, 7), (3, 60), (90, 80)])
def test_feature_form_equals_gram_form_and_reference(debiased: bool, p1: int, p2: int) -> None:
    x = _randn(20, p1, seed=7) + 2.0  # an offset: centring must be done right
    y = torch.tanh(x[:, :1] * _randn(1, p2, seed=8)) + 0.3 * _randn(20, p2, seed=9)
    feat = linear_cka(x, y, debiased=debiased, form="features")
    gram = linear_cka(x, y, debiased=debiased, form="gram")
    auto = linear_cka(x, y, debiased=debiased)
    ref = gram_cka_ref(x, y, debiased)
    assert feat == pytest.approx(gram, abs=1e-12)
    assert auto == pytest.approx(gram, abs=1e-12)
    assert feat == pytest.approx(ref, abs=1e-10)


def test_biased_feature_form_matches_kornblith_eq5_literally() -> None:
    x = _randn(30, 6, seed=11)
    y = x[:, :4] ** 2 + _randn(30, 4, seed=12)
    xc, yc = x - x.mean(0), y - y.mean(0)
    eq5 = (torch.linalg.norm(yc.T @ xc) ** 2
           / (torch.linalg.norm(xc.T @ xc) * torch.linalg.norm(yc.T @ yc)))
    assert linear_cka(x, y) == pytest.approx(float(eq5), abs=1e-12)


def test_hsic_unbiased_matches_loop_and_is_shift_invariant() -> None:
    x, y = _randn(9, 4, seed=13), _randn(9, 6, seed=14)
    K, L = x @ x.T, y @ y.T
    assert float(hsic_unbiased(K, L)) == pytest.approx(hsic1_loop(K.numpy(), L.numpy()), abs=1e-12)
    xs, ys = x + 5.0, y - 3.0
    assert float(hsic_unbiased(xs @ xs.T, ys @ ys.T)) == pytest.approx(
        float(hsic_unbiased(K, L)), abs=1e-9
    )


def test_minibatch_equals_ratio_of_summed_per_batch_loop_hsics() -> None:
    # Two layers of A (one conv-shaped), three of B, four batches of unequal size.
    batches = []
    for b, m in enumerate([8, 6, 10, 7]):
        z = _randn(m, 5, seed=500 + b)
        a = [
            _randn(m, 2, 3, 3, seed=600 + b) + z[:, :1, None, None],
            torch.relu(z @ _randn(5, 11, seed=1)),
        ]
        bl = [
            z[:, :3] + 0.1 * _randn(m, 3, seed=700 + b),
            _randn(m, 4, 2, 2, seed=800 + b),
            torch.cat([z, z**2], dim=1),
        ]
        batches.append((a, bl))
    mb = MinibatchCKA(2, 3)
    for a, bl in batches:
        mb.update(a, bl)
    got = mb.compute()

    def gram(t: torch.Tensor) -> np.ndarray:
        f = t.reshape(t.shape[0], -1).numpy()
        return f @ f.T

    cross = np.zeros((2, 3))
    self_a, self_b = np.zeros(2), np.zeros(3)
    for a, bl in batches:
        for i in range(2):
            self_a[i] += hsic1_loop(gram(a[i]), gram(a[i]))
            for j in range(3):
                cross[i, j] += hsic1_loop(gram(a[i]), gram(bl[j]))
        for j in range(3):
            self_b[j] += hsic1_loop(gram(bl[j]), gram(bl[j]))
    want = cross / np.sqrt(self_a[:, None] * self_b[None, :])
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-10)
    sums = mb.hsic_sums
    np.testing.assert_allclose(sums[0].numpy(), cross, rtol=1e-10, atol=1e-10)
    assert mb.num_batches == 4 and mb.num_samples == 31
    # Every batch counts: the last batch alone gives a different answer.
    last = MinibatchCKA(2, 3)
    last.update(*batches[-1])
    assert not torch.allclose(last.compute(), got, atol=1e-3)


def test_single_batch_minibatch_equals_debiased_linear_cka() -> None:
    x, y = _randn(24, 3, 5, 5, seed=15), _randn(24, 40, seed=16)
    y = y + x.reshape(24, -1)[:, :40]
    mb = MinibatchCKA(1, 1)
    mb.update([x], [y])
    assert float(mb.compute()[0, 0]) == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-12)


def test_mapping_input_is_read_in_order() -> None:
    x, y = _randn(10, 4, seed=17), _randn(10, 6, seed=18)
    m1, m2 = MinibatchCKA(2, 1), MinibatchCKA(2, 1)
    m1.update({"first": x, "second": y}, {"only": y})
    m2.update([x, y], [y])
    assert torch.equal(m1.compute(), m2.compute())
    assert float(m1.compute()[1, 0]) == pytest.approx(1.0, abs=1e-12)


def test_pool_option_equals_pooled_features() -> None:
    a = [_randn(12, 4, 5, 5, seed=19)]
    b = [_randn(12, 6, 3, 3, seed=20) + a[0][:, :1, :3, :3]]
    pooled = MinibatchCKA(1, 1, pool=True)
    pooled.update(a, b)
    manual = MinibatchCKA(1, 1)
    manual.update([a[0].mean(dim=(2, 3))], [b[0].mean(dim=(2, 3))])
    flat = MinibatchCKA(1, 1)
    flat.update(a, b)
    assert float(pooled.compute()[0, 0]) == pytest.approx(float(manual.compute()[0, 0]), abs=1e-12)
    assert float(pooled.compute()[0, 0]) != pytest.approx(float(flat.compute()[0, 0]), abs=1e-3)


def test_rbf_kernel_matches_reference_median_heuristic() -> None:
    x = _randn(11, 7, seed=21)
    y = torch.sin(x[:, :3]) + 0.2 * _randn(11, 3, seed=22)
    mb = MinibatchCKA(1, 1, kernel="rbf", rbf_threshold=0.8)
    mb.update([x], [y])
    Kx, Ky = rbf_gram_ref(x.numpy(), 0.8), rbf_gram_ref(y.numpy(), 0.8)
    want = hsic1_loop(Kx, Ky) / math.sqrt(hsic1_loop(Kx, Kx) * hsic1_loop(Ky, Ky))
    assert float(mb.compute()[0, 0]) == pytest.approx(want, abs=1e-10)
    np.testing.assert_allclose(gram_rbf(gram_linear(x), 0.8).numpy(), Kx, atol=1e-12)
    same = MinibatchCKA(1, 1, kernel="rbf")
    same.update([x], [x])
    assert float(same.compute()[0, 0]) == pytest.approx(1.0, abs=1e-12)


def test_float32_features_wider_than_a_gram_block_match_float64() -> None:
    # 20,000 features: several float32 blocks summed in float64; post-ReLU (all >= 0, large
    # mean) is the case where a naive float32 uncentred Gram loses the most.
    x64 = torch.relu(_randn(16, 20000, seed=23)) + 3.0
    y64 = x64[:, :5000] * 2.0 + torch.relu(_randn(16, 5000, seed=24))
    m32, m64 = MinibatchCKA(1, 1), MinibatchCKA(1, 1)
    m32.update([x64.float()], [y64.float()])
    m64.update([x64], [y64])
    assert float(m32.compute()[0, 0]) == pytest.approx(float(m64.compute()[0, 0]), abs=1e-5)
    assert gram_linear(x64.float()).dtype == F64


# ----------------------------------------------------------------------------- bad input


def test_batch_smaller_than_four_raises() -> None:
    x, y = _randn(3, 5, seed=25), _randn(3, 5, seed=26)
    with pytest.raises(ValueError, match="at least 4 samples"):
        MinibatchCKA(1, 1).update([x], [y])
    with pytest.raises(ValueError, match="at least 4 samples"):
        linear_cka(x, y, debiased=True)
    with pytest.raises(ValueError, match="at least 4 samples"):
        hsic_unbiased(x @ x.T, y @ y.T)
    assert math.isfinite(linear_cka(x, y))  # the biased estimator is defined for n >= 2
    with pytest.raises(ValueError, match="at least 2 samples"):
        linear_cka(x[:1], y[:1])


def test_bad_arguments_raise_value_error() -> None:
    mb = MinibatchCKA(2, 1)
    with pytest.raises(ValueError, match="before any update"):
        mb.compute()
    with pytest.raises(ValueError, match="expected 2 layers for model A"):
        mb.update([_randn(8, 3, seed=0)], [_randn(8, 3, seed=1)])
    with pytest.raises(ValueError, match="share the batch size"):
        mb.update([_randn(8, 3, seed=0), _randn(9, 3, seed=0)], [_randn(8, 3, seed=1)])
    with pytest.raises(ValueError, match="same number of rows"):
        linear_cka(_randn(8, 3, seed=0), _randn(9, 3, seed=0))
    with pytest.raises(ValueError, match="kernel"):
        MinibatchCKA(1, 1, kernel="poly")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="form"):
        linear_cka(_randn(8, 3, seed=0), _randn(8, 3, seed=0), form="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one layer"):
        MinibatchCKA(0, 1)


# ----------------------------------------------------------------------------- constants


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("form", ["features", "gram"])
def test_constant_representation_gives_zero_not_nan(debiased: bool, form: str) -> None:
    const = torch.full((10, 6), 0.1, dtype=F64)
    y = _randn(10, 4, seed=27)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert linear_cka(const, y, debiased=debiased, form=form) == 0.0
        assert linear_cka(const, const, debiased=debiased, form=form) == 0.0


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_minibatch_constant_layer_row_is_zero_and_others_unaffected(kernel: str) -> None:
    mb = MinibatchCKA(2, 1, kernel=kernel)  # type: ignore[arg-type]
    ref = MinibatchCKA(1, 1, kernel=kernel)  # type: ignore[arg-type]
    for b in range(3):
        x = _randn(8, 5, seed=30 + b)
        y = x[:, :2] + 0.5 * _randn(8, 2, seed=40 + b)
        dead = torch.zeros(8, 3, 2, 2)  # a dead ReLU stage
        mb.update([dead, x], [y])
        ref.update([x], [y])
    out = mb.compute()
    assert not torch.isnan(out).any()
    assert float(out[0, 0]) == 0.0
    assert float(out[1, 0]) == pytest.approx(float(ref.compute()[0, 0]), abs=1e-12)


def test_cka_from_grams_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(n, n\) Grams"):
        cka_from_grams(torch.eye(4), torch.eye(5))


def test_centered_gram_in_blocks_equals_reference() -> None:
    x = _randn(6, 20000, seed=50) + torch.linspace(0, 5, 20000, dtype=F64)  # 3 blocks, offsets
    xa = x.numpy()
    xc = xa - xa.mean(axis=0, keepdims=True)
    want = xc @ xc.T
    got = centered_gram(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-8)
    got32 = centered_gram(x.float()).numpy()
    np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-2 * np.abs(want).max() * 1e-3)
    assert torch.equal(centered_gram(torch.full((5, 9000), 0.3)), torch.zeros(5, 5, dtype=F64))

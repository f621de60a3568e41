"""Closed forms, gradients, invariances and numerics of the losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from loss_setup import ready

from supkd.losses import LOSSES, SupConLoss, build_loss

# Every registered loss with its defaults (a guard, not a hand list: a new loss is checked
# here as soon as it is registered), plus each option worth checking on its own.
OPTIONS = [
    ("gram", {"normalize": True}),
    ("gram", {"mode": "channel"}),
    ("gram", {"mode": "channel", "normalize": True}),
    ("supcon_kd", {"normalize_student": False, "normalize_teacher": True}),
    ("supcon_kd", {"normalize_student": True, "normalize_teacher": True}),
    ("supcon_kd", {"normalize_student": False, "normalize_teacher": False}),
    ("supcon_kd", {"positives": "instance"}),
    ("hinton_kl", {"standardize": True}),
    ("dkd", {"standardize": True}),
    ("dkd", {"alpha": 0.0, "beta": 1.0, "temperature": 1.0}),
    ("dist", {"beta": 2.0, "gamma": 0.0, "temperature": 4.0}),
    ("rkd", {"distance_weight": 1.0, "angle_weight": 0.0}),
    ("crd", {"num_negatives": 5}),
]
# Losses that cannot run without labels (the others accept labels=None).
REQUIRES_LABELS = {"dkd"}
# The multi-stage feature losses take lists of stage maps: test_feature_losses.py.
PAIRWISE = [name for name in LOSSES if not LOSSES[name].multi_stage]
CONFIGS = [(name, {}) for name in PAIRWISE] + OPTIONS
CONFIG_IDS = [f"{n}-{kw}" for n, kw in CONFIGS]


def _pair(b=6, d=5, seed=0, dtype=torch.float32, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    s = (torch.randn(b, d, generator=g, dtype=torch.float64) * scale).to(dtype)
    t = (torch.randn(b, d, generator=g, dtype=torch.float64) * scale).to(dtype)
    y = torch.randint(0, 3, (b,), generator=g)
    return s, t, y


# ----------------------------------------------------------------------------- closed forms


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [(n, kw) for n, kw in CONFIGS if n in ("logit_mse", "norm_mse", "cosine", "gram")],
)
def test_equal_inputs_give_zero(name, kwargs):
    s, _, _ = _pair(b=7, d=5, seed=1, dtype=torch.float64)
    assert ready(name, **kwargs)(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    # And a different input gives a clearly positive value (the zero above is not trivial).
    assert ready(name, **kwargs)(s, s.flip(0) + 1.0).item() > 1e-3


def test_hinton_kl_of_a_distribution_with_itself_is_zero():
    s, _, _ = _pair(b=5, d=10, seed=2, dtype=torch.float64, scale=5.0)
    kd = build_loss("hinton_kl")
    assert kd(s, s.clone()).item() == pytest.approx(0.0, abs=1e-12)
    # Softmax is shift invariant: adding a per-sample constant to the teacher changes nothing.
    assert kd(s, s + torch.randn(5, 1, dtype=torch.float64)).item() == pytest.approx(0, abs=1e-12)


def test_logit_mse_closed_form():
    s = torch.zeros(4, 3)
    t = torch.tensor([[3.0, 4.0, 0.0]] * 4)  # ||t - s||^2 = 25 per sample
    assert build_loss("logit_mse")(s, t).item() == pytest.approx(25.0)


def test_norm_mse_is_twice_cosine_for_nonzero_vectors():
    s, t, _ = _pair(b=9, d=6, seed=3, dtype=torch.float64)
    norm = build_loss("norm_mse")(s, t).item()
    cos = build_loss("cosine")(s, t).item()
    assert norm == pytest.approx(2.0 * cos, rel=1e-12)


def test_cosine_of_opposite_vectors_is_two():
    s, _, _ = _pair(b=4, d=3, seed=4)
    assert build_loss("cosine")(s, -3.0 * s).item() == pytest.approx(2.0, rel=1e-6)


def test_gram_closed_form_orthonormal_rows():
    # Z_s = I (B = D = 3): Gram = I; Z_t = 2 I: Gram = 4 I -> ||3 I||_F^2 / 9 = 27 / 9 = 3.
    eye = torch.eye(3)
    assert build_loss("gram")(eye, 2 * eye).item() == pytest.approx(3.0)
    assert build_loss("gram", normalize=True)(eye, 2 * eye).item() == pytest.approx(0.0)


def test_supcon_kd_identical_student_rows_give_log_batch():
    # All student vectors equal: the softmax over students is uniform, log-prob = -log B.
    b = 8
    s = torch.ones(b, 4)
    t = torch.randn(b, 4)
    labels = torch.randint(0, 3, (b,))
    assert build_loss("supcon_kd")(s, t, labels).item() == pytest.approx(math.log(b), rel=1e-6)


def test_supcon_loss_identical_features_give_log_contrasts():
    # Every similarity is equal: each positive has probability 1 / (N - 1), N = B * V.
    feats = F.normalize(torch.ones(5, 2, 3), dim=-1)
    assert SupConLoss()(feats).item() == pytest.approx(math.log(9), rel=1e-6)
    labels = torch.tensor([0, 0, 1, 1, 1])
    assert SupConLoss()(feats, labels).item() == pytest.approx(math.log(9), rel=1e-6)
    # base_temperature scales by tau / tau_base.
    scaled = SupConLoss(temperature=0.1, base_temperature=0.2)(feats).item()
    assert scaled == pytest.approx(0.5 * math.log(9), rel=1e-6)


def test_supcon_loss_no_positive_anywhere_is_zero_with_graph():
    feats = F.normalize(torch.randn(4, 1, 3), dim=-1).requires_grad_(True)
    value = SupConLoss()(feats, torch.arange(4))
    assert value.item() == 0.0
    assert value.dtype == torch.float32
    value.backward()
    assert feats.grad is not None
    assert torch.equal(feats.grad, torch.zeros_like(feats))
    # A single sample with a single view: no contrast and no positive.
    one = torch.randn(1, 1, 3, requires_grad=True)
    v1 = SupConLoss()(one)
    v1.backward()
    assert v1.item() == 0.0 and torch.equal(one.grad, torch.zeros_like(one))


def test_baselines_of_equal_inputs_give_zero():
    s, _, y = _pair(b=7, d=5, seed=21, dtype=torch.float64)
    for name, kwargs in [("dkd", {}), ("dkd", {"standardize": True}), ("sp", {}), ("rkd", {}),
                         ("hinton_kl", {"standardize": True})]:
        loss = build_loss(name, **kwargs)
        assert loss(s, s.clone(), y).item() == pytest.approx(0.0, abs=1e-12), (name, kwargs)
        assert loss(s, s.flip(0) * 2.0 + 1.0, y).item() > 1e-3, (name, kwargs)
    # DIST: rho = |a'|^2 / (|a'|^2 + 1e-8) is 1 only up to the eps of the norm product.
    assert build_loss("dist")(s, s.clone()).item() == pytest.approx(0.0, abs=1e-5)


def test_dkd_decomposes_classic_kd():
    # DKD paper, Eq. 5: KL(p_t || p_s) = TCKD + (1 - p_t[target]) * NCKD, per sample; with
    # one sample, hinton_kl equals dkd(alpha=1, beta=1 - p_t[target]) at the same T.
    g = torch.Generator().manual_seed(22)
    for trial in range(4):
        s = torch.randn(1, 6, generator=g, dtype=torch.float64) * 3
        t = torch.randn(1, 6, generator=g, dtype=torch.float64) * 3
        y = torch.tensor([trial])
        temp = 2.0
        p_t = torch.softmax(t / temp, dim=1)[0, trial].item()
        dkd = build_loss("dkd", alpha=1.0, beta=1.0 - p_t, temperature=temp)(s, t, y)
        kd = build_loss("hinton_kl", temperature=temp)(s, t)
        assert dkd.item() == pytest.approx(kd.item(), rel=1e-10)


def test_dist_of_a_single_sample_is_its_intra_class_term():
    # B = 1: each class column has one entry, its centred vector is 0 and rho = 0.
    s, _, _ = _pair(b=1, d=5, seed=23, dtype=torch.float64)
    value = build_loss("dist", beta=1.0, gamma=3.0, temperature=2.0)(s, s.clone())
    assert value.item() == pytest.approx(4.0 * 3.0, rel=1e-6)


def test_logit_standardization_is_invariant_to_per_sample_affine_maps():
    s, t, y = _pair(b=6, d=7, seed=24, dtype=torch.float64)
    scale = torch.rand(6, 1, dtype=torch.float64) * 5 + 0.5
    shift = torch.randn(6, 1, dtype=torch.float64) * 10
    for name in ("hinton_kl", "dkd"):
        loss = build_loss(name, standardize=True)
        base = loss(s, t, y).item()
        assert loss(s * scale + shift, t, y).item() == pytest.approx(base, rel=1e-6)
        assert loss(s, t / scale - shift, y).item() == pytest.approx(base, rel=1e-6)
        # Without standardization the scale matters: the test can tell the difference.
        plain = build_loss(name)
        assert plain(s * scale, t, y).item() != pytest.approx(plain(s, t, y).item(), rel=1e-3)


@pytest.mark.parametrize("name", ["sp", "rkd"])
def test_relational_losses_ignore_rotation_and_scale_of_either_side(name):
    s, t, _ = _pair(b=6, d=5, seed=25, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(5, 5, dtype=torch.float64))
    loss = build_loss(name)
    base = loss(s, t).item()
    assert loss(s @ q, t).item() == pytest.approx(base, rel=1e-9)
    assert loss(s * 7.5, t * 0.01).item() == pytest.approx(base, rel=1e-9)
    # A per-sample (row) scale changes the sample relations.
    rows = torch.rand(6, 1, dtype=torch.float64) * 5 + 0.2
    assert loss(s * rows, t).item() != pytest.approx(base, rel=1e-3)
    if name == "rkd":  # distances and angles are also translation invariant
        assert loss(s + 3.0, t - 1.0).item() == pytest.approx(base, rel=1e-9)


@pytest.mark.parametrize("name", ["sp", "rkd", "crd"])
def test_feature_maps_are_flattened_per_sample(name):
    g = torch.Generator().manual_seed(26)
    s = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    t = torch.randn(4, 5, generator=g, dtype=torch.float64)
    loss = ready(name)
    assert loss(s, t).item() == pytest.approx(loss(s.flatten(1), t).item(), rel=1e-12)


def test_supcon_kd_instance_positives_ignore_labels():
    s, t, y = _pair(b=8, d=5, seed=27)
    inst = build_loss("supcon_kd", positives="instance")
    assert inst(s, t, y).item() == pytest.approx(build_loss("supcon_kd")(s, t, None).item())
    one_class = torch.zeros(8, dtype=torch.long)
    assert inst(s, t, y).item() == pytest.approx(inst(s, t, one_class).item())
    # The label positives are a different loss on a batch with repeated labels.
    assert build_loss("supcon_kd")(s, t, y).item() != pytest.approx(inst(s, t, y).item())


# --------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_gradcheck(name, kwargs):
    s, t, y = _pair(b=4, d=5, seed=5, dtype=torch.float64)
    s.requires_grad_(True)
    loss = ready(name, **kwargs)
    assert torch.autograd.gradcheck(lambda x: loss(x, t, y), (s,), eps=1e-6, atol=1e-5)
    if name in ("supcon_kd", "dist", "sp", "rkd"):
        assert torch.autograd.gradcheck(lambda x: loss(x, t, None), (s,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("with_labels", [True, False])
def test_gradcheck_supcon_loss(with_labels):
    g = torch.Generator().manual_seed(6)
    feats = torch.randn(4, 2, 5, generator=g, dtype=torch.float64).requires_grad_(True)
    labels = torch.tensor([0, 1, 0, 2]) if with_labels else None
    loss = SupConLoss(temperature=0.5)
    # The loss expects normalized features; normalize inside so gradcheck probes the sphere.
    assert torch.autograd.gradcheck(
        lambda x: loss(F.normalize(x, dim=-1), labels), (feats,), eps=1e-6, atol=1e-5
    )


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "autocast"])
def test_no_gradient_reaches_the_teacher(name, kwargs, autocast):
    s, t, y = _pair(b=5, d=4, seed=7)
    s.requires_grad_(True)
    t.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        value = ready(name, **kwargs)(s, t, y)
    assert value.shape == () and value.dtype == torch.float32  # a float32 scalar
    value.backward()
    assert t.grad is None
    assert s.grad is not None and torch.isfinite(s.grad).all()
    assert s.grad.abs().sum() > 0


# ------------------------------------------------------------------------------ invariances


@pytest.mark.parametrize("name", ["cosine", "norm_mse"])
def test_scale_invariance(name):
    s, t, _ = _pair(b=6, d=5, seed=8, dtype=torch.float64)
    loss = build_loss(name)
    base = loss(s, t).item()
    row_scale = torch.rand(6, 1, dtype=torch.float64) * 10 + 0.1
    assert loss(3.7 * s, t).item() == pytest.approx(base, rel=1e-10)
    assert loss(s, 0.02 * t).item() == pytest.approx(base, rel=1e-10)
    assert loss(s * row_scale, t / row_scale).item() == pytest.approx(base, rel=1e-10)
    # Not invariant to a negative scale: the test can tell the difference.
    assert loss(-s, t).item() != pytest.approx(base, rel=1e-3)


@pytest.mark.parametrize("mode", ["sample", "channel"])
def test_gram_normalize_is_invariant_to_row_scaling(mode):
    s, t, _ = _pair(b=6, d=6, seed=9, dtype=torch.float64)
    scale_s = torch.rand(6, 1, dtype=torch.float64) * 5 + 0.2
    scale_t = torch.rand(6, 1, dtype=torch.float64) * 5 + 0.2
    normed = build_loss("gram", normalize=True, mode=mode)
    assert normed(s * scale_s, t * scale_t).item() == pytest.approx(normed(s, t).item(), rel=1e-10)
    plain = build_loss("gram", mode=mode)
    assert plain(s * scale_s, t * scale_t).item() != pytest.approx(plain(s, t).item(), rel=1e-3)


def test_gram_sample_mode_is_invariant_to_feature_rotation():
    # Z Z^T is unchanged by an orthogonal map of the feature space: this is what lets the
    # sample Gram compare a teacher and a student of different widths.
    s, t, _ = _pair(b=5, d=4, seed=10, dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    loss = build_loss("gram")
    assert loss(s @ q, t).item() == pytest.approx(loss(s, t).item(), rel=1e-10)


def test_supcon_kd_is_invariant_to_permuting_the_batch():
    s, t, y = _pair(b=8, d=5, seed=11)
    perm = torch.randperm(8)
    loss = build_loss("supcon_kd")
    assert loss(s[perm], t[perm], y[perm]).item() == pytest.approx(loss(s, t, y).item(), rel=1e-5)


# --------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_bf16_under_autocast_computes_in_float32(name, kwargs):
    s, t, y = _pair(b=16, d=12, seed=12, scale=2.0)
    loss = ready(name, **kwargs)
    ref32 = loss(s, t, y)
    sb, tb = s.bfloat16(), t.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(sb, tb, y)
        got_fp32_inputs = loss(s, t, y)
    assert got.dtype == torch.float32
    # Same bf16 values upcast outside autocast: only float32 rounding separates them, which
    # fails if any matmul inside ran in bf16.
    assert got.item() == pytest.approx(loss(sb.float(), tb.float(), y).item(), rel=1e-5)
    # Float32 inputs under autocast are not downcast either.
    assert got_fp32_inputs.dtype == torch.float32
    assert got_fp32_inputs.item() == pytest.approx(ref32.item(), rel=1e-5)
    # And the bf16 result is close to the float32 one (bf16 input rounding only).
    assert got.item() == pytest.approx(ref32.item(), rel=5e-2, abs=1e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_supcon_loss_low_precision_inputs(dtype):
    g = torch.Generator().manual_seed(13)
    feats = F.normalize(torch.randn(16, 2, 8, generator=g), dim=-1)
    labels = torch.randint(0, 4, (16,), generator=g)
    low = feats.to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        got = SupConLoss()(low, labels)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(SupConLoss()(low.float(), labels).item(), rel=1e-5)
    assert got.item() == pytest.approx(SupConLoss()(feats, labels).item(), rel=5e-2)


def test_float16_inputs_without_autocast_are_upcast():
    s, t, y = _pair(b=8, d=6, seed=14)
    for name in PAIRWISE:
        value = ready(name)(s.half(), t.half(), y)
        assert value.dtype == torch.float32, name


# ---------------------------------------------------------------------------------- numerics


def _finite_value_and_grad(loss, s, t, y):
    s = s.clone().requires_grad_(True)
    value = loss(s, t, y)
    value.backward()
    return bool(torch.isfinite(value)) and bool(torch.isfinite(s.grad).all())


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_finite_for_zero_vectors(name, kwargs):
    loss = ready(name, **kwargs)
    s, t, y = _pair(b=5, d=4, seed=15)
    zeros = torch.zeros(5, 4)
    one_zero_row = s.clone()
    one_zero_row[2] = 0.0
    assert _finite_value_and_grad(loss, zeros, t, y)
    assert _finite_value_and_grad(loss, s, zeros, y)
    assert _finite_value_and_grad(loss, zeros, zeros, y)
    assert _finite_value_and_grad(loss, one_zero_row, t, y)


def test_zero_vector_values_follow_eps_safe_normalization():
    # A zero vector normalizes to zero: cosine 0 -> loss 1; ||0 - t_bar||^2 = 1.
    t = torch.randn(3, 4)
    z = torch.zeros(3, 4)
    assert build_loss("cosine")(z, t).item() == pytest.approx(1.0)
    assert build_loss("norm_mse")(z, t).item() == pytest.approx(1.0)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_finite_for_batch_of_one(name, kwargs):
    s, t, y = _pair(b=1, d=4, seed=16)
    loss = ready(name, **kwargs)
    assert _finite_value_and_grad(loss, s, t, y)
    if name in REQUIRES_LABELS:
        with pytest.raises(ValueError, match="labels"):
            loss(s, t, None)
    else:
        assert _finite_value_and_grad(loss, s, t, None)
    if name == "supcon_kd":
        # One student only: the softmax has one entry, log 1 = 0.
        assert loss(s, t, y).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("name", "kwargs"), CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_finite_for_logits_of_magnitude_1e4(name, kwargs, dtype):
    s, t, y = _pair(b=8, d=10, seed=17, scale=1e4, dtype=dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        assert _finite_value_and_grad(ready(name, **kwargs), s, t, y)


def test_hinton_kl_large_logits_matches_float64():
    s, t, _ = _pair(b=6, d=10, seed=18, scale=1e4)
    kd = build_loss("hinton_kl")
    expected = kd(s.double(), t.double()).item()
    assert kd(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_supcon_kd_large_unnormalized_teacher_matches_float64():
    s, t, y = _pair(b=8, d=10, seed=19, scale=1e4)
    kd = build_loss("supcon_kd")  # teacher not normalized: logits up to ~1e5 / tau
    expected = kd(s.double(), t.double(), y).item()
    assert math.isfinite(expected)
    assert kd(s, t, y).item() == pytest.approx(expected, rel=1e-4)


def test_supcon_loss_finite_for_large_and_zero_features():
    labels = torch.tensor([0, 1, 0, 1])
    for feats in (torch.randn(4, 2, 6) * 1e4, torch.zeros(4, 2, 6)):
        feats = feats.requires_grad_(True)
        value = SupConLoss()(feats, labels)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(feats.grad).all()

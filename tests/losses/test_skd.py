"""``skd``: the authors' scaling (Gram / K, τ²·KL) against torchdistill's reading, closed-form
identities of the two factors, gradcheck of both readings, and bad arguments."""

from __future__ import annotations

import feature_refs
import pytest
import torch
import torch.nn.functional as F

from supkd.losses import build_loss

TORCHDISTILL = {"gram_by_classes": False, "tau_squared": False}


def _logits(b=12, k=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, k, generator=g, dtype=torch.float64) * 2.0
    t = torch.randn(b, k, generator=g, dtype=torch.float64) * 3.0 + 0.5
    return s, t


def test_default_is_the_authors_scaling_not_torchdistills():
    s, t = _logits()
    default = build_loss("skd")
    assert default.gram_by_classes and default.tau_squared
    expected = feature_refs.skd(s.tolist(), t.tolist())
    assert default(s, t).item() == pytest.approx(expected, rel=1e-9)
    plain = feature_refs.skd(s.tolist(), t.tolist(), **TORCHDISTILL)
    assert build_loss("skd", **TORCHDISTILL)(s, t).item() == pytest.approx(plain, rel=1e-9)
    assert abs(expected - plain) > 1e-3


@pytest.mark.parametrize("k", [3, 10, 100])
def test_gram_over_k_is_tikhonov_times_k_squared(k):
    # √((D/K)ᵀ (cov(D)/K² + λI)⁻¹ (D/K)) = √(Dᵀ (cov(D) + λK²I)⁻¹ D): an exact identity.
    s, t = _logits(b=16, k=k, seed=k)
    by_k = build_loss("skd", ins_weight=0.0, tikhonov=0.1)
    lam = build_loss("skd", ins_weight=0.0, tikhonov=0.1 * k * k, gram_by_classes=False)
    assert by_k(s, t).item() == pytest.approx(lam(s, t).item(), rel=1e-10)


def test_tau_squared_scales_only_the_kl_term():
    s, t = _logits(seed=3)
    tau = 4.0
    kl = F.kl_div(F.log_softmax(s / tau, 1), F.softmax(t / tau, 1), reduction="batchmean")
    ins = build_loss("skd", dir_weight=0.0)
    assert ins(s, t).item() == pytest.approx(tau * tau * kl.item(), rel=1e-12)
    plain = build_loss("skd", dir_weight=0.0, tau_squared=False)
    assert plain(s, t).item() == pytest.approx(kl.item(), rel=1e-12)


def test_direction_is_small_where_lambda_dominates():
    # With Σ' ≈ λI the direction term is ≈ mean_i ‖D_i‖ / √λ (the Euclidean limit).
    s, t = _logits(b=8, k=50, seed=4)
    loss = build_loss("skd", ins_weight=0.0)
    zs, zt = F.normalize(s, dim=1), F.normalize(t, dim=1)
    d = (zs @ zs.T - zt @ zt.T) / s.shape[1]
    euclid = (d.norm(dim=1) / 0.1 ** 0.5).mean().item()
    assert loss(s, t).item() == pytest.approx(euclid, rel=2e-2)
    assert loss(s, t).item() < euclid


def test_zero_when_the_student_is_the_teacher_up_to_scale():
    _, t = _logits(seed=5)
    loss = build_loss("skd", ins_weight=0.0)
    assert loss(t * 3.0, t).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("kwargs", [{}, TORCHDISTILL], ids=["authors", "torchdistill"])
def test_gradcheck_both_readings(kwargs):
    s, t = _logits(b=6, k=5, seed=6)
    s.requires_grad_(True)
    loss = build_loss("skd", **kwargs)
    assert torch.autograd.gradcheck(lambda x: loss(x, t), (s,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("field", ["gram_by_classes", "tau_squared"])
@pytest.mark.parametrize("bad", [1, "yes", None])
def test_flags_must_be_booleans(field, bad):
    with pytest.raises(ValueError, match=f"'{field}': expected true or false"):
        build_loss("skd", **{field: bad})

"""Every loss against the slow loop references of loss_refs.py (float64 and float32)."""

from __future__ import annotations

import loss_refs as ref
import pytest
import torch
import torch.nn.functional as F

from supkd.losses import LOSSES, SupConLoss, build_loss

# (batch, student width, teacher width); equal widths where the loss needs them.
SHAPES_EQUAL = [(1, 3, 3), (5, 7, 7), (12, 10, 10), (16, 32, 32)]
SHAPES_ANY = [*SHAPES_EQUAL, (6, 4, 9), (9, 16, 5)]

CASES = [
    ("logit_mse", {}, ref.logit_mse, SHAPES_EQUAL),
    ("norm_mse", {}, ref.norm_mse, SHAPES_EQUAL),
    ("cosine", {}, ref.cosine, SHAPES_EQUAL),
    ("gram", {}, ref.gram, SHAPES_ANY),
    ("gram", {"normalize": True}, ref.gram, SHAPES_ANY),
    ("gram", {"mode": "channel"}, ref.gram, SHAPES_EQUAL),
    ("gram", {"mode": "channel", "normalize": True}, ref.gram, SHAPES_EQUAL),
    ("hinton_kl", {}, ref.hinton_kl, SHAPES_EQUAL),
    ("hinton_kl", {"temperature": 1.0}, ref.hinton_kl, SHAPES_EQUAL),
]


def test_every_registered_loss_has_a_reference_test():
    # A guard: adding a loss is its file plus its reference test (CASES, or its own test
    # below, as supcon_kd has).
    referenced = {name for name, *_ in CASES} | {"supcon_kd"}
    assert set(LOSSES) <= referenced, sorted(set(LOSSES) - referenced)


def _inputs(b: int, ds: int, dt: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, ds, generator=g, dtype=torch.float64) * 2.0
    t = torch.randn(b, dt, generator=g, dtype=torch.float64) * 3.0 + 0.5
    return s.to(dtype), t.to(dtype)


def _ids(cases):
    return [f"{n}-{kw or 'default'}" for n, kw, *_ in cases]


@pytest.mark.parametrize(("name", "kwargs", "reference", "shapes"), CASES, ids=_ids(CASES))
def test_pairwise_losses_match_reference(name, kwargs, reference, shapes):
    loss = build_loss(name, **kwargs)
    for seed, (b, ds, dt) in enumerate(shapes):
        s, t = _inputs(b, ds, dt, seed)
        expected = reference(s.tolist(), t.tolist(), **kwargs)
        got64 = loss(s, t)
        assert got64.dtype == torch.float64
        assert got64.item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
        got32 = loss(s.float(), t.float())
        assert got32.dtype == torch.float32
        assert got32.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


SUPCON_KD_OPTIONS = [
    {},
    {"temperature": 0.5},
    {"normalize_student": False, "normalize_teacher": True},
    {"normalize_student": True, "normalize_teacher": True, "temperature": 0.07},
    {"normalize_student": False, "normalize_teacher": False, "temperature": 2.0},
]


@pytest.mark.parametrize("kwargs", SUPCON_KD_OPTIONS, ids=[str(k) for k in SUPCON_KD_OPTIONS])
@pytest.mark.parametrize("with_labels", [True, False], ids=["labels", "no-labels"])
def test_supcon_kd_matches_reference(kwargs, with_labels):
    loss = build_loss("supcon_kd", **kwargs)
    for seed, (b, d) in enumerate([(1, 4), (6, 5), (13, 8), (16, 16)]):
        s, t = _inputs(b, d, d, seed)
        # Un-normalized sides are scaled down so that the plain exp() of the reference
        # (no max-shift, by design) stays far from overflow.
        s, t = s * 0.2, t * 0.2
        g = torch.Generator().manual_seed(100 + seed)
        # 3 classes: most anchors have several positives, some classes may occur once.
        labels = torch.randint(0, 3, (b,), generator=g) if with_labels else None
        expected = ref.supcon_kd(
            s.tolist(), t.tolist(), None if labels is None else labels.tolist(), **kwargs
        )
        assert loss(s, t, labels).item() == pytest.approx(expected, rel=1e-9)
        got32 = loss(s.float(), t.float(), labels)
        assert got32.item() == pytest.approx(expected, rel=1e-5)


def test_supcon_kd_label_unique_class_uses_the_same_image_only():
    s, t = _inputs(5, 6, 6, 3)
    labels = torch.tensor([0, 1, 1, 2, 1])  # classes 0 and 2 occur once
    expected = ref.supcon_kd(s.tolist(), t.tolist(), labels.tolist())
    assert build_loss("supcon_kd")(s, t, labels).item() == pytest.approx(expected, rel=1e-9)
    # With all-distinct labels the label and no-label versions coincide.
    distinct = torch.arange(5)
    kd = build_loss("supcon_kd")
    assert kd(s, t, distinct).item() == pytest.approx(kd(s, t, None).item(), rel=1e-12)


@pytest.mark.parametrize(
    "kwargs", [{}, {"temperature": 0.5}, {"temperature": 0.1, "base_temperature": 0.07}]
)
@pytest.mark.parametrize("with_labels", [True, False], ids=["labels", "simclr"])
def test_supcon_loss_matches_reference(kwargs, with_labels):
    loss = SupConLoss(**kwargs)
    for seed, (b, v, d) in enumerate([(2, 2, 4), (7, 2, 8), (5, 3, 6), (10, 1, 5)]):
        g = torch.Generator().manual_seed(seed)
        feats = F.normalize(torch.randn(b, v, d, generator=g, dtype=torch.float64), dim=-1)
        labels = torch.randint(0, 3, (b,), generator=g) if with_labels else None
        expected = ref.supcon(feats.tolist(), None if labels is None else labels.tolist(), **kwargs)
        got = loss(feats, labels)
        if expected is None:  # single view and no repeated label: nothing to average
            assert got.item() == 0.0
            continue
        assert got.item() == pytest.approx(expected, rel=1e-9)
        assert loss(feats.float(), labels).item() == pytest.approx(expected, rel=1e-5)


def test_supcon_loss_leaves_anchors_without_positive_out():
    # Single view: the anchor of a class that occurs once has no positive at all.
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(6, 1, 5, generator=g, dtype=torch.float64), dim=-1)
    labels = torch.tensor([0, 0, 1, 2, 2, 3])
    expected = ref.supcon(feats.tolist(), labels.tolist())
    got = SupConLoss()(feats, labels)
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(expected, rel=1e-9)

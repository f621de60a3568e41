"""Every loss against the slow loop references of loss_refs.py (float64 and float32)."""

from __future__ import annotations

import feature_refs
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
    ("hinton_kl", {"standardize": True}, ref.hinton_kl, SHAPES_EQUAL),
    ("hinton_kl", {"standardize": True, "temperature": 2.0}, ref.hinton_kl, SHAPES_EQUAL),
    ("dist", {}, ref.dist, SHAPES_EQUAL),
    ("dist", {"beta": 2.0, "gamma": 0.5, "temperature": 4.0}, ref.dist, SHAPES_EQUAL),
    ("sp", {}, ref.sp, SHAPES_ANY),
    ("rkd", {}, ref.rkd, SHAPES_ANY),
    ("rkd", {"distance_weight": 1.0, "angle_weight": 2.0}, ref.rkd, SHAPES_ANY),
    ("pkt", {}, feature_refs.pkt, SHAPES_ANY),
    ("skd", {}, feature_refs.skd, SHAPES_EQUAL),
    ("skd", {"temperature": 2.0, "tikhonov": 0.5, "ins_weight": 0.5, "dir_weight": 2.0},
     feature_refs.skd, SHAPES_EQUAL),
    ("skd", {"gram_by_classes": False, "tau_squared": False}, feature_refs.skd, SHAPES_EQUAL),
    ("skd", {"gram_by_classes": False, "tikhonov": 0.5}, feature_refs.skd, SHAPES_EQUAL),
]


def test_every_registered_loss_has_a_reference_test():
    # A guard: adding a loss is its file plus its reference test (CASES, or its own test
    # below, as supcon_kd, dkd and crd have).
    # The multi-stage feature losses are checked in test_feature_losses.py.
    staged = {name for name in LOSSES if LOSSES[name].multi_stage}
    referenced = {name for name, *_ in CASES} | {"supcon_kd", "dkd", "crd", "cc"} | staged
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
        # Standardized logits are O(1) on both sides: their KL (~0.04 here) is a sum of
        # O(1) terms that nearly cancel, so float32 rounding costs more relative digits.
        rel32 = 1e-4 if kwargs.get("standardize") else 1e-5
        assert got32.item() == pytest.approx(expected, rel=rel32, abs=1e-6)


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


# ------------------------------------------------------------------------------ KD baselines

DKD_OPTIONS = [
    {},
    {"alpha": 0.5, "beta": 2.0, "temperature": 1.0},
    {"standardize": True},
    {"alpha": 1.0, "beta": 0.5, "temperature": 2.0, "standardize": True},
]


@pytest.mark.parametrize("kwargs", DKD_OPTIONS, ids=[str(k) for k in DKD_OPTIONS])
def test_dkd_matches_reference(kwargs):
    loss = build_loss("dkd", **kwargs)
    for seed, (b, c) in enumerate([(1, 2), (2, 3), (7, 10), (16, 5)]):
        s, t = _inputs(b, c, c, seed)
        labels = torch.randint(0, c, (b,), generator=torch.Generator().manual_seed(seed))
        expected = ref.dkd(s.tolist(), t.tolist(), labels.tolist(), **kwargs)
        assert loss(s, t, labels).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)
        got32 = loss(s.float(), t.float(), labels)
        assert got32.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_dkd_one_class_in_the_batch_and_huge_logits():
    s, t = _inputs(6, 4, 4, 40)
    same = torch.full((6,), 2)
    expected = ref.dkd(s.tolist(), t.tolist(), same.tolist())
    assert build_loss("dkd")(s, t, same).item() == pytest.approx(expected, rel=1e-9)
    # Logits of magnitude 1e4: the teacher's target probability rounds to 1, 1 - p to 0;
    # float32 still matches float64 (log-sum-exps, the target column dropped exactly).
    big_s, big_t = s * 3e3, t * 3e3
    kd = build_loss("dkd")
    want = kd(big_s, big_t, same).item()
    assert torch.isfinite(torch.tensor(want))
    assert kd(big_s.float(), big_t.float(), same).item() == pytest.approx(want, rel=1e-4)


def test_dkd_refuses_missing_or_out_of_range_labels():
    s, t = _inputs(3, 4, 4, 41)
    kd = build_loss("dkd")
    with pytest.raises(ValueError, match="labels"):
        kd(s, t)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        kd(s, t, torch.tensor([0, 4, 1]))
    with pytest.raises(ValueError, match="2 classes"):
        kd(s[:, :1], t[:, :1], torch.zeros(3, dtype=torch.long))


def test_sp_differs_from_gram_with_normalized_features():
    # gram(normalize=True) normalizes feature rows before the product; SP the Gram's rows
    # after it. Same batch, different values (the docstrings say which is which).
    s, t = _inputs(8, 6, 9, 42)
    sp = build_loss("sp")(s, t).item()
    gram = build_loss("gram", normalize=True)(s, t).item()
    assert sp == pytest.approx(ref.sp(s.tolist(), t.tolist()), rel=1e-9)
    assert abs(sp - gram) > 1e-3 * max(sp, gram)


def test_rkd_duplicate_and_constant_features():
    # Two identical students: one zero distance off the diagonal (the mean is over i != j);
    # all-equal features: every potential is 0 (no division of 0 by 0).
    s, t = _inputs(5, 4, 6, 43)
    s[3] = s[1]
    assert build_loss("rkd")(s, t).item() == pytest.approx(ref.rkd(s.tolist(), t.tolist()),
                                                            rel=1e-9)
    flat = torch.ones(5, 4, dtype=torch.float64)
    assert build_loss("rkd")(flat, t).item() == pytest.approx(ref.rkd(flat.tolist(), t.tolist()),
                                                               rel=1e-9)


# ---------------------------------------------------------------------------------------- CRD


def _crd_expected(loss, s, t, ids, z_s=None, z_t=None):
    """The reference CRD value for the loss's current weights and banks, and the Z used."""
    tau = loss.temperature
    v_s = ref.crd_embed(s.tolist(), loss.embed_s.weight.tolist(), loss.embed_s.bias.tolist())
    v_t = ref.crd_embed(t.tolist(), loss.embed_t.weight.tolist(), loss.embed_t.bias.tolist())
    m_s, m_t = loss.memory_s.double().tolist(), loss.memory_t.double().tolist()
    z_s = ref.crd_z(v_s, m_t, ids, tau) if z_s is None else z_s
    z_t = ref.crd_z(v_t, m_s, ids, tau) if z_t is None else z_t
    value = ref.crd_side(v_s, m_t, ids, z_s, tau) + ref.crd_side(v_t, m_s, ids, z_t, tau)
    return value, z_s, z_t, v_s, v_t


def test_crd_all_negatives_matches_reference_and_updates_the_bank():
    n, b = 10, 4
    loss = build_loss("crd", feat_dim=6, num_negatives=100, momentum=0.5)  # > N - 1: all
    loss.bind(5, 7, n, seed=3)
    s, t = _inputs(b, 5, 7, 44)
    index = torch.tensor([7, 0, 3, 9])
    ids = [[int(i)] + [j for j in range(n) if j != int(i)] for i in index]
    expected, z_s, z_t, v_s, v_t = _crd_expected(loss, s, t, ids)
    before_s, before_t = loss.memory_s.clone(), loss.memory_t.clone()
    got = loss(s, t, index=index)
    assert got.item() == pytest.approx(expected, rel=1e-5)  # float32 embeddings and bank
    assert loss.z_s == pytest.approx(z_s, rel=1e-5) and loss.z_t == pytest.approx(z_t, rel=1e-5)
    # Bank rows of the batch: unit(0.5 m + 0.5 v); every other row untouched.
    for bank, before, v in ((loss.memory_s, before_s, v_s), (loss.memory_t, before_t, v_t)):
        for row, i in enumerate(index.tolist()):
            want = F.normalize(0.5 * before[i].double() + 0.5 * torch.tensor(v[row]), dim=0)
            assert torch.allclose(bank[i].double(), want, atol=1e-6)
        others = [j for j in range(n) if j not in index.tolist()]
        assert torch.equal(bank[others], before[others])
    # Second step: the stored Z, the updated bank.
    s2, t2 = _inputs(b, 5, 7, 45)
    expected2, *_ = _crd_expected(loss, s2, t2, ids, loss.z_s, loss.z_t)
    assert loss(s2, t2, index=index).item() == pytest.approx(expected2, rel=1e-5)
    assert loss.steps == 2


def test_crd_sampled_negatives_are_other_samples_and_reproducible():
    n, b, k = 50, 6, 7
    loss = build_loss("crd", feat_dim=4, num_negatives=k)
    loss.bind(3, 3, n, seed=11)
    index = torch.tensor([0, 49, 10, 11, 12, 25])
    neg = loss.draw_negatives(index)
    assert neg.shape == (b, k) and neg.dtype == torch.long
    assert ((neg >= 0) & (neg < n)).all() and (neg != index[:, None]).all()
    assert torch.equal(neg, loss.draw_negatives(index))  # a function of (seed, step)
    s, t = _inputs(b, 3, 3, 46)
    ids = torch.cat([index[:, None], neg], dim=1).tolist()
    loss.eval()  # a pure function: no bank update, Z from this batch
    expected, *_ = _crd_expected(loss, s, t, ids)
    assert loss(s, t, index=index).item() == pytest.approx(expected, rel=1e-5)
    assert loss.steps == 0 and loss.z_s is None
    loss.train()
    loss(s, t, index=index)
    assert loss.steps == 1
    assert not torch.equal(loss.draw_negatives(index), neg)  # the next step draws anew
    # Another seed draws other negatives.
    other = build_loss("crd", feat_dim=4, num_negatives=k)
    other.bind(3, 3, n, seed=12)
    assert not torch.equal(other.draw_negatives(index), neg)


def test_crd_trains_its_embeddings_not_the_teacher():
    loss = build_loss("crd", feat_dim=8, num_negatives=4)
    loss.bind(5, 6, 20, seed=0)
    s, t = _inputs(4, 5, 6, 47, dtype=torch.float32)
    s.requires_grad_(True)
    t.requires_grad_(True)
    loss(s, t, index=torch.arange(4)).backward()
    assert t.grad is None
    for p in (s, loss.embed_s.weight, loss.embed_t.weight, loss.embed_t.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_crd_state_round_trip_and_errors():
    loss = build_loss("crd", feat_dim=4, num_negatives=3)
    with pytest.raises(ValueError, match="bind"):
        loss(torch.randn(2, 3), torch.randn(2, 3), index=torch.arange(2))
    with pytest.raises(ValueError, match="number of training samples"):
        loss.bind(3, 3, None)
    loss.bind(3, 3, 12, seed=5)
    with pytest.raises(ValueError, match="index"):
        loss(torch.randn(2, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="out of range"):
        loss(torch.randn(2, 3), torch.randn(2, 3), index=torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="width"):
        loss(torch.randn(2, 4), torch.randn(2, 3), index=torch.arange(2))
    loss(torch.randn(2, 3), torch.randn(2, 3), index=torch.arange(2))
    state = loss.state_dict()
    copy = build_loss("crd", feat_dim=4, num_negatives=3)
    copy.bind(3, 3, 12, seed=99)
    copy.load_state_dict(state)
    assert torch.equal(copy.memory_s, loss.memory_s) and copy.z_t == loss.z_t
    assert copy.steps == loss.steps == 1 and copy.seed == loss.seed
    s, t, i = torch.randn(3, 3), torch.randn(3, 3), torch.tensor([1, 5, 8])
    assert torch.equal(copy.draw_negatives(i), loss.draw_negatives(i))
    assert copy(s, t, index=i).item() == loss(s, t, index=i).item()
    small = build_loss("crd", feat_dim=4)
    small.bind(3, 3, 11)
    with pytest.raises(ValueError, match="does not fit"):
        small.load_state_dict(state)


@pytest.mark.parametrize(("b", "ds", "dt"), SHAPES_ANY)
@pytest.mark.parametrize("kwargs", [{}, {"gamma": 1.0, "order": 3, "feat_dim": 6}])
def test_cc_matches_reference(b, ds, dt, kwargs):
    loss = build_loss("cc", **kwargs)
    loss.bind(ds, dt, None)
    loss = loss.double()
    s, t = _inputs(b, ds, dt, seed=b + ds)
    es = F.linear(s, loss.embed_s.weight, loss.embed_s.bias).tolist()
    et = F.linear(t, loss.embed_t.weight, loss.embed_t.bias).tolist()
    args = {k: v for k, v in kwargs.items() if k != "feat_dim"}
    expected = feature_refs.cc(es, et, **args)
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)

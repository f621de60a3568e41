"""The feature-distillation losses (issue 22) against their float64 loop references
(feature_refs.py), by gradcheck, and their shape rules and errors."""

from __future__ import annotations

import math
import re

import feature_refs as ref
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import truncnorm

from supkd.losses import LOSSES, StageKDLoss, build_loss
from supkd.losses.ofd import ofd_margin
from supkd.losses.stage_ops import pool_to_common

STAGE_LOSSES = sorted(n for n, c in LOSSES.items() if c.multi_stage)


def _maps(shapes, seed, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64) * scale + shift for s in shapes]


# (student shapes, teacher shapes): equal sizes, other channels, other spatial sizes.
PAIRS = [
    ([(3, 4, 4, 4), (3, 6, 2, 2)], [(3, 4, 4, 4), (3, 6, 2, 2)]),
    ([(2, 3, 4, 4), (2, 5, 2, 2)], [(2, 6, 4, 4), (2, 2, 2, 2)]),
    ([(2, 3, 6, 6), (2, 4, 3, 3)], [(2, 5, 3, 3), (2, 3, 3, 3)]),
]


def _bound(name, s, t, **kwargs):
    loss = build_loss(name, **kwargs)
    bn = None
    if loss.needs_teacher_bn:
        bn = []
        for k, x in enumerate(t):
            layer = torch.nn.BatchNorm2d(x.shape[1])
            g = torch.Generator().manual_seed(100 + k)
            with torch.no_grad():
                layer.weight.copy_(torch.rand(x.shape[1], generator=g) + 0.5)
                layer.bias.copy_(torch.randn(x.shape[1], generator=g))
            bn.append(layer)
    loss.bind_stages([tuple(x.shape[1:]) for x in s], [tuple(x.shape[1:]) for x in t],
                     num_samples=None, seed=0, teacher_bn=bn)
    return loss.double().eval()


def test_the_stage_losses_are_the_seven_feature_methods():
    expected = sorted(["fitnet", "at", "nst", "kdsvd", "vid", "ofd", "reviewkd"])
    assert expected == STAGE_LOSSES
    for name in STAGE_LOSSES:
        cls = LOSSES[name]
        assert issubclass(cls, StageKDLoss) and not cls.kd_table_row
        assert cls.label and cls.paper_eq and cls.reference and cls.summary


# ------------------------------------------------------------------- against the references


@pytest.mark.parametrize(("s_shapes", "t_shapes"), PAIRS)
@pytest.mark.parametrize("p", [2.0, 1.0])
def test_at_matches_reference(s_shapes, t_shapes, p):
    s, t = _maps(s_shapes, 1), _maps(t_shapes, 2, shift=0.3)
    got = build_loss("at", p=p)(s, t).item()
    assert got == pytest.approx(ref.at([x.tolist() for x in s], [x.tolist() for x in t], p),
                                rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(("s_shapes", "t_shapes"), PAIRS)
def test_nst_matches_reference(s_shapes, t_shapes):
    s, t = _maps(s_shapes, 3), _maps(t_shapes, 4, shift=0.3)
    got = build_loss("nst")(s, t).item()
    assert got == pytest.approx(ref.nst([x.tolist() for x in s], [x.tolist() for x in t]),
                                rel=1e-6, abs=1e-12)


FITNET_PAIRS = [
    ([(3, 4, 4, 4)], [(3, 6, 4, 4)]),   # valid 1x1 conv
    ([(2, 3, 6, 6)], [(2, 5, 4, 4)]),   # valid 3x3
    ([(2, 3, 8, 8)], [(2, 5, 4, 4)]),   # stride 2
    ([(2, 3, 2, 2)], [(2, 5, 4, 4)]),   # transposed, stride 2
]


@pytest.mark.parametrize(("s_shapes", "t_shapes"), FITNET_PAIRS)
def test_fitnet_matches_reference(s_shapes, t_shapes):
    s, t = _maps(s_shapes, 5), _maps(t_shapes, 6).copy()
    t = [x.relu() for x in t]
    loss = _bound("fitnet", s, t)
    mapped = [r(x).tolist() for r, x in zip(loss.regressors, s, strict=True)]
    assert loss(s, t).item() == pytest.approx(ref.fitnet(mapped, [x.tolist() for x in t]),
                                              rel=1e-6, abs=1e-12)


@pytest.mark.parametrize(("s_shapes", "t_shapes"), PAIRS)
def test_vid_matches_reference(s_shapes, t_shapes):
    s, t = _maps(s_shapes, 7), _maps(t_shapes, 8)
    loss = _bound("vid", s, t)
    with torch.no_grad():
        for k, a in enumerate(loss.log_scales):  # away from their common start
            a.add_(torch.linspace(-1.0, 1.0, a.numel(), dtype=a.dtype) * (k + 1))
    mus, ts = [], []
    for k, (x, y) in enumerate(zip(s, t, strict=True)):
        x, y = pool_to_common(x, y, loss, k)
        mus.append(loss.regressors[k](x).tolist())
        ts.append(y.tolist())
    alphas = [a.tolist() for a in loss.log_scales]
    assert loss(s, t).item() == pytest.approx(ref.vid(mus, ts, alphas), rel=1e-6)


def test_vid_variances_start_at_init_var():
    s, t = _maps([(2, 3, 4, 4)], 9), _maps([(2, 5, 4, 4)], 10)
    loss = _bound("vid", s, t, init_var=5.0)
    var = F.softplus(loss.log_scales[0]) + loss.eps
    assert torch.allclose(var, torch.full_like(var, 5.0), rtol=1e-6)


OFD_PAIRS = [
    ([(3, 4, 4, 4), (3, 6, 2, 2)], [(3, 4, 4, 4), (3, 6, 2, 2)]),
    ([(2, 3, 4, 4), (2, 5, 2, 2)], [(2, 6, 8, 8), (2, 2, 2, 2)]),  # teacher pooled down
]


@pytest.mark.parametrize(("s_shapes", "t_shapes"), OFD_PAIRS)
def test_ofd_matches_reference(s_shapes, t_shapes):
    s, t = _maps(s_shapes, 11), _maps(t_shapes, 12, scale=1.5, shift=-0.2)
    loss = _bound("ofd", s, t)
    mapped = [c(x).tolist() for c, x in zip(loss.connectors, s, strict=True)]
    margins = [getattr(loss, f"margin{k}").flatten().tolist() for k in range(len(s))]
    assert loss(s, t).item() == pytest.approx(
        ref.ofd(mapped, [x.tolist() for x in t], margins), rel=1e-6)


@pytest.mark.parametrize(("std", "mean"), [(1.0, 0.0), (0.5, 1.0), (2.0, -1.0), (1.0, 2.5),
                                           (0.3, 1.5)])
def test_ofd_margin_is_the_mean_of_the_negative_part(std, mean):
    expected = ref.ofd_margin(std, mean)
    assert ofd_margin(std, mean) == pytest.approx(expected, rel=1e-6)
    if expected != -3.0 * abs(std):  # and scipy's truncated normal agrees
        mean_neg = truncnorm.mean(-math.inf, (0.0 - mean) / std, loc=mean, scale=std)
        assert ofd_margin(std, mean) == pytest.approx(mean_neg, rel=1e-6)
    assert ofd_margin(1.0, 4.0) == -3.0  # P(x < 0) < 0.001: the authors' −3σ


def test_ofd_partial_l2_skips_student_below_a_negative_target():
    s, t = _maps([(2, 3, 2, 2)], 13), _maps([(2, 3, 2, 2)], 14)
    loss = _bound("ofd", s, t)
    with torch.no_grad():
        loss.connectors[0][0].weight.copy_(torch.eye(3, dtype=torch.float64)[:, :, None, None])
    conn = loss.connectors[0]
    # teacher very negative (at its margin) and student far below it: no loss at all.
    m = loss.margin0
    low_t = [m.expand(2, 3, 2, 2) - 5.0]
    low_s = [-(conn[1].running_var + 1e-5).sqrt().view(1, 3, 1, 1) * 100.0 * torch.ones(2, 3, 2, 2,
             dtype=torch.float64)]
    assert loss(low_s, low_t).item() == 0.0


@pytest.mark.parametrize(("s_shapes", "t_shapes"), [
    ([(2, 3, 4, 4), (2, 5, 2, 2), (2, 6)], [(2, 4, 4, 4), (2, 6, 2, 2), (2, 8)]),
    ([(2, 3, 8, 8), (2, 5, 4, 4), (2, 6)], [(2, 4, 4, 4), (2, 6, 2, 2), (2, 8)]),
])
def test_reviewkd_hcl_matches_reference(s_shapes, t_shapes):
    s, t = _maps(s_shapes, 15), _maps(t_shapes, 16)
    loss = _bound("reviewkd", s, t)
    outs, fused = [None] * len(s), None
    for k in reversed(range(len(s))):
        x = s[k] if s[k].dim() == 4 else s[k][:, :, None, None]
        outs[k], fused = loss.abfs[k](x, fused, loss.out_sizes[k])
    ts = [x if x.dim() == 4 else x[:, :, None, None] for x in t]
    expected = ref.hcl([o.tolist() for o in outs], [x.tolist() for x in ts])
    assert loss(s, t).item() == pytest.approx(expected, rel=1e-6)
    assert [tuple(o.shape) for o in outs] == [tuple(x.shape) for x in ts]


def test_reviewkd_abf_fuses_with_attention():
    g = torch.Generator().manual_seed(17)
    loss = build_loss("reviewkd")
    loss.bind_stages([(3, 4, 4), (5,)], [(4, 4, 4), (7,)])
    loss = loss.double().eval()
    abf = loss.abfs[0]
    x = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    y = torch.randn(2, 5, 1, 1, generator=g, dtype=torch.float64)
    out, fused = abf(x, y, (4, 4))
    a = abf.conv1(x)
    up = y.expand(2, 5, 4, 4)  # nearest from 1x1
    w = torch.sigmoid(abf.att[0](torch.cat([a, up], dim=1)))
    manual = a * w[:, :1] + up * w[:, 1:]
    assert torch.allclose(fused, manual, rtol=1e-12)
    assert torch.allclose(out, abf.conv2(manual), rtol=1e-12)
    assert loss.abfs[1].att is None  # the deepest stage has nothing to fuse with
    assert abf.conv1[0].out_channels == 5  # mid = min(512, embedding width)


KDSVD_PAIRS = [
    ([(3, 4, 3, 5), (3, 6, 2, 4)], [(3, 2, 4, 5), (3, 3, 3, 4)]),
    ([(2, 3, 4, 4), (2, 5, 2, 2), (2, 4, 3, 2)], [(2, 6, 4, 4), (2, 2, 3, 2), (2, 3, 2, 2)]),
]


@pytest.mark.parametrize(("s_shapes", "t_shapes"), KDSVD_PAIRS)
@pytest.mark.parametrize("k", [1, 2])
def test_kdsvd_matches_reference(s_shapes, t_shapes, k):
    s, t = _maps(s_shapes, 18), _maps(t_shapes, 19)
    got = build_loss("kdsvd", k=k)(s, t).item()
    expected = ref.kdsvd([x.tolist() for x in s], [x.tolist() for x in t], k)
    assert got == pytest.approx(expected, rel=1e-6, abs=1e-12)
    assert expected > 1e-6  # not a trivial zero


# ---------------------------------------------------------------------------- gradients


GRAD_CASES = [
    ("at", {}, PAIRS[1]),
    ("nst", {}, PAIRS[2]),
    ("fitnet", {}, FITNET_PAIRS[2]),
    ("vid", {}, PAIRS[2]),
    ("ofd", {}, OFD_PAIRS[1]),
    ("reviewkd", {}, ([(2, 3, 4, 4), (2, 4)], [(2, 4, 2, 2), (2, 5)])),
    ("kdsvd", {}, KDSVD_PAIRS[0]),
]


@pytest.mark.parametrize(("name", "kwargs", "pair"), GRAD_CASES, ids=[c[0] for c in GRAD_CASES])
def test_gradcheck(name, kwargs, pair):
    s, t = _maps(pair[0], 20), _maps(pair[1], 21, shift=0.1)
    loss = _bound(name, s, t, **kwargs)
    s = [x.requires_grad_(True) for x in s]
    assert torch.autograd.gradcheck(lambda *xs: loss(list(xs), t), tuple(s), eps=1e-6,
                                    atol=1e-5)
    params = [p for p in loss.parameters() if p.requires_grad]
    if params:  # the trained parts get a gradient too
        value = loss(s, t)
        grads = torch.autograd.grad(value, params)
        assert sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.parametrize("name", STAGE_LOSSES)
def test_no_gradient_reaches_the_teacher_and_values_are_float32(name):
    s_shapes, t_shapes = ([(2, 3, 4, 4), (2, 5, 2, 2)], [(2, 4, 4, 4), (2, 6, 2, 2)])
    s = [x.float().requires_grad_(True) for x in _maps(s_shapes, 22)]
    t = [x.float().requires_grad_(True) for x in _maps(t_shapes, 23)]
    loss = _bound(name, s, t).float().train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(s, t)
    assert value.dtype == torch.float32 and value.shape == ()
    value.backward()
    assert all(x.grad is None for x in t)
    assert all(x.grad is not None and torch.isfinite(x.grad).all() for x in s)
    assert sum(float(x.grad.abs().sum()) for x in s) > 0


# ------------------------------------------------------------------- stage selection, errors


def test_select_stages_defaults_and_overrides():
    names = ["stem", "layer1", "layer2", "layer3", "embedding", "logits"]
    assert build_loss("at").select_stages(names) == ["layer1", "layer2", "layer3"]
    assert build_loss("fitnet").select_stages(names) == ["layer2"]
    assert build_loss("reviewkd").select_stages(names) == ["layer1", "layer2", "layer3",
                                                           "embedding"]
    assert build_loss("at", stages=[-1, "layer1"]).select_stages(names) == ["layer3", "layer1"]
    with pytest.raises(ValueError, match=r"no stage 'layer9'.*valid: stem, layer1"):
        build_loss("at", stages=["layer9"]).select_stages(names, "the student")
    with pytest.raises(ValueError, match="position 7 is out of range for the teacher"):
        build_loss("at", stages=[7]).select_stages(names, "the teacher")


def test_stages_per_side_pair_models_of_different_depths():
    deep = ["stem", "layer1", "layer2", "layer3", "layer4", "embedding", "logits"]
    shallow = ["stem", "layer1", "layer2", "layer3", "embedding", "logits"]
    loss = build_loss("at", stages={"student": [1, 2, 3], "teacher": ["layer2", -2, -1]})
    assert loss.select_stages(shallow, side="student") == ["layer1", "layer2", "layer3"]
    assert loss.select_stages(deep, side="teacher") == ["layer2", "layer3", "layer4"]
    with pytest.raises(ValueError, match="keys student and teacher"):
        build_loss("at", stages={"student": [1]})
    with pytest.raises(ValueError, match=r"argument 'stages\.teacher'"):
        build_loss("at", stages={"student": [1], "teacher": []})


@pytest.mark.parametrize("bad", ["layer1", [], [True], [1.5], 3])
def test_bad_stages_argument_is_named(bad):
    with pytest.raises(ValueError, match="argument 'stages'"):
        build_loss("at", stages=bad)


def test_single_tensors_and_unequal_lists_are_refused():
    s, t = _maps([(2, 3, 4, 4)], 24), _maps([(2, 3, 4, 4)], 25)
    loss = build_loss("at")
    with pytest.raises(ValueError, match="lists of per-stage tensors"):
        loss(s[0], t[0])
    with pytest.raises(ValueError, match="as many student as teacher stages"):
        loss(s, t + t)
    with pytest.raises(ValueError, match=r"student shape \(3, 3, 4, 4\), teacher shape "
                                         r"\(2, 3, 4, 4\)"):
        loss([torch.randn(3, 3, 4, 4)], t)
    with pytest.raises(ValueError, match="floating"):
        loss([s[0].long()], t)


@pytest.mark.parametrize(("name", "s_shape", "t_shape", "why"), [
    ("fitnet", (3, 2, 2), (5, 8, 8), "hint regressor"),
    ("fitnet", (3, 4, 4), (6,), "conv maps"),
    ("ofd", (3, 4, 4), (5, 2, 2), "teacher map is smaller"),
    ("vid", (3,), (5,), "conv maps"),
])
def test_unmatched_shapes_name_both(name, s_shape, t_shape, why):
    loss = build_loss(name)
    bn = [torch.nn.BatchNorm2d(t_shape[0])] if loss.needs_teacher_bn else None
    pattern = f"student shape {re.escape(str(s_shape))}.*teacher shape {re.escape(str(t_shape))}"
    with pytest.raises(ValueError, match=f"{pattern}.*{why}"):
        loss.bind_stages([s_shape], [t_shape], teacher_bn=bn)


def test_kdsvd_refuses_other_widths_and_one_stage():
    loss = build_loss("kdsvd")
    s, t = _maps([(2, 3, 4, 4), (2, 3, 2, 2)], 26), _maps([(2, 3, 4, 5), (2, 3, 2, 2)], 27)
    with pytest.raises(ValueError, match="width W"):
        loss(s, t)
    with pytest.raises(ValueError, match="at least two stages"):
        loss(s[:1], s[:1])


def test_unbound_losses_say_so():
    s = _maps([(2, 3, 4, 4)], 28)
    for name in ("fitnet", "vid", "ofd", "reviewkd"):
        with pytest.raises(ValueError, match="bind_stages"):
            build_loss(name)(s, s)


def test_pooling_rules_of_at():
    # A 4x4 student and a 2x2 teacher: the student is average-pooled to 2x2.
    s, t = _maps([(2, 3, 4, 4)], 29), _maps([(2, 5, 2, 2)], 30)
    loss = build_loss("at")
    assert loss(s, t).item() == pytest.approx(loss([F.avg_pool2d(s[0], 2)], t).item(),
                                              rel=1e-12)
    with pytest.raises(ValueError, match="crossed spatial sizes"):
        loss(_maps([(2, 3, 4, 2)], 31), _maps([(2, 3, 2, 4)], 32))
